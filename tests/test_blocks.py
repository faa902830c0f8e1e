"""Training blocks: device placement, coalescing, alignment errors."""

import dask.array as da
import numpy as np
import pandas as pd
import pytest

from pipeline.backend import worker_device
from pipeline.blocks import _final_block, coalesce_groups, to_blocks


def test_targets_follow_the_features_device():
    xps = pytest.importorskip("array_api_strict")
    dev = xps.Device("device1")
    X = xps.asarray(np.ones((3, 2), dtype=np.float32), device=dev)
    block = _final_block((X, np.array(["a", "b", "a"], dtype=object)), np.array(["a", "b"]),
                         "float32")
    assert block.Y.device == dev
    assert block.Y.shape == (3, 1)


def test_worker_device_comes_from_worker_resources():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, resources={"GPU": 1},
                      dashboard_address=":0", host="127.0.0.1") as cluster, \
            Client(cluster, set_as_default=False) as c:
        assert c.submit(worker_device).result() == "gpu"
    assert worker_device() == "cpu"  # not on a worker


def test_coalesce_groups_depends_only_on_row_counts():
    assert coalesce_groups([5, 5, 5, 20, 1], 10) == [[0, 1], [2, 3, 4]]
    assert coalesce_groups([0, 0, 0], 10) == [[0, 1, 2]]
    assert coalesce_groups([10, 10], 10) == [[0], [1]]
    rows = list(np.random.default_rng(0).integers(0, 50, 200))
    groups = coalesce_groups(rows, 64)
    assert [i for g in groups for i in g] == list(range(200))
    assert all(sum(rows[i] for i in g) >= 64 for g in groups)


def test_misaligned_partitions_are_refused(client):
    X = da.ones((100, 3), chunks=(25, 3))
    y = da.ones(100, chunks=50)
    with pytest.raises(ValueError, match="4 partitions but y has 2"):
        to_blocks(client, X, y, classification=True)


def test_empty_training_data_is_refused(client):
    X = da.ones((0, 3), chunks=(1, 3))
    y = da.ones(0, chunks=1)
    with pytest.raises(ValueError, match="empty"):
        to_blocks(client, X, y)


def _layout(block):
    X, Y = block
    return [(a.flags.aligned, a.flags.c_contiguous, a.flags.owndata) for a in (X, Y)]


