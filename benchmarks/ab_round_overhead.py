"""A/B of the ``sync="gradient"`` round overhead: two versions of the library in one cluster.

On a shared machine the load moves faster than one benchmark run, so figures of separate runs
are not comparable. Here both versions train in the same 2-worker cluster, fits interleaved
(order alternating per repetition), so each pair sees about the same load; report the paired
differences. The other version is a copy of the package under another name::

    git archive <rev> pipeline | tar -x -C /tmp/ab && mv /tmp/ab/pipeline /tmp/ab/pipeline_base
    PYTHONPATH=$PWD:/tmp/ab python benchmarks/ab_round_overhead.py --reps 10
    PYTHONPATH=$PWD:/tmp/ab python benchmarks/ab_round_overhead.py --reps 6 --sync average

(the package's imports are relative, so the copy imports itself). Prints JSON: per version and
K, ``fit seconds / rounds`` in ms, as the overhead benchmark's headline column, and the CPU
milliseconds per round spent in this process (client and the LocalCluster's scheduler) and in
the workers, which the machine's load moves much less than wall time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import warnings

import numpy as np
from common import HIDDEN, dask_classification, local_cluster

ROWS_PER_BLOCK_STEP = 4
# CPU ms per round of each fit: (this process: client and LocalCluster scheduler, the workers)
CPU: list[tuple[float, float]] = []


def fit_ms(module, client, K: int, rounds: int, seed: int, sync: str = "gradient",
           data_seed: int = 0, hidden: tuple[int, ...] = HIDDEN) -> float:
    # each version gets its own data (same shapes): with the same data both versions' blocks
    # get the same keys, and a fit can pick up blocks the other package built (its classes)
    X, y = dask_classification(K * rounds * ROWS_PER_BLOCK_STEP, K, seed=data_seed)
    clf = module.MLPClassifier(hidden, batch_size=K * ROWS_PER_BLOCK_STEP, max_iter=1,
                               sync=sync, random_state=seed, tol=0.0, shuffle=False,
                               min_block_rows=None)
    workers0 = client.run(time.process_time)
    cpu0 = time.process_time()
    clf.fit(X, y, client=client)
    cpu = time.process_time() - cpu0
    workers = sum(client.run(time.process_time).values()) - sum(workers0.values())
    s = clf.train_summary_
    CPU.append((1e3 * cpu / s["rounds"], 1e3 * workers / s["rounds"]))
    return 1e3 * s["seconds"] / s["rounds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--other", default="pipeline_base", help="the other version's package name")
    p.add_argument("--sync", default="gradient",
                   help="sync mode of the fits (\"average\": the estimator's default, local SGD)")
    p.add_argument("--ks", default="8:60,64:20",
                   help="blocks:rounds per fit, comma-separated (default 8:60,64:20)")
    p.add_argument("--hidden", default=",".join(map(str, HIDDEN)),
                   help="hidden layer sizes, comma-separated (default: the overhead benchmark's)")
    args = p.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    warnings.simplefilter("ignore")  # one-epoch fits: ConvergenceWarning
    versions = {"this": importlib.import_module("pipeline.estimators"),
                "other": importlib.import_module(f"{args.other}.estimators")}
    Ks = {int(k): int(r) for k, r in (kr.split(":") for kr in args.ks.split(","))}
    out: dict[str, dict[int, list[float]]] = {v: {K: [] for K in Ks} for v in versions}
    cpu: dict[str, dict[int, list[tuple[float, float]]]] = {v: {K: [] for K in Ks} for v in versions}
    with local_cluster(2) as client:
        for k, m in enumerate(versions.values()):
            fit_ms(m, client, 8, 10, 0, args.sync, data_seed=2 + k)  # warm-up
        for r in range(args.reps):
            for K, R in Ks.items():
                for name in (list(versions) if r % 2 == 0 else list(versions)[::-1]):
                    out[name][K].append(fit_ms(versions[name], client, K, R, r, args.sync,
                                               data_seed=list(versions).index(name),
                                               hidden=hidden))
                    cpu[name][K].append(CPU[-1])
            print(f"rep {r}: " + ", ".join(f"{n} K={K} {out[n][K][-1]:.1f} ms"
                                            for n in out for K in Ks), file=sys.stderr)
    summary = {}
    for K in Ks:
        a, b = np.array(out["this"][K]), np.array(out["other"][K])
        summary[K] = {"this_median": float(np.median(a)), "other_median": float(np.median(b)),
                      "paired_saving_median": float(np.median(b - a)),
                      "this_faster": f"{int((a < b).sum())}/{len(a)}",
                      "cpu_ms_per_round_client_scheduler": {
                          v: float(np.median([c[0] for c in cpu[v][K]])) for v in versions},
                      "cpu_ms_per_round_workers": {
                          v: float(np.median([c[1] for c in cpu[v][K]])) for v in versions}}
    print(json.dumps({"runs": out, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
