"""A disk block's file written a partition at a time (pipeline.store_write) is, byte for byte, the
file written from the whole block (``write_block(recipe.build())``, the path it replaced), with
the same checksums; it is atomic, and building it holds about one partition, not the block."""

from __future__ import annotations

import tempfile
import tracemalloc

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from pipeline import store_worker
from pipeline.blocks import _partitions, _split_block
from pipeline.store_blocks import split_stored
from pipeline.store_disk import build_file
from pipeline.stores import DiskBlock, Recipe, write_block
from pipeline.train import order

C = 97  # rows per chunk in these tests: partitions straddle chunk boundaries


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch, tmp_path):
    monkeypatch.setattr(order, "EPOCH_CHUNK_ROWS", C)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def _recipe(X, y, chunks, *, classification, dtype, frame=False):
    """The recipe ``stored_blocks`` makes for one block of all ``chunks`` (row counts per
    partition), and its ``(n, d, k)``."""
    if frame:
        Xd = dd.from_pandas(pd.DataFrame(X), npartitions=1).repartition(
            divisions=[0, *np.cumsum(chunks)[:-1].tolist(), len(X) - 1], force=True)
        yd = dd.from_pandas(pd.Series(y), npartitions=1).repartition(
            divisions=list(Xd.divisions), force=True)
    else:
        Xd = da.from_array(X, chunks=(tuple(chunks), -1))
        yd = da.from_array(y, chunks=(tuple(chunks),) + ((-1,) if y.ndim == 2 else ()))
    pieces = [dask.optimize(a, b) for a, b in zip(_partitions(Xd), _partitions(yd), strict=True)]
    classes = np.unique(y) if classification else None
    if classification:
        k = 1 if len(classes) == 2 else len(classes)
    else:
        k = 1 if y.ndim == 1 else y.shape[1]
    return Recipe(pieces, classes, dtype), len(X), X.shape[1], k


CASES = [  # (rows per partition, target kind)
    ([1000], "multiclass"),
    ([97, 97, 97], "binary"),
    ([50, 0, 147, 300], "regression"),
    ([0, 0, 5], "multiclass"),
    ([96, 98, 1, 400, 0], "regression2d"),
    ([1, 1, 1, 300, 2], "strings"),
    ([0], "regression"),
]


def _data(rows, kind, seed):
    rng = np.random.default_rng(seed)
    n = sum(rows)
    X = rng.standard_normal((n, 5))
    if kind == "multiclass":
        y = rng.integers(0, 4, n)
        y[:4] = np.arange(4)[: min(4, n)] if n else y[:4]
    elif kind == "binary":
        y = rng.integers(0, 2, n) * 5 - 1  # labels -1 and 4
    elif kind == "strings":
        y = rng.choice(np.array(["cat", "dog", "yak"], dtype=object), n)
    elif kind == "regression2d":
        y = rng.standard_normal((n, 3))
    else:
        y = rng.standard_normal(n) * 1e3
    return X, y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("rows", "kind"), CASES)
