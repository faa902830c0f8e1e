"""Synthetic tabular data for demos, tests and benchmarks.

Rows look like a customer table: numeric features on very different scales (an age, a
heavy-tailed income, a uniform score, a near-constant column, Student-t noise ...), two
categorical columns with unequal base rates (``city``, ``segment``), about 2% of the numeric
values missing, and a binary label ``y`` whose log-odds mix a linear part, an interaction, a
threshold, a U-shape and per-category effects. The Bayes accuracy (knowing the true
probabilities) is about 0.87; logistic regression on standardised, imputed, one-hot features gets
about 0.80 and a small MLP about 0.85 (scikit-learn, 100k training rows).

Every chunk is drawn from its own generator, ``np.random.default_rng([random_state, index])``, so
chunk ``i`` is the same whichever process writes it and however many chunks are written in
parallel.

Example
-------
>>> from pipeline.datasets import make_chunk
>>> df = make_chunk(0, 1000)
>>> df.shape
(1000, 19)
>>> sorted(df["y"].unique().tolist())
[0, 1]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

__all__ = [
    "CITIES",
    "SEGMENTS",
    "feature_names",
    "make_chunk",
    "make_tabular",
    "write_demo_dataset",
    "write_demo_images",
]

# (name, base rate, effect on the log-odds)
CITIES = (
    ("Amsterdam", 0.26, 0.0),
    ("Berlin", 0.20, 0.5),
    ("Chicago", 0.15, -0.4),
    ("Delhi", 0.12, 0.9),
    ("Lagos", 0.10, -0.8),
    ("Lima", 0.08, 0.3),
    ("Osaka", 0.06, -1.2),
    ("Sydney", 0.03, 1.4),
)
# (name, base rate, effect on the log-odds, factor on the x00 slope)
SEGMENTS = (
    ("consumer", 0.55, 0.0, 1.0),
    ("small_business", 0.25, 0.4, 0.5),
    ("enterprise", 0.15, -0.6, 1.6),
    ("public", 0.05, 0.8, 1.0),
)
_EXTRA_LEVELS = ("a", "b", "c", "d", "e")

# Scale and shift of the log-odds: Bayes accuracy ~0.87, ~45% positives (tuned on 400k rows).
_SIGNAL = 1.8
_INTERCEPT = -1.5


def feature_names(n_numeric: int = 16, n_categorical: int = 2) -> list[str]:
    """Column names of :func:`make_chunk`'s output, label ``y`` last."""
    cats = ["city", "segment", *(f"cat{i}" for i in range(2, n_categorical))][:n_categorical]
    return [f"x{i:02d}" for i in range(n_numeric)] + cats + ["y"]


def _numeric(rng: np.random.Generator, n: int, n_numeric: int) -> tuple[dict, dict]:
    """Features (as observed) and the standardised latents the label depends on."""
    z = rng.standard_normal((n, max(n_numeric, 5)))
    latent = {
        "lin": z[:, 0],
        "age": z[:, 1],
        "income": z[:, 2],
        "score": rng.random(n),
        "u": z[:, 4],
    }
    shapes = [
        z[:, 0].copy(),  # x00: standard normal (copied: missing values go in later)
        40.0 + 12.0 * z[:, 1],  # x01: an age
        30_000.0 * np.exp(0.8 * z[:, 2]),  # x02: heavy-tailed income (log-normal)
        100.0 * latent["score"],  # x03: uniform score in [0, 100)
        5.0 + 2.0 * z[:, 4],  # x04: normal with an offset
        10.0 * rng.standard_t(3, n),  # x05: Student-t(3) noise, heavy tails
        1.0 + 1e-4 * rng.standard_normal(n),  # x06: near-constant
        rng.exponential(3.0, n),  # x07: exponential noise
    ]
    features = {}
    for i in range(n_numeric):
        if i < len(shapes):
            features[f"x{i:02d}"] = shapes[i]
        elif i % 3 == 0:  # correlated with x00
            features[f"x{i:02d}"] = 0.7 * z[:, 0] + 0.7 * rng.standard_normal(n)
        else:  # noise on its own scale and offset
            scale = 10.0 ** (i % 5 - 2)
            features[f"x{i:02d}"] = 100.0 * (i % 4) + scale * rng.standard_normal(n)
    return features, latent


