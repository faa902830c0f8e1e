"""Where a small fit's wall time goes: a default ``MLPClassifier`` on ggplot2's ``diamonds``
(43,146 training rows, the time-to-accuracy benchmark's rows, 8 persisted chunks) on a 2-worker
``LocalCluster`` started as the benchmarks start it.

For each ``--epochs`` value k: ``--fits`` fresh ``fit(max_iter=k)`` calls after two warm-up
fits, each started once the scheduler holds nothing of the last one; prints the median fit
seconds, the per-epoch seconds of the last fit's history, and that fit's blocking
client-scheduler calls (each ``Client.sync``: what, where in ``pipeline``, ms), the calls
before training summed. ``--kw`` adds estimator parameters (JSON); ``--calls`` off leaves out
the call list. For an A/B of two checkouts, set ``PYTHONPATH`` to the one under test (the
first line names the package it imported). Usage::

    python benchmarks/profile_small_fit.py --epochs 1,4,8 --fits 9
    PYTHONPATH=<checkout> python benchmarks/profile_small_fit.py --epochs 6 --no-calls \
        --kw '{"early_stopping": true, "n_iter_no_change": 100}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

from bench_time_to_accuracy import _forget_fits
from common import local_cluster
from round_trips import CALLS, _patch
from tta_datasets import load


def main() -> None:
    import dask.array as da
    from dask.core import flatten
    from distributed import wait

    import pipeline
    from pipeline.estimators import MLPClassifier

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", default="1,4,8")
    ap.add_argument("--fits", type=int, default=9)
    ap.add_argument("--kw", default="{}", help="estimator parameters (JSON)")
    ap.add_argument("--no-calls", action="store_true", help="leave out the call list")
    args = ap.parse_args()
    kw = json.loads(args.kw)
    print(f"pipeline from {pipeline.__file__}; estimator parameters {kw}")
    _patch()
    warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter=k is the point
    with local_cluster(2) as client:
        ds = load("diamonds", 0, 0, 0)
        chunk = -(-ds.X.shape[0] // 8)
        Xd, yd = client.persist([da.from_array(ds.X, chunks=(chunk, ds.X.shape[1])),
                                 da.from_array(ds.y, chunks=(chunk,))])
        wait([Xd, yd])
        keep = {str(k) for k in flatten([Xd.__dask_keys__(), yd.__dask_keys__()])}

        def fit(k: int) -> MLPClassifier:
            return MLPClassifier(hidden_layer_sizes=(64, 64), random_state=0, max_iter=k,
                                 **kw).fit(Xd, yd, client=client)

        for k in (int(e) for e in args.epochs.split(",")):
            for _ in range(2):
                fit(k)
            seconds = []
            for _ in range(args.fits):
                _forget_fits(client, keep)
                CALLS.clear()
                t0 = time.perf_counter()
                m = fit(k)
                seconds.append(time.perf_counter() - t0)
            first = next((i for i, c in enumerate(CALLS) if c[1].startswith("train/")),
                         len(CALLS))
            print(f"max_iter={k}: fit median {statistics.median(seconds):.3f} s (min "
                  f"{min(seconds):.3f}, max {max(seconds):.3f}, {args.fits} fits); last fit's "
                  f"epochs {[round(h['seconds'], 3) for h in m.history_]} s; "
                  f"{len(CALLS)} blocking calls, {sum(c[2] for c in CALLS) * 1e3:.0f} ms, "
                  f"{first} before training ({sum(c[2] for c in CALLS[:first]) * 1e3:.0f} ms)")
            for fn, where, s in [] if args.no_calls else CALLS:
                print(f"    {s * 1e3:7.1f} ms  {fn:24s} {where}")


if __name__ == "__main__":
    main()
