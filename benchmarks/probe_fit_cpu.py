"""Who uses the CPU during one default tabular fit: wall seconds of the fit and the user/system
CPU seconds of the client process (scheduler and nannies included: a ``LocalCluster`` runs them
there) and of each worker process, on a 2-worker ``LocalCluster`` (nanny-started workers, one
thread each), after a warm-up fit. Quality dataset, 80% of its rows, seed 0 (issue 13, session
15)::

    PYTHONPATH=. python benchmarks/probe_fit_cpu.py hotel_rates
"""

import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    import psutil
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    import pipeline as pl

    warnings.simplefilter("ignore")
    name = sys.argv[1]
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster):
        X, y, task = _dataset(name)
        Xtr, _, ytr, _ = train_test_split(X, y, test_size=0.2, random_state=0)
        Est = pl.TabularClassifier if task == "classification" else pl.TabularRegressor
        Est(random_state=1, max_iter=2).fit(Xtr, ytr)
        me = psutil.Process()
        procs = {"client (scheduler, nannies)": me}
        procs.update({f"worker pid {p.pid}": p for p in me.children(recursive=True)
                      if "resource_tracker" not in " ".join(p.cmdline())})
        before = {k: p.cpu_times() for k, p in procs.items()}
        t0 = time.perf_counter()
        m = Est(random_state=0).fit(Xtr, ytr)
        wall = time.perf_counter() - t0
        after = {k: p.cpu_times() for k, p in procs.items()}
        print(f"{name}: fit {wall:.3f} s, members' epochs {m.member_n_iter_}")
        for k in procs:
            b, a = before[k], after[k]
            print(f"  {k:32s} user {a.user - b.user:6.3f} s  system {a.system - b.system:6.3f} s")
