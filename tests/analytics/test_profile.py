"""analytics.profile against pandas (the oracle) and against its own stated error bounds."""

from __future__ import annotations

import itertools
import json
import math
import re

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analytics.profile import HyperLogLog, QuantileSketch, profile

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(pdf: pd.DataFrame, sizes) -> dd.DataFrame:
    """A Dask DataFrame whose partitions have exactly ``sizes`` rows (zeros allowed)."""
    starts = np.cumsum([0, *sizes])
    pieces = [pdf.iloc[a:b] for a, b in itertools.pairwise(starts)]
    return dd.from_delayed([dask.delayed(p) for p in pieces], meta=pdf.iloc[:0], verify_meta=False)


@st.composite
def frames(draw):
    n = draw(st.integers(0, 60))
    k = draw(st.integers(1, 6))
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=k - 1, max_size=k - 1)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.normal(size=n) * 10 + 3
    x[rng.random(n) < 0.2] = np.nan
    words = np.array(["red", "green", "blue", None], dtype=object)
    pdf = pd.DataFrame(
        {
            "x": x,
            "i": rng.integers(-5, 5, n),
            "ni": pd.array(rng.integers(0, 3, n), dtype="Int64"),
            "s": pd.Series(words[rng.integers(0, 4, n)], dtype="str"),
            "b": rng.random(n) < 0.3,
            "t": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 5, n), unit="D"),
        }
    )
    pdf.loc[rng.random(n) < 0.1, "ni"] = pd.NA
    return pdf, sizes


@SETTINGS
@given(data=frames())
def test_column_statistics_equal_pandas(data):
    pdf, sizes = data
    p = profile(split(pdf, sizes), split_every=2)
    assert p.n_rows == len(pdf)
    assert p.n_partitions == len(sizes)
    for name in pdf.columns:
        col, s = p.columns[name], pdf[name]
        assert col["count"] == s.count()
        assert col["nulls"] == s.isna().sum()
        assert col["distinct_exact"] and col["distinct"] == s.nunique()
        expected_top = s.value_counts()
        for value, count in col["top"]:
            assert expected_top[value] == count
        assert [c for _, c in col["top"]] == expected_top.head(10).tolist()
    for name in ("x", "i", "ni"):
        col, s = p.columns[name], pdf[name].astype("float64")
        assert col["mean"] == pytest.approx(s.mean(), rel=1e-12, abs=1e-12, nan_ok=True)
        # ddof=1, like pandas
        assert col["std"] == pytest.approx(s.std(), rel=1e-10, abs=1e-12, nan_ok=True)
        if s.count():
            assert col["min"] == pdf[name].min() and col["max"] == pdf[name].max()
        else:
            assert col["min"] is None and col["max"] is None
    if len(pdf):
        assert p.columns["t"]["min"] == pdf["t"].min()


@SETTINGS
@example(n=340, n_partitions=14, sketch_size=8, ties=False, split_every=2)
@given(
    n=st.integers(1, 4_000),
    n_partitions=st.integers(1, 40),
    sketch_size=st.sampled_from([8, 32, 100]),
    ties=st.booleans(),
    split_every=st.sampled_from([2, 8]),
)
def test_quantile_ranks_and_histogram_within_the_stated_bounds(
    n, n_partitions, sketch_size, ties, split_every
):
    rng = np.random.default_rng(n)
    x = rng.lognormal(size=n)
    if ties:
        x = np.round(x, 1)
    sizes = np.diff(np.sort(np.r_[0, rng.integers(0, n + 1, n_partitions - 1), n]))
    quantiles = (0.0, 0.01, 0.25, 0.5, 0.9, 1.0)
    p = profile(
        split(pd.DataFrame({"x": x}), sizes),
        quantiles=quantiles,
        sketch_size=sketch_size,
        split_every=split_every,
        bins=7,
    )
    col = p.columns["x"]
    error = col["quantile_rank_error"] * n
    # the tracked error is a float sum of per-level errors: it may reach the bound to an ulp
    assert col["quantile_rank_error"] <= p.settings["rank_error_bound"] * (1 + 1e-12)
    for q in quantiles:
        v = col["quantiles"][q]
        assert np.sum(x < v) < q * n + error + 1e-9
        assert np.sum(x <= v) >= q * n - error - 1e-9
    counts, edges = np.histogram(x, bins=7)
    np.testing.assert_allclose(col["histogram"]["edges"], edges)
    assert sum(col["histogram"]["counts"]) == n
    assert np.all(np.abs(np.array(col["histogram"]["counts"]) - counts) <= 2 * error + 1e-9)
    # error is the rank error times n again, a float product: 206.5 came back as
    # 206.49999999999997 (n=340, the example above), so floor with a tolerance
    assert col["histogram"]["count_error"] == math.floor(2 * error + 1e-9)


