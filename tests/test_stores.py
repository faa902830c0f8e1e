"""Block stores (memory, disk, stream): one epoch order, the same bits, honest memory, no files
left behind."""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import pipeline.train.tasks as tasks
from pipeline import store_worker
from pipeline.blocks import Block
from pipeline.estimators import MLPClassifier, MLPRegressor
from pipeline.nn import Workspace
from pipeline.stores import ROOT, DiskBlock, Recipe, check_block_store, write_block
from pipeline.train import order

STORES = ("memory", "disk", "stream")


# ------------------------------------------------------------------ the epoch order ------------


def _order_oracle(n, seed, block, epoch, C):
    """The two-level order written out: chunk order from (seed, block, epoch, 2**32-1), rows
    inside chunk c from (seed, block, epoch, c)."""
    k = -(-n // C)
    out = []
    for c in np.random.default_rng([seed, block, epoch, 2**32 - 1]).permutation(k):
        a, b = c * C, min((c + 1) * C, n)
        out.append(a + np.random.default_rng([seed, block, epoch, c]).permutation(b - a))
    return np.concatenate(out)


@pytest.mark.parametrize("n", [1, 1000, 32_768, 32_769, 100_000])
def test_epoch_order_is_the_two_level_permutation(n):
    got = order.epoch_order(n, 5, 3, 2, True)
    assert np.array_equal(got, _order_oracle(n, 5, 3, 2, order.EPOCH_CHUNK_ROWS))
    assert np.array_equal(np.sort(got), np.arange(n))
    C = order.EPOCH_CHUNK_ROWS
    # each chunk's rows are visited together, as one contiguous run of positions
    runs = np.flatnonzero(np.diff(got // C)) if n > 1 else []
    assert len(runs) == -(-n // C) - 1
    if n <= C:  # one chunk: the full per-block permutation of before, bit for bit
        assert np.array_equal(got, np.random.default_rng([5, 3, 2]).permutation(n))


def test_check_block_store_names_the_choices():
    for s in ("memory", "disk", "stream", "auto"):
        assert check_block_store(s) == s
    with pytest.raises(ValueError, match="block_store must be one of"):
        check_block_store("ram")


# ------------------------------------------------------------------ reading a disk block --------


@pytest.mark.parametrize("shuffle", [True, False])
def test_disk_rows_equal_memory_rows_across_chunk_boundaries(tmp_path, monkeypatch, shuffle):
    """Any rows [lo, hi) of the epoch order read from a file (chunks, prefetch) equal the rows
    gathered from memory (the memory store's path, the oracle)."""
    monkeypatch.setattr(order, "EPOCH_CHUNK_ROWS", 97)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rng = np.random.default_rng(0)
    n, d, k = 1000, 5, 3
    block = Block(rng.standard_normal((n, d)).astype(np.float32),
                  rng.standard_normal((n, k)).astype(np.float32))
    from pipeline.stores import store_dir

    path = store_dir("unit") / "block-4.bin"
    sums = write_block(block, path)
    handle = DiskBlock("unit", 4, n, d, k, "float32",
                       Recipe([], None, "float32"), checksums=sums, path=str(path))
    ws_mem, ws_disk = Workspace(), Workspace()
    for epoch in range(2):
        cuts = np.unique(np.r_[0, rng.integers(0, n, 12), 96, 97, 98, 500, n])
        for lo, hi in itertools.pairwise(cuts):
            want = tasks._rows(block, 7, 4, epoch, shuffle, lo, hi, ws_mem)
            got = tasks._rows(handle, 7, 4, epoch, shuffle, lo, hi, ws_disk)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    loaded = handle.load()
    assert np.array_equal(loaded.X, block.X) and np.array_equal(loaded.Y, block.Y)
    # a flipped byte is caught by the chunk's checksum, naming the file and the chunk
    raw = bytearray(path.read_bytes())
    raw[4 * d * 200 + 3] ^= 0xFF  # row 200: chunk 2
    path.write_bytes(bytes(raw))
    with pytest.raises(OSError, match=r"block-4\.bin: chunk 2 \(rows 194\.\.291\) fails its"):
        handle.load()


# ------------------------------------------------------------------ fits ------------------------


def _data(n=70_000, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    signal = X[:, 0] + 0.5 * X[:, 1] * X[:, 2] - 0.3 * X[:, 3] ** 2
    y = np.digitize(signal + 0.3 * rng.standard_normal(n), [-0.5, 0.5])
    return X, y, signal


@pytest.fixture(scope="module")
def one_worker():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster, set_as_default=False) as c:
        yield c


def _fit(client, store, X, y, *, regressor=False, chunks=35_000, **kw):
    params = {"hidden_layer_sizes": (8,), "random_state": 0, "max_iter": 2,
              "batch_size": 3000, "min_block_rows": 1, "block_store": store, **kw}
    est = (MLPRegressor if regressor else MLPClassifier)(**params)
    Xd = da.from_array(X, chunks=(chunks, -1))
    yd = da.from_array(y, chunks=chunks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(Xd, yd, client=client)
    return est


def _bits(est):
    return [*est.coefs_, *est.intercepts_, np.asarray(est.loss_curve_)]


def _same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(_bits(a), _bits(b), strict=True))


@pytest.mark.parametrize("sync", ["gradient", "average"])
def test_every_store_gives_the_same_bits_on_one_and_two_workers(client, one_worker, sync):
    """Blocks of 35000 rows (two chunks each), batches that straddle chunks: the memory store on
    one worker is the oracle for every store on one and on two workers."""
    X, y, _ = _data()
    ref = _fit(one_worker, "memory", X, y, sync=sync, local_steps=3, replicas=2)
    for store in STORES:
        for c in (one_worker, client):
            got = _fit(c, store, X, y, sync=sync, local_steps=3, replicas=2)
            assert _same(got, ref), f"{store} on {len(c.scheduler_info()['workers'])} workers"


def test_stores_agree_without_shuffle_and_with_early_stopping_and_a_regressor(client):
    X, y, signal = _data(n=40_000)
    for kw in ({"shuffle": False}, {"early_stopping": True, "n_iter_no_change": 1,
                                    "validation_fraction": 0.2, "max_iter": 3}):
        ref = _fit(client, "memory", X, y, chunks=20_000, **kw)
        for store in ("disk", "stream"):
            assert _same(_fit(client, store, X, y, chunks=20_000, **kw), ref), (store, kw)
    ref = _fit(client, "memory", X, signal, regressor=True, chunks=20_000)
    for store in ("disk", "stream"):
        assert _same(_fit(client, store, X, signal, regressor=True, chunks=20_000), ref)


def _store_dirs(client):
    def listing(dask_worker):
        root = Path(dask_worker.local_directory) / ROOT
        return sorted(str(p) for p in root.iterdir()) if root.exists() else []

    return [p for paths in client.run(listing).values() for p in paths]


def test_disk_files_are_removed_after_fit_and_after_a_failure(client, monkeypatch):
    X, y, _ = _data(n=20_000)
    _fit(client, "disk", X, y, chunks=5_000, max_iter=1)
    assert _store_dirs(client) == []
    import pipeline.mlp_base as est_mod

    seen = {}

    def failing_train(*args, **kwargs):
        seen["dirs"] = _store_dirs(client)
        raise RuntimeError("the fit failed")

    monkeypatch.setattr(est_mod, "train", failing_train)
    with pytest.raises(RuntimeError, match="the fit failed"):
        _fit(client, "disk", X, y, chunks=5_000, max_iter=1)
    assert seen["dirs"], "the blocks were on disk while training ran"
    assert _store_dirs(client) == []


def test_a_disk_block_claims_almost_no_managed_memory(client):
    """A generated source (its recipe is a few hundred bytes, not the data): Dask counts the
    handles' bytes only, while the memory store's blocks count their rows."""
    from pipeline.blocks import to_blocks
    from pipeline.store_blocks import release

    X = da.random.default_rng(0).standard_normal((40_000, 6), chunks=(10_000, 6))
    y = (X[:, 0] > 0).astype(np.int64)
    sizes = {}
    for store in ("memory", "disk"):
        blocks = to_blocks(client, X, y, classification=True, block_store=store)
        nbytes = client.nbytes(summary=False)
        sizes[store] = [nbytes[f.key] for f in blocks.futures]
        if blocks.store_id:
            release(client, [blocks.store_id])
        del blocks
    rows_bytes = 10_000 * (6 + 1) * 4
    assert all(s >= rows_bytes for s in sizes["memory"])
    # the handle counts its recipe (here the generator's graph: ~40 KB), never the rows
    assert all(s < 64 * 1024 and s < m / 4 for s, m in zip(sizes["disk"], sizes["memory"],
                                                             strict=True)), sizes


def test_resume_from_a_checkpoint_with_every_store(client, tmp_path):
    X, y, _ = _data(n=40_000)
    straight = _fit(client, "memory", X, y, chunks=20_000, max_iter=4)
    for store in STORES:
        ckpt = tmp_path / store
        est = MLPClassifier((8,), random_state=0, max_iter=2, batch_size=3000, min_block_rows=1,
                            block_store=store)
        Xd, yd = da.from_array(X, chunks=(20_000, -1)), da.from_array(y, chunks=20_000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(Xd, yd, client=client, checkpoint_dir=str(ckpt))
            est.set_params(max_iter=4)
            est.fit(Xd, yd, client=client, checkpoint_dir=str(ckpt), resume=True)
        assert _same(est, straight), store


def test_auto_picks_memory_when_blocks_fit_and_disk_when_they_do_not(client, monkeypatch):
    import pipeline.store_blocks as sb
    from pipeline.blocks import to_blocks
    from pipeline.store_blocks import release

    X, y, _ = _data(n=8_000)
    Xd, yd = da.from_array(X, chunks=(4_000, -1)), da.from_array(y, chunks=4_000)
    blocks = to_blocks(client, Xd, yd, classification=True, block_store="auto")
    assert blocks.store == "memory"  # the test cluster has no memory limit, or a large one
    monkeypatch.setattr(sb, "_combined_limit", lambda c: 8_000 * 9 * 4)  # the data: 100 %
    blocks = to_blocks(client, Xd, yd, classification=True, block_store="auto")
    assert blocks.store == "disk"
    assert all(type(f.result()).__name__ == "DiskBlock" for f in blocks.futures)
    release(client, [blocks.store_id])
    assert _store_dirs(client) == []


def test_stores_dir_is_per_worker_local_directory(client):
    X, y, _ = _data(n=20_000)
    from pipeline.blocks import to_blocks
    from pipeline.store_blocks import release

    blocks = to_blocks(client, da.from_array(X, chunks=(5_000, -1)),
                       da.from_array(y, chunks=5_000), classification=True, block_store="disk")
    who = client.who_has(blocks.futures)
    local = client.run(lambda dask_worker: dask_worker.local_directory)
    for f in blocks.futures:
        handle = f.result()
        (holder,) = who[f.key]
        assert handle.path.startswith(os.path.join(local[holder], ROOT, blocks.store_id))
    release(client, [blocks.store_id])


def test_disk_blocks_are_built_where_local_sgd_colocates_them(client):
    """Each disk block is built on the worker its local-SGD replica (``replicas="auto"``: one
    per worker, ``replica_groups``) is colocated on, so colocation moves none (a moved disk
    block is rebuilt from its source); the build pins are loosened afterwards."""
    from pipeline.blocks import to_blocks
    from pipeline.placement import colocate
    from pipeline.store_blocks import release
    from pipeline.train.strategies import replica_groups

    X, y, _ = _data(n=36_000)
    chunks = (1000, 7000, 3000, 5000, 8000, 2000, 6000, 4000)
    blocks = to_blocks(client, da.from_array(X, chunks=(chunks, -1)),
                       da.from_array(y, chunks=(chunks,)), classification=True,
                       block_store="disk")
    try:
        units = replica_groups(blocks.rows, 2)
        who = client.who_has(blocks.futures)
        holders = [[next(iter(who[blocks.futures[i].key])) for i in u] for u in units]
        assert all(len(set(h)) == 1 for h in holders)  # a replica's blocks share a worker
        assert holders[0][0] != holders[1][0]  # the replicas are spread
        moved = colocate(client, blocks, units)
        assert [f.key for f in moved.futures] == [f.key for f in blocks.futures]  # none moved
        loose = client.run_on_scheduler(lambda dask_scheduler, keys: [
            dask_scheduler.tasks[k].loose_restrictions for k in keys],
            keys=[f.key for f in blocks.futures])
        assert all(loose)
    finally:
        release(client, [blocks.store_id])


def test_disk_rows_stay_right_when_chunk_buffers_are_evicted(tmp_path, monkeypatch):
    """Two blocks read in turn with a buffer budget of almost nothing: each read evicts the
    other block's buffers (and its prefetch); rows still equal the memory store's."""
    import tempfile

    import pipeline.stores as stores

    monkeypatch.setattr(order, "EPOCH_CHUNK_ROWS", 64)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(store_worker, "memory_limit", lambda: 1)
    rng = np.random.default_rng(1)
    blocks, handles = [], []
    for index in (0, 1):
        b = Block(rng.standard_normal((300, 4)), rng.standard_normal((300, 2)))
        path = stores.store_dir("evict") / f"block-{index}.bin"
        handles.append(DiskBlock("evict", index, 300, 4, 2, "float64",
                                 Recipe([], None, "float64"), checksums=write_block(b, path),
                                 path=str(path)))
        blocks.append(b)
    ws = [Workspace() for _ in range(4)]
    for epoch in range(2):
        for lo, hi in ((0, 50), (50, 130), (130, 300)):
            for i in (0, 1):
                want = tasks._rows(blocks[i], 3, i, epoch, True, lo, hi, ws[i])
                got = tasks._rows(handles[i], 3, i, epoch, True, lo, hi, ws[2 + i])
                assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert len(store_worker.READERS) == 1  # the other block's buffers were dropped
    stores.release_local(["evict"])


@pytest.mark.parametrize(("limit_mib", "d", "k", "dtype"), [(768, 20, 1, "float32"),
                                                        (400, 7, 3, "float64"),
                                                        (1, 50, 1, "float64")])
def test_blocks_per_worker_is_what_the_readers_keep(monkeypatch, limit_mib, d, k, dtype):
    """``blocks_per_worker`` is the number of disk blocks whose readers a worker keeps: that
    many readers (blocks of one chunk and more) stay, one more evicts the least recently used
    (the oracle: the readers' own eviction); at least 1 however small the limit."""
    from collections import OrderedDict

    import pipeline.stores as stores
    from pipeline.stores import blocks_per_worker

    monkeypatch.setattr(store_worker, "READERS", OrderedDict())
    monkeypatch.setattr(store_worker, "memory_limit", lambda: limit_mib * 2**20)
    fit = blocks_per_worker(limit_mib * 2**20, d, k, dtype)
    assert fit >= 1
    C = order.EPOCH_CHUNK_ROWS
    rng = np.random.default_rng(0)
    handles = [DiskBlock("bpw", i, int(rng.integers(C, 3 * C)), d, k, dtype,
                         Recipe([], None, dtype), checksums=(), path="") for i in range(fit + 1)]
    try:
        for h in handles[:fit]:
            h._reader()
        assert list(store_worker.READERS) == [("bpw", i) for i in range(fit)]
        handles[fit]._reader()  # one more: the least recently used goes
        assert list(store_worker.READERS) == [("bpw", i) for i in range(1, fit + 1)]
    finally:
        stores.release_local(["bpw"])


class _CountingRecipe(Recipe):
    """A recipe that counts its builds (the stream store rebuilds once per epoch, a disk
    block's file is rebuilt when missing)."""

    def __init__(self, X, y):
        super().__init__([(da.from_array(X, chunks=-1), da.from_array(y, chunks=-1))], None,
                         "float64")
        self.builds = 0

    def build(self):
        self.builds += 1
        return super().build()

    def parts(self):  # a disk file's rebuild: the block a partition at a time
        self.builds += 1
        yield from super().parts()


@pytest.mark.parametrize("shuffle", [True, False])
def test_stream_rows_equal_memory_rows_and_the_next_epoch_is_rebuilt_ahead(monkeypatch, shuffle):
    """A stream block serves the memory store's rows (the oracle) across chunk boundaries and
    epochs; touching an epoch's last chunk starts the next epoch's rebuild on the prefetch
    thread, so each epoch builds the block exactly once."""
    import pipeline.stores as stores
    from pipeline.stores import StreamBlock

    monkeypatch.setattr(order, "EPOCH_CHUNK_ROWS", 97)
    rng = np.random.default_rng(2)
    n, d = 1000, 4
    X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    recipe = _CountingRecipe(X, y)
    block = Block(X, y[:, None])
    handle = StreamBlock("stream-unit", 2, n, d, 1, "float64", recipe)
    ws_mem, ws_stream = Workspace(), Workspace()
    cuts = np.unique(np.r_[0, rng.integers(0, n, 10), 96, 97, 98, 500, n])
    try:
        for epoch in range(3):
            for lo, hi in itertools.pairwise(cuts):
                want = tasks._rows(block, 7, 2, epoch, shuffle, lo, hi, ws_mem)
                got = tasks._rows(handle, 7, 2, epoch, shuffle, lo, hi, ws_stream)
                assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            reader = store_worker.READERS[("stream-unit", 2)]
            assert reader.next is not None and reader.next[0] == epoch + 1
            reader.next[1].result()
            assert recipe.builds == epoch + 2  # this epoch's and the next one's, no more
    finally:
        stores.release_local(["stream-unit"])


def test_disk_reader_prefetches_the_next_chunk_of_the_epoch_order(tmp_path, monkeypatch):
    """After a read from chunk c, the chunk the epoch order visits next (the next epoch's first
    after the last) is the one in flight, with its rows' order for that epoch."""
    import tempfile

    import pipeline.stores as stores

    monkeypatch.setattr(order, "EPOCH_CHUNK_ROWS", 50)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rng = np.random.default_rng(3)
    n = 230
    b = Block(rng.standard_normal((n, 3)), rng.standard_normal((n, 1)))
    path = stores.store_dir("pf") / "block-0.bin"
    handle = DiskBlock("pf", 0, n, 3, 1, "float64", Recipe([], None, "float64"),
                       checksums=write_block(b, path), path=str(path))
    ws = Workspace()
    try:
        for epoch in range(2):
            seq = order.chunk_sequence(n, 1, 0, epoch, True)
            nxt = order.chunk_sequence(n, 1, 0, epoch + 1, True)[0]
            pos = 0
            for j, c in enumerate(seq):
                a, e = order.chunk_bounds(n, int(c))
                tasks._rows(handle, 1, 0, epoch, True, pos, pos + 1, ws)
                pos += e - a
                reader = store_worker.READERS[("pf", 0)]
                want = (int(seq[j + 1]), (1, 0, epoch)) if j + 1 < len(seq) else (
                    int(nxt), (1, 0, epoch + 1))
                if want[0] != int(c):
                    assert reader.pending[:2] == want
                    _, rows = reader.pending[2].result()
                    assert np.array_equal(rows, order.chunk_permutation(n, *want[1], want[0]))
    finally:
        stores.release_local(["pf"])


class _Deferred:
    """An executor that runs what it is given only when told: prefetches at chosen moments."""

    def __init__(self):
        self.queue = []

    def submit(self, fn, *args):
        from concurrent.futures import Future

        future = Future()
        self.queue.append((future, fn, args))
        return future

    def run(self):
        for future, fn, args in self.queue:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except Exception as e:
                    future.set_exception(e)
        self.queue.clear()


def test_a_prefetch_never_rebuilds_a_missing_file_and_closing_cancels_it(tmp_path, monkeypatch):
    """A prefetch that finds the block's file gone (a closing worker removed it) fails without
    rebuilding; the training thread then rebuilds it from the recipe, once, rows unchanged.
    Closing the worker's stores (:func:`release_all`) cancels a queued prefetch, removes the
    files, and later reads refuse to rebuild."""
    import tempfile

    import pipeline.stores as stores

    monkeypatch.setattr(order, "EPOCH_CHUNK_ROWS", 40)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pool = _Deferred()
    monkeypatch.setattr(store_worker, "pool", lambda: pool)
    rng = np.random.default_rng(4)
    n = 200
    X, y = rng.standard_normal((n, 3)), rng.standard_normal(n)
    recipe = _CountingRecipe(X, y)
    block = Block(X, y[:, None])
    path = stores.store_dir("gone") / "block-1.bin"
    handle = DiskBlock("gone", 1, n, 3, 1, "float64", recipe,
                       checksums=write_block(block, path), path=str(path))
    ws_mem, ws_disk = Workspace(), Workspace()

    def same(lo, hi):
        want = tasks._rows(block, 5, 1, 0, True, lo, hi, ws_mem)
        got = tasks._rows(handle, 5, 1, 0, True, lo, hi, ws_disk)
        return np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])

    assert same(0, 10) and len(pool.queue) == 1  # the next chunk is queued
    path.unlink()
    pool.run()
    assert recipe.builds == 0 and not path.exists()  # the prefetch failed, rebuilt nothing
    assert same(40, 50) and recipe.builds == 1 and path.exists()  # rebuilt by the reader
    pool.run()  # the third chunk, read ahead from the rebuilt file
    assert same(80, 90) and len(pool.queue) == 1 and recipe.builds == 1
    queued = pool.queue[0][0]
    assert stores.release_all() == [str(stores.store_dir("gone"))]
    assert queued.cancelled() and not path.exists()
    with pytest.raises(RuntimeError, match="'gone' was released"):
        tasks._rows(handle, 5, 1, 0, True, 120, 130, Workspace())


def test_stream_rebuilds_ahead_stay_within_the_cache_bound(monkeypatch):
    """The next epoch's rebuilds count against the stream cache's bound with the blocks in use:
    with room for three copies of a block, two blocks in use leave room for one rebuild
    ahead, not two."""
    import pipeline.stores as stores
    from pipeline.stores import StreamBlock

    monkeypatch.setattr(order, "EPOCH_CHUNK_ROWS", 64)
    rng = np.random.default_rng(5)
    n, d = 300, 3
    block_bytes = n * (d + 1) * 8
    monkeypatch.setattr(store_worker, "memory_limit",
                        lambda: int(3.5 * block_bytes / stores.STREAM_CACHE_FRACTION))
    handles = []
    for index in (0, 1):
        X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
        handles.append(StreamBlock("ahead", index, n, d, 1, "float64", _CountingRecipe(X, y)))
    try:
        for index, h in enumerate(handles):  # one whole epoch of each, one after the other
            tasks._rows(h, 0, index, 0, True, 0, n, Workspace())
        first, second = (store_worker.READERS[("ahead", i)] for i in (0, 1))
        assert first.next is not None and first.next[0] == 1
        assert second.next is None
    finally:
        stores.release_local(["ahead"])


def test_on_a_worker_prefetches_land_and_evicted_readers_free_their_buffers_at_once(client):
    """On a Dask worker (where the training runs; the tests above run in the client process),
    the prefetch thread reads the next chunk from the worker's directory, and a reader evicted
    by the buffer budget frees its buffers without waiting for the cyclic garbage collector.

    Before: the prefetch thread resolved the block's path with ``get_worker()``, which fails
    off the worker's task thread, so every prefetch failed (FileNotFoundError); each failed
    future's traceback kept its reader alive in a cycle, and a worker whose blocks outnumber
    the budget (local SGD visits every block each step) piled up evicted readers with their
    chunk buffers: RSS +300-400 MiB within seconds, then a sudden drop at a gen-2 collection
    (the pauses of the larger-than-memory benchmark)."""

    def on_worker():
        import gc
        import weakref

        import pipeline.stores as stores
        import pipeline.train.tasks as tasks
        from pipeline import store_worker
        from pipeline.blocks import Block
        from pipeline.nn import Workspace
        from pipeline.stores import DiskBlock, Recipe, write_block
        from pipeline.train import order

        saved = order.EPOCH_CHUNK_ROWS, store_worker.memory_limit
        order.EPOCH_CHUNK_ROWS = 64
        order._ORDERS.clear()
        store_worker.memory_limit = lambda: 1  # every new reader evicts the other one
        rng = np.random.default_rng(5)
        blocks, handles = [], []
        for index in (0, 1):
            b = Block(rng.standard_normal((300, 4)), rng.standard_normal((300, 2)))
            path = stores.store_dir("on-worker") / f"block-{index}.bin"
            handles.append(DiskBlock("on-worker", index, 300, 4, 2, "float64",
                                     Recipe([], None, "float64"),
                                     checksums=write_block(b, path), path=str(path)))
            blocks.append(b)
        out = {"same": [], "prefetch": [], "alive": []}
        ws = [Workspace() for _ in range(4)]
        gc.disable()
        try:
            seen = []
            for lo, hi in ((0, 50), (50, 130), (130, 300)):
                for i in (0, 1):
                    want = tasks._rows(blocks[i], 3, i, 0, True, lo, hi, ws[i])
                    got = tasks._rows(handles[i], 3, i, 0, True, lo, hi, ws[2 + i])
                    out["same"].append(bool(np.array_equal(got[0], want[0])
                                            and np.array_equal(got[1], want[1])))
                    reader = store_worker.READERS[("on-worker", i)]
                    seen.append(weakref.ref(reader))
                    if reader.pending is not None:
                        try:
                            reader.pending[2].result(timeout=30)
                            out["prefetch"].append("landed")
                        except Exception as e:
                            out["prefetch"].append(type(e).__name__)
                    del reader
            current = {id(r) for r in store_worker.READERS.values()}
            out["alive"] = [r() is not None for r in seen if id(r()) not in current]
        finally:
            gc.enable()
            order.EPOCH_CHUNK_ROWS, store_worker.memory_limit = saved
            order._ORDERS.clear()
            stores.release_local(["on-worker"])
        return out

    worker = sorted(client.scheduler_info()["workers"])[0]
    out = client.submit(on_worker, pure=False, workers=[worker]).result()
    assert all(out["same"]) and len(out["same"]) == 6
    assert out["prefetch"] and set(out["prefetch"]) == {"landed"}, out["prefetch"]
    assert out["alive"] and not any(out["alive"]), out["alive"]
