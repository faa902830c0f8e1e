"""Image input (pipeline.images) and in-model preprocessing (pipeline.image_prep).

Oracles: Pillow decoding each file directly, numpy.load, NumPy statistics, a brute-force search
over every crop offset and flip, and central finite differences for the layers' backward."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import pipeline as pl
from pipeline.backend import to_host
from pipeline.image_prep import channel_stats, fit_normalize
from pipeline.io import BadRowsError, quarantine_report
from pipeline.nn import Augment, Context, Normalize, Rescale, augment

CLASSES = ("cat", "dog", "owl")


def _pixels(k: int, i: int, shape=(6, 7, 3)) -> np.ndarray:
    """A deterministic image whose first pixel encodes its class ``k`` and index ``i``."""
    img = np.random.default_rng(100 * k + i).integers(0, 256, shape, dtype=np.uint8)
    img[0, 0] = 40 * k + i
    return img


def _folder(tmp_path, per_class=(4, 3, 5), shape=(6, 7, 3), fmt="png"):
    root = tmp_path / "imgs"
    for k, (name, count) in enumerate(zip(CLASSES, per_class, strict=True)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.squeeze(_pixels(k, i, shape))).save(root / name / f"{i:02d}.{fmt}")
    return root


def _oracle(root, mode):
    """Every image file under ``root``, decoded by Pillow, with its folder's name."""
    out = []
    for name in sorted(p.name for p in root.iterdir()):
        for f in sorted((root / name).iterdir()):
            arr = np.asarray(Image.open(f).convert(mode))
            out.append((arr if arr.ndim == 3 else arr[..., None], name))
    return out


def test_folder_unshuffled_matches_pillow_in_sorted_order(tmp_path):
    root = _folder(tmp_path)
    X, y = pl.read_images(root, partition_size=5, shuffle=False)
    assert X.dtype == np.uint8 and X.shape == (12, 6, 7, 3) and X.chunks[0] == (5, 5, 2)
    Xc, yc = dask.compute(X, y)
    expected = _oracle(root, "RGB")
    np.testing.assert_array_equal(Xc, np.stack([a for a, _ in expected]))
    np.testing.assert_array_equal(yc, [n for _, n in expected])


def test_folder_shuffled_keeps_images_with_their_labels_and_mixes_partitions(tmp_path):
    root = _folder(tmp_path)
    X, y = pl.read_images(root, partition_size=4, random_state=3)
    Xc, yc = dask.compute(X, y)
    got = sorted((a.tobytes(), n) for a, n in zip(Xc, yc, strict=True))
    assert got == sorted((a.tobytes(), n) for a, n in _oracle(root, "RGB"))
    parts = [set(yc[a : a + 4]) for a in range(0, 12, 4)]
    assert any(len(p) > 1 for p in parts)
    again = dask.compute(*pl.read_images(root, partition_size=4, random_state=3))
    np.testing.assert_array_equal(again[0], Xc)


def test_partition_size_in_bytes_counts_decoded_bytes(tmp_path):
    root = _folder(tmp_path)  # 6 * 7 * 3 = 126 bytes per image
    X, _ = pl.read_images(root, partition_size="500B")
    assert X.chunks[0] == (3, 3, 3, 3)


@pytest.mark.parametrize(("shape", "color_mode", "mode", "channels"), [
    ((6, 7), "auto", "L", 1),
    ((6, 7, 3), "grayscale", "L", 1),
    ((6, 7), "rgb", "RGB", 3),
    ((6, 7, 4), "auto", "RGB", 3),  # RGBA: the alpha channel is dropped
])
def test_colour_modes(tmp_path, shape, color_mode, mode, channels):
    root = _folder(tmp_path, shape=shape)
    X, _ = pl.read_images(root, color_mode=color_mode, shuffle=False)
    assert X.shape == (12, 6, 7, channels)
    np.testing.assert_array_equal(X.compute(), np.stack([a for a, _ in _oracle(root, mode)]))


def test_size_resizes_with_pillow_bilinear(tmp_path):
    root = _folder(tmp_path, fmt="jpg")
    X, _ = pl.read_images(root, size=(4, 5), shuffle=False)
    expected = [
        np.asarray(Image.open(f).convert("RGB").resize((5, 4), Image.Resampling.BILINEAR))
        for name in CLASSES for f in sorted((root / name).iterdir())
    ]
    np.testing.assert_array_equal(X.compute(), np.stack(expected))