def test_exact_quantiles_when_the_sketch_holds_everything():
    sketch = QuantileSketch.of_sorted(np.arange(10.0), size=64)
    assert sketch.error == 0
    assert [sketch.quantile(q) for q in (0.0, 0.1, 0.5, 1.0)] == [0.0, 0.0, 4.0, 9.0]


def test_sketch_of_device_values_matches_the_host_sketch():
    """array_api_strict on a non-default device stands in for CuPy partitions."""
    xps = pytest.importorskip("array_api_strict")
    x = np.sort(np.random.default_rng(0).random(1_000))
    on_device = QuantileSketch.of_sorted(xps.asarray(x, device=xps.Device("device1")), 50)
    on_host = QuantileSketch.of_sorted(x, 50)
    np.testing.assert_array_equal(on_device.values, on_host.values)
    np.testing.assert_array_equal(on_device.weights, on_host.weights)
    assert on_device.error == on_host.error == 1_000 / 50


def test_hyperloglog_within_its_stated_error_on_200k_distinct():
    n = 200_000
    rng = np.random.default_rng(5)
    pdf = pd.DataFrame(
        {"ids": rng.permutation(n), "names": pd.Series(np.arange(n).astype(str), dtype="str")}
    )
    p = profile(dd.from_pandas(pdf, npartitions=8), max_exact_distinct=1_000)
    for name in ("ids", "names"):
        col = p.columns[name]
        assert not col["distinct_exact"]
        assert col["distinct_relative_error"] == pytest.approx(0.0081, abs=1e-4)
        # three standard errors (~2.4%); the hash is deterministic, so this does not flake
        assert abs(col["distinct"] - n) <= 3 * HyperLogLog.relative_error * n
    # small cardinalities through the sketch are accurate too (linear-counting regime)
    assert abs(HyperLogLog.of(np.arange(2_000)).estimate() - 2_000) < 0.02 * 2_000
    assert HyperLogLog.of(np.array([], dtype=np.int64)).estimate() == 0


def test_top_values_past_the_exact_limit_are_lower_bounds_within_the_error():
    rng = np.random.default_rng(6)
    values = rng.zipf(1.6, 50_000) % 5_000
    pdf = pd.DataFrame({"v": values.astype(str)})
    capacity = 50
    p = profile(dd.from_pandas(pdf, npartitions=7), max_exact_distinct=capacity, top_k=5)
    col = p.columns["v"]
    truth = pdf["v"].value_counts()
    assert not col["top_exact"]
    assert col["top_count_error"] <= len(pdf) // (capacity + 1)
    for value, count in col["top"]:
        assert count <= truth[value] <= count + col["top_count_error"]
    assert [v for v, _ in col["top"][:3]] == truth.index[:3].tolist()


def test_correlation_equals_pandas_without_nans_and_uses_complete_rows_with_them():
    rng = np.random.default_rng(7)
    n = 3_000
    a = rng.normal(size=n)
    pdf = pd.DataFrame(
        {"a": a, "b": 2 * a + rng.normal(size=n), "c": rng.integers(0, 9, n), "k": rng.random(n)}
    )
    pdf["const"] = 1.0
    ddf = split(pdf, [500, 0, 1_000, 1_500])
    corr = profile(ddf).correlation
    pd.testing.assert_frame_equal(corr, pdf.corr(), rtol=1e-10)

    pdf.loc[rng.random(n) < 0.1, "a"] = np.nan
    pdf.loc[rng.random(n) < 0.1, "b"] = np.nan
    corr = profile(split(pdf, [500, 0, 1_000, 1_500])).correlation
    pd.testing.assert_frame_equal(corr, pdf.dropna().corr(), rtol=1e-10)
    assert not np.allclose(corr.loc["a", "c"], pdf.corr().loc["a", "c"], rtol=1e-10)


def test_to_html_is_one_self_contained_file_with_plots(tmp_path):
    rng = np.random.default_rng(8)
    pdf = pd.DataFrame(
        {
            "x": rng.normal(size=500),
            "y": rng.exponential(size=500),
            "<c>": rng.choice(["a", "b&c", "d"], 500),
            "flag": rng.random(500) < 0.5,
        }
    )
    p = profile(dd.from_pandas(pdf, npartitions=3))
    out = p.to_html(tmp_path / "profile.html")
    assert out == tmp_path / "profile.html"
    text = out.read_text(encoding="utf-8")
    assert text.count("<svg") >= 5  # 2 histograms, 2 bar charts, heatmap (+ null bars)
    assert "histogram" in text and "correlation heatmap" in text and "top values" in text
    assert "&lt;c&gt;" in text and "<c>" not in text  # names are escaped
    assert not re.search(r"https?://", text)  # nothing to fetch: opens offline
    assert "<script" not in text and "<link" not in text
    assert not list(tmp_path.glob("*.tmp"))

    json.dumps(p.to_dict(), allow_nan=False)
    text = repr(p)
    assert text.startswith("Profile: 500 rows x 4 columns (3 partitions)")
    assert all(name in text for name in pdf.columns)