def test_streamed_file_equals_the_whole_block_file(tmp_path, rows, kind, dtype):
    X, y = _data(rows, kind, len(rows))
    classification = kind in ("multiclass", "binary", "strings")
    recipe, n, d, k = _recipe(X, y, rows, classification=classification, dtype=dtype,
                              frame=kind == "strings")
    want_sums = write_block(recipe.build(), tmp_path / "whole.bin")
    got_sums = build_file(recipe, tmp_path / "streamed.bin", n, d, k, dtype)
    assert (tmp_path / "streamed.bin").read_bytes() == (tmp_path / "whole.bin").read_bytes()
    assert got_sums == want_sums
    assert len(got_sums) == -(-n // C)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.bin", "whole.bin"]


@pytest.mark.parametrize("keep_valid", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_files_equal_the_split_of_the_whole_block(tmp_path, keep_valid, dtype):
    """Both ways a split block is written: from the parent's file chunk by chunk
    (``split_stored``, the validation split of a disk fit) and from the parent's partitions
    (a worker rebuilding a split block it lacks) give the file of ``_split_block`` applied to
    the whole parent."""
    rows = [130, 0, 61, 400, 3]
    X, y = _data(rows, "multiclass", 9)
    recipe, n, d, k = _recipe(X, y, rows, classification=True, dtype=dtype)
    parent_sums = build_file(recipe, store_worker.store_dir("sp") / "block-3.bin", n, d, k,
                             dtype)
    parent = DiskBlock("sp", 3, n, d, k, dtype, recipe, checksums=parent_sums, path="")
    want = _split_block(recipe.build(), 0.3, 11, 3, keep_valid)
    want_sums = write_block(want, tmp_path / "want.bin")
    part = split_stored(parent, 0.3, 11, 3, keep_valid)
    assert part.n == want.X.shape[0] and part.checksums == want_sums
    assert part.local_path().read_bytes() == (tmp_path / "want.bin").read_bytes()
    rebuilt = build_file(part.recipe, tmp_path / "rebuilt.bin", part.n, d, k, dtype)
    assert rebuilt == want_sums
    assert (tmp_path / "rebuilt.bin").read_bytes() == (tmp_path / "want.bin").read_bytes()
    loaded = part.load()  # and the reader reads it back, checksums verified
    assert np.array_equal(loaded.X, want.X) and np.array_equal(loaded.Y, want.Y)


def test_a_failed_build_leaves_no_file(tmp_path):
    rows = [100, 100, 100]
    X, y = _data(rows, "regression", 1)
    recipe, n, d, k = _recipe(X, y, rows, classification=False, dtype="float32")

    def boom(part):
        raise RuntimeError("partition 1 is unreadable")

    bad = Recipe([recipe.pieces[0], (dask.delayed(boom)(recipe.pieces[1][0]),
                                     recipe.pieces[1][1]), recipe.pieces[2]], None, "float32")
    with pytest.raises(RuntimeError, match="partition 1 is unreadable"):
        build_file(bad, tmp_path / "b.bin", n, d, k, "float32")
    # a source that holds other rows than were counted when the block was planned
    with pytest.raises(ValueError, match=r"b\.bin: the block's pieces hold 300 rows, not the 301"):
        build_file(recipe, tmp_path / "b.bin", n + 1, d, k, "float32")
    with pytest.raises(ValueError, match=r"b\.bin: the block's pieces hold more than the 299"):
        build_file(recipe, tmp_path / "b.bin", n - 1, d, k, "float32")
    assert list(tmp_path.iterdir()) == []


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_building_a_block_holds_about_one_partition(tmp_path, monkeypatch):
    """Peak traced allocations while a block of 8 partitions is written: about one partition
    streamed, more than the whole block along the path it replaced (the oracle that this
    measure sees a whole block)."""
    monkeypatch.setattr(order, "EPOCH_CHUNK_ROWS", 32_768)
    parts, rows, d = 8, 40_000, 16
    X, y = _data([parts * rows], "multiclass", 4)
    X = np.ascontiguousarray(np.repeat(X, 4, axis=1)[:, :d])
    recipe, n, d, k = _recipe(X, y, [rows] * parts, classification=True, dtype="float64")
    block_bytes = n * (d + k) * 8
    part_bytes = rows * (d + k) * 8
    streamed = _peak(lambda: build_file(recipe, tmp_path / "s.bin", n, d, k, "float64"))
    whole = _peak(lambda: write_block(recipe.build(), tmp_path / "w.bin"))
    assert (tmp_path / "s.bin").read_bytes() == (tmp_path / "w.bin").read_bytes()
    assert whole > block_bytes
    assert streamed < 3 * part_bytes < block_bytes / 2, (streamed, part_bytes, block_bytes)
