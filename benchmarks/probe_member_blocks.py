"""Each independent member's block and epochs on its worker, in default tabular fits: the
block's layout there (owns its memory, address modulo 64, aligned), the member task's thread
CPU seconds per epoch and its minor page faults. The first member trains where the block was built; the second on a copy
that Dask sent to the other worker (issue 13, session 16: a copy left as a view into the
message frame, at an odd offset, ran its epochs up to 30% slower). 2-worker ``LocalCluster``
(nanny-started workers, one thread each), quality dataset, 80% of its rows, after a warm-up
fit::

    PYTHONPATH=. python benchmarks/probe_member_blocks.py diamonds [SEEDS]
"""

import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _record_member_tasks():
    """(on each worker) wrap ``fused_epochs`` to log its block's layout and its CPU time."""
    import pipeline.train.fused as fused

    if getattr(fused, "_member_log", None) is not None:
        return
    original, log = fused.fused_epochs, []

    def recorded(block, *args, **kwargs):
        import resource

        X = block.X
        t, f = time.thread_time(), resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        result = original(block, *args, **kwargs)
        log.append({"owndata": bool(X.flags.owndata), "mod64": X.ctypes.data % 64,
                    "aligned": bool(X.flags.aligned), "epochs": len(result.records),
                    "cpu_s": time.thread_time() - t,
                    "faults": resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - f})
        return result

    fused.fused_epochs, fused._member_log = recorded, log


def _drain():
    import pipeline.train.fused as fused

    out = list(fused._member_log)
    fused._member_log.clear()
    return out


if __name__ == "__main__":
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    import pipeline as pl

    warnings.simplefilter("ignore")
    name, seeds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        X, y, task = _dataset(name)
        Xtr, _, ytr, _ = train_test_split(X, y, test_size=0.2, random_state=0)
        Est = pl.TabularClassifier if task == "classification" else pl.TabularRegressor
        Est(random_state=1, max_iter=2).fit(Xtr, ytr)
        client.run(_record_member_tasks)
        print("seed  worker  owndata  mod64  aligned  epochs  cpu_s  ms_per_epoch  faults  fit_s")
        for seed in range(seeds):
            t = time.perf_counter()
            Est(random_state=seed).fit(Xtr, ytr)
            fit_s = time.perf_counter() - t
            for worker, logs in sorted(client.run(_drain).items()):
                for r in logs:
                    print(f"{seed:4d}  {worker[-5:]:>6}  {r['owndata']!s:>7}  {r['mod64']:5d}  "
                          f"{r['aligned']!s:>7}  {r['epochs']:6d}  {r['cpu_s']:5.2f}  "
                          f"{1e3 * r['cpu_s'] / r['epochs']:12.1f}  {r['faults']:6d}  "
                          f"{fit_s:5.2f}")