def _corrupt(root):
    bad = root / "dog" / "99.png"
    good = (root / "dog" / "00.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a valid header, truncated pixel data
    junk = root / "owl" / "98.jpg"
    junk.write_bytes(b"not an image at all")
    return str(bad), str(junk)


def test_corrupt_file_raises_naming_it(tmp_path):
    root = _folder(tmp_path)
    bad, junk = _corrupt(root)
    X, _y = pl.read_images(root, partition_size=100, shuffle=False)
    with pytest.raises(BadRowsError) as info:
        X.compute()
    assert info.value.file in (bad, junk) and info.value.file in str(info.value)
    assert info.value.reason == "decode"
    assert "on_bad_rows='quarantine'" in str(info.value)


def test_corrupt_file_is_quarantined_with_path_and_reason(tmp_path):
    root = _folder(tmp_path)
    bad, junk = _corrupt(root)
    qdir = tmp_path / "bad"
    X, y = pl.read_images(root, partition_size=4, on_bad_rows="quarantine", quarantine_path=qdir)
    assert np.isnan(X.shape[0])  # lengths are known only once decoded
    Xc, yc = dask.compute(X, y)
    good = sorted((a.tobytes(), n) for a, n in zip(Xc, yc, strict=True))
    files = [(k, i) for k, c in enumerate((4, 3, 5)) for i in range(c)]
    assert good == sorted((_pixels(k, i).tobytes(), CLASSES[k]) for k, i in files)
    report = quarantine_report(qdir)
    assert report["rows_quarantined"] == 2 and report["rows_kept"] == 12 and report["complete"]
    assert report["files"] == sorted([bad, junk]) and report["by_reason"] == {"decode": 2}
    side = pd.concat(pd.read_parquet(p) for p in sorted(qdir.glob("part-*.parquet")))
    assert set(side["source_file"]) == {bad, junk}
    assert side["raw"].str.contains("cannot decode").all()


def test_image_of_another_size_is_a_bad_row(tmp_path):
    root = _folder(tmp_path)
    odd = root / "cat" / "50.png"
    Image.fromarray(_pixels(0, 50, (9, 7, 3))).save(odd)
    X, _ = pl.read_images(root, shuffle=False)
    with pytest.raises(BadRowsError, match="size=") as info:
        X.compute()
    assert info.value.file == str(odd) and info.value.reason == "size"
    X, _ = pl.read_images(root, on_bad_rows="quarantine", quarantine_path=tmp_path / "q")
    assert len(X.compute()) == 12
    assert quarantine_report(tmp_path / "q")["by_reason"] == {"size": 1}
    assert pl.read_images(root, size=(6, 7))[0].compute().shape == (13, 6, 7, 3)


def test_unreadable_first_file(tmp_path):
    root = _folder(tmp_path)
    first = root / "cat" / "00.png"
    first.write_bytes(b"garbage")
    with pytest.raises(BadRowsError, match=str(first)):
        pl.read_images(root, shuffle=False)
    X, _ = pl.read_images(root, shuffle=False, on_bad_rows="quarantine",
                          quarantine_path=tmp_path / "q")
    assert X.compute().shape == (11, 6, 7, 3)


def test_npy_file_and_labels_are_read_lazily_in_partitions(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 5, 4), dtype=np.uint8)
    labels = np.arange(10) % 3
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    X, y = pl.read_images(tmp_path / "x.npy", tmp_path / "y.npy", partition_size=4)
    assert X.shape == (10, 5, 4, 1) and X.chunks[0] == (4, 4, 2) and y.chunks == X.chunks[:1]
    Xc, yc = dask.compute(X, y)
    np.testing.assert_array_equal(Xc, np.load(tmp_path / "x.npy")[..., None])
    np.testing.assert_array_equal(yc, labels)
    assert Xc.flags.owndata or Xc.base is not None  # a real array, not a memory map
    assert not isinstance(Xc, np.memmap)