def make_chunk(
    index: int,
    n_rows: int,
    *,
    n_numeric: int = 16,
    n_categorical: int = 2,
    missing_rate: float = 0.02,
    random_state: int = 0,
) -> pd.DataFrame:
    """Chunk ``index`` of the synthetic dataset: ``n_rows`` rows drawn from
    ``np.random.default_rng([random_state, index])``.

    Columns: ``x00`` ... (float64, each value missing with probability ``missing_rate``),
    ``city``, ``segment``, ``cat2`` ... (strings, never missing) and ``y`` (int64, 0/1).
    """
    if n_numeric < 1:
        raise ValueError(f"n_numeric must be >= 1, got {n_numeric}")
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate}")
    rng = np.random.default_rng([random_state, index])
    features, latent = _numeric(rng, n_rows, n_numeric)

    city = rng.choice(len(CITIES), n_rows, p=[c[1] for c in CITIES])
    segment = rng.choice(len(SEGMENTS), n_rows, p=[s[1] for s in SEGMENTS])
    seg_slope = np.array([s[3] for s in SEGMENTS])[segment]
    logit = (
        1.6 * seg_slope * latent["lin"]  # linear, with a slope that depends on the segment
        + 0.7 * latent["lin"] * latent["age"]  # interaction
        + 1.4 * (latent["score"] > 0.7)  # threshold
        - 0.4 * (latent["u"] ** 2 - 1.0)  # U-shape ...
        + 0.6 * latent["u"]  # ... off centre
        + 1.0 * latent["income"]  # log-linear in the heavy-tailed income
        + np.array([c[2] for c in CITIES])[city]
        + np.array([s[2] for s in SEGMENTS])[segment]
    )
    p = 1.0 / (1.0 + np.exp(-(_SIGNAL * logit + _INTERCEPT)))
    y = (rng.random(n_rows) < p).astype(np.int64)

    columns: dict[str, object] = {}
    for name, values in features.items():
        values[rng.random(n_rows) < missing_rate] = np.nan
        columns[name] = values
    categorical = [(city, [c[0] for c in CITIES]), (segment, [s[0] for s in SEGMENTS])]
    for _ in range(2, n_categorical):  # extra columns without effect on the label
        categorical.append((rng.integers(0, len(_EXTRA_LEVELS), n_rows), list(_EXTRA_LEVELS)))
    cat_names = feature_names(0, n_categorical)[:-1]
    for name, (codes, levels) in zip(cat_names, categorical, strict=False):
        columns[name] = pd.Categorical.from_codes(codes, levels).astype("str")
    columns["y"] = y
    return pd.DataFrame(columns)


def _chunk_sizes(n_rows: int, n_chunks: int) -> list[int]:
    base, extra = divmod(n_rows, n_chunks)
    return [base + (i < extra) for i in range(n_chunks)]


def make_tabular(
    n_rows: int = 1_000_000,
    *,
    n_numeric: int = 16,
    n_categorical: int = 2,
    missing_rate: float = 0.02,
    random_state: int = 0,
    chunk_rows: int | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield the synthetic dataset as pandas DataFrames of ``chunk_rows`` rows (the last may be
    shorter); chunk ``i`` is ``make_chunk(i, ...)``. ``chunk_rows=None``: one chunk.

    >>> import pandas as pd
    >>> df = pd.concat(make_tabular(10_000, chunk_rows=4_000), ignore_index=True)
    >>> len(df)
    10000
    """
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    chunk_rows = n_rows if chunk_rows is None else chunk_rows
    if chunk_rows < 1 and n_rows > 0:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for index, start in enumerate(range(0, n_rows, max(chunk_rows, 1))):
        yield make_chunk(
            index,
            min(chunk_rows, n_rows - start),
            n_numeric=n_numeric,
            n_categorical=n_categorical,
            missing_rate=missing_rate,
            random_state=random_state,
        )


def write_demo_dataset(
    path,
    *,
    n_rows: int = 1_000_000,
    n_partitions: int = 16,
    random_state: int = 0,
    format: str = "parquet",
) -> list[str]:
    """Write the synthetic dataset as ``part-00000.parquet`` ... (or ``.csv``) under directory
    ``path`` (local or fsspec URL): ``n_partitions`` files of nearly equal row counts, file ``i``
    holding ``make_chunk(i, ...)``. Returns the written paths in order.

    Parquet files are written by pyarrow (snappy, one row group per file) from a few threads;
    1M rows take about 3 s on a 2-core machine.
    """
    if format not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {format!r}")
    if n_partitions < 1:
        raise ValueError(f"n_partitions must be >= 1, got {n_partitions}")
    fs, root = url_to_fs(os.fspath(path))
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    sizes = _chunk_sizes(n_rows, n_partitions)
    targets = [f"{root}/part-{i:05d}.{format}" for i in range(n_partitions)]

    def write(i: int) -> None:
        chunk = make_chunk(i, sizes[i], random_state=random_state)
        if format == "parquet":
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            with fs.open(targets[i], "wb") as f:
                pq.write_table(table, f, row_group_size=max(sizes[i], 1))
        else:
            with fs.open(targets[i], "w") as f:
                chunk.to_csv(f, index=False)

    # numpy and pyarrow release the GIL for most of the work
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(n_partitions)))
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    return [t if local else fs.unstrip_protocol(t) for t in targets]


def write_demo_images(path: str | os.PathLike[str], *, scale: int = 2) -> int:
    """Write scikit-learn's handwritten digits (1,797 8×8 grayscale images, shipped with
    scikit-learn) as PNG files in one sub-folder per class under ``path``, each pixel
    ``scale`` × ``scale`` (so the demo reads real image files with :func:`pipeline.read_images`).
    Returns the number of files written."""
    from PIL import Image
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    pixels = np.clip(X * 16, 0, 255).astype(np.uint8).reshape(-1, 8, 8)
    root = Path(path)
    for i, (img, label) in enumerate(zip(pixels, y, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        big = np.kron(img, np.ones((scale, scale), dtype=np.uint8))
        Image.fromarray(big, mode="L").save(folder / f"{i:05d}.png")
    return len(y)