def test_blocks_from_client_data_own_aligned_memory(client):
    """The user's path: data made on the client, sent with da.from_array and persist. Dask
    deserializes such chunks as views into message frames (often misaligned); a block must own
    aligned, C-contiguous memory whatever it was built from."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4001, 7)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    Xd = client.persist(da.from_array(X, chunks=(500, -1)))
    yd = client.persist(da.from_array(y, chunks=500))
    blocks = to_blocks(client, Xd, yd, classification=True, dtype="float32")
    layouts = client.gather(client.map(_layout, blocks.futures, pure=False))
    assert all(flags == (True, True, True) for lay in layouts for flags in lay), layouts


def test_owned_copies_misaligned_views_once():
    from pipeline.backend import owned

    buf = np.zeros(4 * 30 + 1, dtype=np.uint8)
    view = np.frombuffer(buf.data, dtype=np.float32, count=30, offset=1).reshape(6, 5)
    assert not view.flags.aligned
    out = owned(view)
    assert out.flags.aligned and out.flags.owndata and out.flags.c_contiguous
    np.testing.assert_array_equal(out, view)
    assert owned(out) is out  # already owned: no second copy


def test_a_block_unpickled_from_misaligned_frames_owns_aligned_memory():
    """Dask sends a block's arrays as out-of-band frames, and unpickles them as views at
    whatever offset the frame landed: the block is rebuilt in owned, aligned memory."""
    import pickle

    from pipeline.blocks import Block

    rng = np.random.default_rng(1)
    block = Block(rng.standard_normal((50, 7)).astype(np.float32),
                  rng.standard_normal((50, 1)).astype(np.float32))
    buffers = []
    data = pickle.dumps(block, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 2  # the arrays travel out of band, as in a Dask message
    frames = []
    for b in buffers:  # each frame one byte off an aligned address
        raw = b.raw()
        mem = np.zeros(raw.nbytes + 1, dtype=np.uint8)
        mem[1:] = np.frombuffer(raw, dtype=np.uint8)
        frames.append(memoryview(mem)[1:])
    out = pickle.loads(data, buffers=frames)
    assert type(out) is Block
    for got, sent in zip(out, block, strict=True):
        assert got.flags.aligned and got.flags.owndata and got.flags.c_contiguous
        np.testing.assert_array_equal(got, sent)


def test_a_block_moved_to_another_worker_owns_aligned_memory(client):
    """A second ensemble member trains on a copy of the block on another worker: the copy owns
    aligned memory too (a view into the message frame made its epochs up to 30% slower)."""
    from pipeline.cluster import workers_info  # (fetched now, not the cached identity)

    X = np.random.default_rng(2).standard_normal((3001, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    blocks = to_blocks(client, client.persist(da.from_array(X, chunks=(3001, -1))),
                       client.persist(da.from_array(y, chunks=3001)), classification=True,
                       dtype="float32")
    (block,) = blocks.futures
    holders = client.who_has([block])[block.key]
    others = sorted(set(workers_info(client)) - set(holders))
    assert others, "the session cluster has two workers"
    moved = client.submit(_layout, block, workers=others[:1], allow_other_workers=False,
                          pure=False)
    assert moved.result() == [(True, True, True)] * 2


def test_split_blocks_holds_out_each_blocks_own_rows_and_counts_them(client):
    """Every block draws its own held-out rows (seeded by its index) and the BlockSet's row
    counts are the blocks' real sizes."""
    from pipeline.blocks import split_blocks

    X = np.arange(2400, dtype=np.float64).reshape(600, 4)
    y = (X[:, 0] % 3 == 0).astype(int)
    blocks = to_blocks(client, da.from_array(X, chunks=(150, -1)), da.from_array(y, chunks=150),
                       classification=True, dtype="float64", min_block_rows=1)
    train, valid = split_blocks(client, blocks, 0.2, 0)
    shapes = client.gather(client.map(lambda b: b.X.shape[0], train.futures))
    vshapes = client.gather(client.map(lambda b: b.X.shape[0], valid.futures))
    assert train.rows == shapes and valid.rows == vshapes
    assert all(t + v == 150 for t, v in zip(shapes, vshapes, strict=True))
    masks = client.gather(client.map(lambda b: (b.X[:, 0] // 4) % 150, valid.futures))
    assert len({tuple(m) for m in masks}) == 4  # four different held-out sets


# --- cuDF partitions (tests/fake_cudf.py: device arrays are array_api_strict on "device1") ---

def _block_from(x_part, y_part):
    from pipeline.blocks import _block_summary, _raw_block

    raw = _raw_block(x_part, y_part, "float32")
    summary = _block_summary(raw, want_labels=True)
    return summary, _final_block(raw, summary["labels"], "float32")


@pytest.mark.parametrize("labels", [
    pd.Series(["spam", "ham", "eggs", "ham", "spam"], dtype=object),
    pd.Series(["spam", "ham", "eggs", "ham", "spam"], dtype="category"),
    pd.Series([3, 1, 2, 1, 3], dtype="Int64"),  # nullable dtype, no nulls: stays on the device
    pd.Series([1, 0, 0, 1, 1]),
])
def test_cudf_partitions_make_the_blocks_pandas_makes(labels):
    """String, categorical and nullable labels of a cuDF partition used to go through
    ``to_cupy()``, which raises for them inside the task; now they reach the host and give
    the block the pandas partition gives, on the features' device."""
    from fake_cudf import DataFrame, Series

    from pipeline.backend import to_host

    xs = pytest.importorskip("array_api_strict")
    dev = xs.Device("device1")
    X = pd.DataFrame({"a": np.arange(5.0), "b": np.array([2, 7, 1, 8, 2])})
    want_summary, want = _block_from(X, labels)
    got_summary, got = _block_from(DataFrame(dict(X.items()), dev), Series(labels, dev))
    assert got.X.device == dev and got.Y.device == dev
    np.testing.assert_array_equal(to_host(got.X), want.X)
    np.testing.assert_array_equal(to_host(got.Y), want.Y)
    assert got_summary["labels"].tolist() == want_summary["labels"].tolist()
    assert got_summary["y_null"] == want_summary["y_null"] == 0


@pytest.mark.parametrize("labels", [
    pd.Series(["spam", None, "ham"], dtype=object),
    pd.Series([1, None, 0], dtype="Int64"),
])
def test_missing_labels_are_counted_not_crashed_on(labels):
    from fake_cudf import DataFrame, Series

    from pipeline.blocks import _block_summary, _raw_block

    xs = pytest.importorskip("array_api_strict")
    dev = xs.Device("device1")
    X = pd.DataFrame({"a": np.arange(3.0)})
    for x_part, y_part in ((X, labels), (DataFrame(dict(X.items()), dev), Series(labels, dev))):
        summary = _block_summary(_raw_block(x_part, y_part, "float32"), want_labels=True)
        assert summary["y_null"] == 1
        assert len(summary["labels"]) == 2


def test_string_labels_with_missing_values_get_the_missing_value_error(client):
    # np.unique cannot order None among strings: this used to be a TypeError inside a task
    X = pd.DataFrame({"a": np.arange(6.0)})
    y = pd.Series(["a", "b", None, "a", "b", "a"], dtype=object)
    with pytest.raises(ValueError, match="missing values"):
        to_blocks(client, X, y, classification=True, npartitions=2)


# --- declared partition lengths (a dask Array): planned and submitted at once -------------

def _blocks_on_host(client, blocks):
    return [(np.asarray(b.X), np.asarray(b.Y)) for b in client.gather(blocks.futures)]


@pytest.mark.parametrize(("chunks", "min_rows"), [(150, 1), (100, 250), (600, None)])
@pytest.mark.parametrize("target", ["discovered", "given", "regression"])
def test_declared_lengths_make_the_blocks_written_out_in_numpy(client, chunks, min_rows, target):
    """A dask Array declares its partitions' lengths, so its blocks are planned without reading
    a partition first. Oracle: the coalescing groups and the encoding written out in NumPy
    (the float32 cast, one-hot columns of the sorted classes, regression as a column); the
    same data as a dask DataFrame (lengths known once read) takes the other path to the same
    blocks."""
    import dask.dataframe as dd

    rng = np.random.default_rng(1)
    X = rng.standard_normal((600, 3))
    labels = np.array(["c", "a", "b"])[rng.integers(0, 3, 600)]
    y = X[:, 0] * 2.0 if target == "regression" else labels
    kw = {"classification": target != "regression", "min_block_rows": min_rows,
          "classes": np.array(["a", "b", "c", "d"]) if target == "given" else None}
    blocks = to_blocks(client, da.from_array(X, chunks=(chunks, -1)),
                       da.from_array(y, chunks=chunks), **kw)
    classes = kw["classes"] if target == "given" else np.array(["a", "b", "c"])
    bounds = np.cumsum([0] + [sum(chunks for _ in g)
                              for g in coalesce_groups([chunks] * (600 // chunks), min_rows or 0)])
    got = _blocks_on_host(client, blocks)
    assert blocks.rows == list(np.diff(bounds)) and len(got) == len(bounds) - 1
    for (bx, by), lo, hi in zip(got, bounds[:-1], bounds[1:], strict=True):
        np.testing.assert_array_equal(bx, X[lo:hi].astype(np.float32))
        if target == "regression":
            want_y = y[lo:hi, None].astype(np.float32)
        else:
            want_y = (y[lo:hi, None] == classes[None, :]).astype(np.float32)
        np.testing.assert_array_equal(by, want_y)
    if target != "regression":
        assert blocks.classes.tolist() == classes.tolist()
        assert blocks.n_outputs == len(classes)
    frame = dd.from_pandas(pd.DataFrame(X), npartitions=600 // chunks, sort=False)
    series = dd.from_pandas(pd.Series(y), npartitions=600 // chunks, sort=False)
    other = to_blocks(client, frame, series, **kw)
    assert other.rows == blocks.rows and other.n_outputs == blocks.n_outputs
    for a, b in zip(_blocks_on_host(client, other), got, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize(("y", "match"), [
    (np.array([1.0, np.nan] * 100), "missing values"),
    (np.ones(200), "single class"),
    (np.array(["a", "b"] * 100), "not among the classes"),
])
def test_declared_lengths_keep_the_label_errors(client, y, match):
    classes = np.array(["a", "c"]) if y.dtype.kind == "U" else None
    X = da.from_array(np.zeros((200, 2)), chunks=(50, -1))
    with pytest.raises(ValueError, match=match):
        to_blocks(client, X, da.from_array(y, chunks=50), classification=True,
                  classes=classes, min_block_rows=1)