def test_in_memory_array(tmp_path):
    images = np.random.default_rng(1).normal(size=(7, 3, 3, 3)).astype(np.float32)
    X, y = pl.read_images(images, partition_size=3)
    assert y is None and X.dtype == np.float32 and X.chunks[0] == (3, 3, 1)
    np.testing.assert_array_equal(X.compute(), images)
    with pytest.raises(ValueError, match="one label per image"):
        pl.read_images(images, labels=[0, 1])


def test_zarr_store_or_a_clear_message(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    try:
        import zarr
    except ImportError:
        with pytest.raises(ImportError, match="zarr package"):
            pl.read_images(tmp_path / "x.zarr")
        return
    zarr.save(str(tmp_path / "x.zarr"), images)
    np.testing.assert_array_equal(pl.read_images(tmp_path / "x.zarr")[0].compute(), images)


def test_invalid_arguments_say_why(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(ValueError, match="on_bad_rows"):
        pl.read_images(root, on_bad_rows="skip")
    with pytest.raises(ValueError, match="quarantine_path"):
        pl.read_images(root, on_bad_rows="quarantine")
    with pytest.raises(ValueError, match="labels= is for array sources"):
        pl.read_images(root, labels=[1])
    with pytest.raises(ValueError, match="size= and color_mode="):
        pl.read_images(np.zeros((2, 3, 3), np.uint8), size=(2, 2))
    with pytest.raises(ValueError, match="images must have shape"):
        pl.read_images(np.zeros((2, 3), np.uint8))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
        pl.read_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="partition_size"):
        pl.read_images(root, partition_size=0)


# ---------------------------------------------------------------------------------------------
# Preprocessing layers and augmentation.


def test_channel_stats_match_numpy_in_one_pass():
    rng = np.random.default_rng(3)
    images = (1e6 + rng.normal(size=(50, 4, 3, 2))).astype(np.float64)
    X = pl.read_images(images, partition_size=7)[0]
    mean, std = channel_stats(X)
    flat = images.reshape(-1, 2)
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(std, flat.std(axis=0), rtol=1e-9)
    layer = fit_normalize(X)
    y, _ = layer.forward([], images, Context())
    np.testing.assert_allclose(y, (images - flat.mean(axis=0)) / flat.std(axis=0), rtol=1e-8,
                               atol=1e-8)


def test_normalize_constant_channel_gets_unit_std():
    images = np.zeros((4, 2, 2, 3), np.uint8)
    images[..., 1] = np.arange(4)[:, None, None]
    layer = fit_normalize(images)
    assert layer.std[0] == 1.0 and layer.std[2] == 1.0 and layer.std[1] > 0


@pytest.mark.parametrize("layer", [Rescale(0.5, 0.25), Normalize((1.0, -2.0), (2.0, 0.5)),
                                   Augment(crop_padding=1)], ids=["rescale", "normalize",
                                                                  "augment"])
def test_preprocessing_backward_matches_central_differences(layer, backend):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 4, 5, 2))
    r = rng.normal(size=x.shape)
    ctx = Context(training=True, key=(7, 1, 2, 3))

    def loss(xx):
        return float(np.sum(r * to_host(layer.forward([], backend.asarray(xx), ctx)[0])))

    _y, cache = layer.forward([], backend.asarray(x), ctx)
    dx = to_host(layer.backward([], cache, backend.asarray(r), ctx, []))
    numeric = np.zeros_like(x)
    eps = 1e-6
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (loss(up) - loss(down)) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


def test_rescale_and_normalize_cast_pixels_to_float(backend):
    pixels = np.random.default_rng(5).integers(0, 256, (2, 3, 3, 1), dtype=np.uint8)
    x = backend.asarray(pixels)
    y, _ = Rescale().forward([], x, Context())
    assert y.dtype == backend.xp.float32
    np.testing.assert_allclose(to_host(y), pixels / np.float32(255), rtol=1e-6)
    z, _ = Normalize((100.0,), (50.0,)).forward([], x, Context())
    assert z.dtype == backend.xp.float32
    np.testing.assert_allclose(to_host(z), (pixels - 100.0) / 50.0, rtol=1e-6)


