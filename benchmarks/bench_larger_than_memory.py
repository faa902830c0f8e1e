"""Only the larger-than-memory part of ``bench_stores.py`` (its section 3), at full size: data
4x the combined memory limit of 2 workers at 768 MiB (about 6 GiB of float32 blocks, the
issue's CI size), then 8x (about 12 GiB, the benchmark size), each fitted
with ``block_store="disk"``; spill, pauses, restarts and peak RSS per worker are watched.
``--quick``: 1x the combined limit.

    python benchmarks/run_all.py --only larger_than_memory

It is a memory target: other processes' CPU load makes it slower but does not change whether
it is met (RSS, spill, pauses and restarts do not depend on speed).
"""

from __future__ import annotations

from typing import Any

from bench_stores import larger_than_memory
from common import main, section


def run(quick: bool) -> dict[str, Any]:
    tables, targets, raw = larger_than_memory(quick)
    if not quick:  # and at benchmark size: twice the CI size, 8x the combined limit
        t8, g8, raw8 = larger_than_memory(quick, ratio=8.0)
        tables, targets, raw = tables + t8, targets + g8, {"4x": raw, "8x": raw8}
    return section("Block stores: data larger than the workers' memory",
                   "python benchmarks/bench_larger_than_memory.py" + (" --quick" if quick else ""),
                   tables=tables, targets=targets, raw=raw,
                   notes=["peak RSS includes what a worker holds with its imports (the README's "
                          "larger-than-memory section measures it, step by step)",
                          "a memory target: other processes' CPU load slows the fit, it does "
                          "not change RSS, spill, pauses or restarts"])


if __name__ == "__main__":
    main(run)
