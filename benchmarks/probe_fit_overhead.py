"""The fixed cost of a small tabular fit: the median seconds of ``max_iter=1`` default fits
(one epoch; the preprocessing pass, the blocks, the split, the members' task and the ensemble's
score) of quality-benchmark datasets (80% of the rows, seed 0), on a 2-worker ``LocalCluster``
(nanny-started workers, one thread each), after a warm-up fit. Run it from each of two
checkouts, alternating, to A/B a change to that path (the package is imported from the current
directory)::

    cd CHECKOUT && PYTHONPATH=. python /path/to/benchmarks/probe_fit_overhead.py \
        diamonds,hotel_rates,credit_data 11
"""

import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    import pipeline as pl
    print(pl.__file__)
    with LocalCluster(n_workers=2, threads_per_worker=1) as c, Client(c) as client:
        for name in sys.argv[1].split(","):
            X, y, task = _dataset(name)
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0)
            Est = pl.TabularClassifier if task == "classification" else pl.TabularRegressor
            Est(random_state=1, max_iter=1).fit(Xtr, ytr)
            ts = []
            for _rep in range(int(sys.argv[2])):
                t = time.perf_counter()
                Est(random_state=0, max_iter=1).fit(Xtr, ytr)
                ts.append(time.perf_counter() - t)
            print(name, "median fit (max_iter=1)", round(statistics.median(ts), 4), flush=True)