def _brute_force(x, out, p):
    """For each sample: every (top, left, flip) whose crop of the zero-padded image gives out."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    found = []
    for s in range(n):
        hits = [
            (t, left, flip)
            for t in range(2 * p + 1)
            for left in range(2 * p + 1)
            for flip in (False, True)
            if np.array_equal(
                padded[s, t : t + h, left : left + w][:, ::-1] if flip
                else padded[s, t : t + h, left : left + w],
                out[s],
            )
        ]
        found.append(hits)
    return found


def test_augment_is_a_crop_and_flip_reproducible_per_key(backend):
    rng = np.random.default_rng(6)
    x = rng.integers(1, 256, (16, 6, 5, 3)).astype(np.uint8)
    key = (11, 2, 3, 4)
    out = to_host(augment(backend.xp, backend.asarray(x), key, crop_padding=2))
    assert out.shape == x.shape and out.dtype == np.uint8
    found = _brute_force(x, out, 2)
    assert all(len(h) == 1 for h in found)  # a crop of the padded image, possibly mirrored
    np.testing.assert_array_equal(to_host(augment(backend.xp, backend.asarray(x), key,
                                                  crop_padding=2)), out)
    other = to_host(augment(backend.xp, backend.asarray(x), (11, 2, 3, 5), crop_padding=2))
    assert not np.array_equal(other, out)
    np.testing.assert_array_equal(augment(np, x, key, crop_padding=2), out)  # any backend


def test_augment_draws_cover_every_offset_and_both_flips():
    x = np.random.default_rng(7).integers(1, 256, (64, 5, 5, 1)).astype(np.uint8)
    seen = set()
    for step in range(4):
        out = augment(np, x, (0, 0, 0, step), crop_padding=1)
        seen |= {h[0] for h in _brute_force(x, out, 1)}
    assert seen == {(t, left, f) for t in range(3) for left in range(3) for f in (False, True)}
    unflipped = augment(np, x, (0, 0, 0, 0), crop_padding=0, flip=False)
    np.testing.assert_array_equal(unflipped, x)


def test_augment_layer_is_the_identity_outside_training():
    x = np.random.default_rng(8).normal(size=(2, 4, 4, 1))
    y, _ = Augment().forward([], x, Context(training=False, key=(0, 0, 0, 0)))
    np.testing.assert_array_equal(y, x)
    y, _ = Augment(crop_padding=1).forward([], x, Context(training=True, key=(0, 0, 0, 0)))
    np.testing.assert_array_equal(y, augment(np, x, (0, 0, 0, 0), crop_padding=1))


def test_read_on_a_cluster_decodes_on_workers_and_names_the_bad_file(tmp_path, client):
    root = _folder(tmp_path)
    X, y = pl.read_images(root, partition_size=5)
    Xc, yc = client.compute([X, y], sync=True)
    assert sorted((a.tobytes(), n) for a, n in zip(Xc, yc, strict=True)) == sorted(
        (a.tobytes(), n) for a, n in _oracle(root, "RGB"))
    bad, junk = _corrupt(root)
    X, _ = pl.read_images(root, partition_size=5)
    with pytest.raises(BadRowsError) as info:
        client.compute(X, sync=True)
    assert info.value.file in (bad, junk) and info.value.reason == "decode"


def test_fsspec_url_folder(tmp_path):
    import io
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    base = f"/imgs-{uuid.uuid4().hex}"
    expected = {}
    for k, name in enumerate(CLASSES[:2]):
        for i in range(3):
            buf = io.BytesIO()
            Image.fromarray(_pixels(k, i)).save(buf, format="PNG")
            fs.pipe(f"{base}/{name}/{i}.png", buf.getvalue())
            expected[_pixels(k, i).tobytes()] = name
    fs.pipe(f"{base}/dog/bad.png", b"xx")
    try:
        X, y = pl.read_images(f"memory://{base}", on_bad_rows="quarantine",
                              quarantine_path=f"memory://{base}-q")
        # memory:// lives in this process: not on the workers of a session client, if any.
        Xc, yc = dask.compute(X, y, scheduler="sync")
        assert {a.tobytes(): n for a, n in zip(Xc, yc, strict=True)} == expected
        assert quarantine_report(f"memory://{base}-q")["files"] == [f"memory://{base}/dog/bad.png"]
    finally:
        fs.rm(base, recursive=True)
        fs.rm(f"{base}-q", recursive=True)
