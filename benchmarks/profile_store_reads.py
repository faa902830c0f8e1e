"""Per-step cost of serving mini-batches from a disk block vs the same block in memory, in one
process, no Dask: the part of the disk store's throughput gap that is the reader's own work.

One block of 62,500 x 20 float32 rows (the quick stores benchmark's block), batches of 256 rows
(its per-block share of a 1,024-row replica step), shuffled epoch order; reports ms per epoch,
us per step and minor page faults per epoch for each store, and checks the rows are the same.
Run it as a worker runs, with the nanny's malloc setting:

    MALLOC_TRIM_THRESHOLD_=65536 OMP_NUM_THREADS=1 python benchmarks/profile_store_reads.py
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time

import numpy as np

from pipeline.blocks import Block
from pipeline.nn import Workspace
from pipeline.stores import DiskBlock, Recipe, release_local, store_dir, write_block
from pipeline.train.order import step_rows
from pipeline.train.tasks import _rows


def _epoch(block, epoch, ws, n, steps):
    for s in range(steps):
        lo, hi = step_rows(n, s, steps)
        _rows(block, 0, 0, epoch, True, lo, hi, ws)


def main(n: int = 62_500, d: int = 20, batch: int = 256, epochs: int = 3) -> None:
    rng = np.random.default_rng(0)
    block = Block(rng.standard_normal((n, d), dtype=np.float32),
                  rng.standard_normal((n, 1), dtype=np.float32))
    scratch = tempfile.tempdir = tempfile.mkdtemp(prefix="profile-store-reads-")
    path = store_dir("profile") / "block-0.bin"
    handle = DiskBlock("profile", 0, n, d, 1, "float32", Recipe([], None, "float32"),
                       checksums=write_block(block, path), path=str(path))
    steps = n // batch
    try:
        for name, b in (("memory", block), ("disk", handle)) * 2:
            ws = Workspace()
            _epoch(b, 0, ws, n, steps)  # warm: buffers, plans, page cache
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            for e in range(1, epochs + 1):
                _epoch(b, e, ws, n, steps)
            dt = (time.perf_counter() - t) / epochs
            faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / epochs
            print(f"{name:6s} {1e3 * dt:7.1f} ms/epoch {1e6 * dt / steps:7.1f} us/step "
                  f"{faults:7.0f} minor faults/epoch")
        wa, wb = Workspace(), Workspace()
        for s in range(steps):
            lo, hi = step_rows(n, s, steps)
            a, c = _rows(block, 0, 0, 9, True, lo, hi, wa), _rows(handle, 0, 0, 9, True, lo, hi, wb)
            assert np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1])
    finally:
        release_local(["profile"])
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
