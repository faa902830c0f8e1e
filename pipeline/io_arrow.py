"""Arrow memory on the workers: converting tables to pandas and giving freed pages back."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

# --------------------------------------------------------------------------------------------
# Arrow memory on the workers


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as a pandas frame, converted on this thread: Arrow's conversion threads
    keep per-thread allocator caches (about 10 MiB of RSS on a worker) for a copy that is
    memory-bound anyway."""
    return table.to_pandas(use_threads=False)


def _release_arrow_memory() -> None:
    """Give the pages Arrow's pool freed back to the OS (< 1 µs when there are none).

    Arrow's default pool (mimalloc or jemalloc) keeps freed memory for reuse. After a
    partition is read and its table dropped, that was about 50-60 MiB of RSS per worker
    process (6 MB row groups, measured 2026-11), never used again by anything but the next
    read, and counted by Dask's memory monitor like any other memory: at a 400 MiB worker
    limit it is what paused the workers. Released, the steady state of a read is ~3 MiB.
    """
    pa.default_memory_pool().release_unused()
