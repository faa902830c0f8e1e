"""The fused AdamW step (``pipeline.optim.fused_adamw``) against the chain it fuses, on a
captured member task (``profile_tabular_fused.py capture NAME FILE --full --epochs N``), in one
process: the task's optimizer as captured (``step_into``) and the same optimizer without it
(``update_into``, the chain's passes), alternating, CPU seconds per run; plus the step's
optimizer part alone (``step_into`` timed around each call) in a last run. Issue 13, session 18::

    MALLOC_TRIM_THRESHOLD_=65536 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. \\
        python benchmarks/probe_fused_step.py /tmp/hotel.pkl --runs 16
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time

from pipeline.train.fused import fused_epochs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--runs", type=int, default=16)
    a = ap.parse_args()
    with open(a.file, "rb") as f:
        args = list(pickle.load(f))
    opt = args[5]
    if getattr(opt, "step_into", None) is None:
        raise SystemExit("the captured optimizer has no step_into: capture with this checkout")
    variants = {"fused": tuple(args),
                "chain": (*args[:5], opt._replace(step_into=None), *args[6:])}
    for v in variants.values():
        fused_epochs(*v)  # warm-up: workspaces
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(a.runs):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for k in order:
            c = time.process_time()
            fused_epochs(*variants[k])
            seconds[k].append(time.process_time() - c)
    ratios = [f / c for f, c in zip(seconds["fused"], seconds["chain"], strict=True)]
    for k, v in seconds.items():
        print(f"{k:6s} CPU seconds a run: median {statistics.median(v):.3f} "
              f"(min {min(v):.3f}, max {max(v):.3f}, {len(v)} runs)")
    print(f"fused / chain, median of the {len(ratios)} alternating pairs: "
          f"{statistics.median(ratios):.3f}")

    calls: list[float] = []
    inner = opt.step_into

    def timed(*xs):
        t = time.perf_counter()
        out = inner(*xs)
        calls.append(time.perf_counter() - t)
        return out

    fused_epochs(*args[:5], opt._replace(step_into=timed), *args[6:])
    print(f"step_into: median {statistics.median(calls) * 1e6:.1f} us a step over "
          f"{len(calls)} steps ({args[2].size} parameters)")


if __name__ == "__main__":
    main()