def test_empty_and_all_null_columns_and_pandas_input():
    pdf = pd.DataFrame({"x": [np.nan] * 4, "s": pd.Series([None] * 4, dtype="str")})
    p = profile(pdf)
    assert p.n_partitions == 1
    x = p.columns["x"]
    assert (x["count"], x["nulls"], x["distinct"], x["top"]) == (0, 4, 0, [])
    assert np.isnan(x["mean"]) and x["min"] is None and x["histogram"]["counts"] == []
    assert p.columns["s"]["count"] == 0
    assert p.correlation.isna().all().all()
    json.dumps(p.to_dict(), allow_nan=False)


def test_one_compute_with_named_partials(monkeypatch):
    calls = []
    compute = dask.compute

    def counting_compute(*args, **kwargs):
        calls.append({str(k) for a in args for k in dict(a.__dask_graph__())})
        return compute(*args, **kwargs)

    monkeypatch.setattr(dask, "compute", counting_compute)
    pdf = pd.DataFrame({"x": np.arange(100.0), "s": ["a", "b"] * 50})
    profile(dd.from_pandas(pdf, npartitions=5))
    assert len(calls) == 1
    assert any(k.startswith("partition_profile-") for k in calls[0])
    assert any("combine_profiles-" in k for k in calls[0])


def test_profile_through_the_distributed_client(client):
    rng = np.random.default_rng(9)
    pdf = pd.DataFrame({"x": rng.normal(size=5_000), "c": rng.choice(list("abc"), 5_000)})
    p = profile(dd.from_pandas(pdf, npartitions=4))
    assert p.columns["x"]["mean"] == pytest.approx(pdf["x"].mean(), rel=1e-12)
    assert p.columns["x"]["std"] == pytest.approx(pdf["x"].std(), rel=1e-12)
    assert dict(map(tuple, p.columns["c"]["top"])) == pdf["c"].value_counts().to_dict()


def test_estimated_distinct_never_exceeds_the_values_present():
    values = np.arange(1_000)
    # precondition: the sketch overestimates this column (1,009 for 1,000 values)
    assert round(HyperLogLog.of(values).estimate()) > len(values)
    p = profile(dd.from_pandas(pd.DataFrame({"v": values}), npartitions=2),
                max_exact_distinct=100)
    col = p.columns["v"]
    assert not col["distinct_exact"]
    assert col["distinct"] == col["count"] == len(values)


def test_html_marks_estimates_and_keeps_charts_readable(tmp_path):
    from pathlib import Path

    from analytics.profile_html import _ACCENT, _svg_histogram

    values = np.arange(1_000)
    p = profile(dd.from_pandas(pd.DataFrame({"v": values, "label": values % 2}), npartitions=2),
                max_exact_distinct=100)
    page = Path(p.to_html(str(tmp_path / "p.html"))).read_text()
    assert "≈1,000" in page and "~1,0" not in page

    # a 6-digit count on the y axis fits left of the axis: 11 px digits are < 6.5 px wide
    svg = _svg_histogram(np.array([0.0, 1.0, 2.0]), [123_456, 10], {0.5: 1.0})
    x, label = re.search(r"<text x='([\d.]+)'[^>]*text-anchor='end'>([\d,]+)</text>", svg).groups()
    assert label == "123,456" and float(x) - 6.5 * len(label) >= 0

    # a 0/1 label: the interquartile range is the whole axis, and must not cover the bars
    svg = _svg_histogram(np.linspace(0.0, 1.0, 11), [500] + [0] * 8 + [500],
                         {0.25: 0.0, 0.5: 0.5, 0.75: 1.0})
    base = float(re.search(r"<line x1='[\d.]+' x2='[\d.]+' y1='([\d.]+)'", svg).group(1))
    rects = re.findall(r"<rect x='[\d.]+' y='([\d.]+)' width='[\d.]+' height='([\d.]+)' "
                       r"fill='([^']+)'", svg)
    others = [(float(y), float(h)) for y, h, fill in rects if fill != _ACCENT]
    assert others, "the interquartile range is drawn"
    assert all(y >= base for y, _ in others)  # below the axis, not over the bars
