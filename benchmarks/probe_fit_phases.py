"""Where the client's time goes in one small tabular fit: start and end (seconds from the
fit's start) of the preprocessing fit and transform, the blocks, the split, the join (or, for a
pandas frame built in the client, ``_blocks_here``), the members' training and the ensemble's
score, for two ``max_iter=1`` default fits of a quality
dataset (80% of its rows) on a 2-worker ``LocalCluster`` after a warm-up fit. Imports the
package from the current directory, so it can be run from two checkouts::

    cd CHECKOUT && PYTHONPATH=. python /path/to/benchmarks/probe_fit_phases.py diamonds
"""

import functools
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
T0 = [0.0]
def wrap(mod, name):
    f = getattr(mod, name)
    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        r = f(*a, **k)
        print(f"   {name:28s} {t - T0[0]:6.3f} -> {time.perf_counter() - T0[0]:6.3f}  ({time.perf_counter() - t:.3f})")
        return r
    setattr(mod, name, g)
if __name__ == "__main__":
    from bench_quality import _dataset
    from distributed import Client, LocalCluster
    from sklearn.model_selection import train_test_split

    import pipeline as pl
    import pipeline.tabular_base as tb
    import pipeline.tabular_prep as tp
    import pipeline.train.members as mem
    for n in ("to_blocks", "split_blocks", "join_blocks"):
        wrap(tb, n)
    if hasattr(tb._BaseTabular, "_blocks_here"):  # (a pandas frame built in the client)
        wrap(tb._BaseTabular, "_blocks_here")
    wrap(mem, "train_members")
    wrap(mem, "ensemble_score")
    wrap(tp.TabularPreprocessor, "fit")
    wrap(tp.TabularPreprocessor, "transform")
    name = sys.argv[1]
    with LocalCluster(n_workers=2, threads_per_worker=1) as c, Client(c) as client:
        X, y, task = _dataset(name)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0)
        Est = pl.TabularClassifier if task == "classification" else pl.TabularRegressor
        Est(random_state=1, max_iter=2).fit(Xtr, ytr)
        for _rep in range(2):
            T0[0] = time.perf_counter()
            m = Est(random_state=0, max_iter=1).fit(Xtr, ytr)
            print("fit", round(time.perf_counter() - T0[0], 3))
