"""Numeric encoders on NumPy and array_api_strict (non-default device). Oracles: scipy's ndtri,
np.interp, scikit-learn's QuantileTransformer and SimpleImputer, and the PLE formula of
Gorishniy et al. (2022) written out below with loops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtri as scipy_ndtri
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import QuantileTransformer

from pipeline.backend import to_host
from pipeline.encoding import (
    fill_missing,
    interp,
    missing_indicators,
    ndtri,
    piecewise_linear_encode,
    ple_edges,
    quantile_transform,
)


def host(a):
    return np.asarray(to_host(a))


def test_ndtri_matches_scipy(backend):
    p = np.concatenate(
        [
            [0.0, 1.0, 0.5, 1e-300, 1e-20, 1 - 1e-16, 0.075, 0.925, 0.0749, np.nan, -0.1, 1.1],
            np.linspace(1e-6, 1 - 1e-6, 2001),
            np.logspace(-300, -1, 300),
        ]
    )
    got = host(ndtri(backend.asarray(p)))
    want = scipy_ndtri(np.clip(p, 0, 1))
    want[(p < 0) | (p > 1)] = np.nan
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 30), grid=st.booleans())
def test_interp_matches_numpy_with_repeated_knots(seed, m, grid):
    rng = np.random.default_rng(seed)
    xq = np.sort(rng.integers(0, 6, m) if grid else rng.normal(size=m)).astype(np.float64)
    fq = np.linspace(0.0, 1.0, m)
    x = np.concatenate([xq, rng.normal(size=50) * 3, [xq[0] - 1, xq[-1] + 1]])
    np.testing.assert_array_equal(interp(x, xq, fq), np.interp(x, xq, fq))


@pytest.mark.parametrize("output", ["uniform", "normal"])
def test_quantile_transform_matches_sklearn(backend, output):
    rng = np.random.default_rng(0)
    n = 400
    X = np.column_stack(
        [
            rng.normal(size=n),
            rng.integers(0, 5, n).astype(np.float64),  # repeated quantiles
            np.full(n, 3.0),  # constant
            rng.exponential(size=n),
        ]
    )
    X[rng.random(X.shape) < 0.1] = np.nan
    qt = QuantileTransformer(n_quantiles=100, subsample=None, output_distribution=output).fit(X)
    X_test = np.concatenate([X, rng.normal(size=(50, 4)) * 3], axis=0)  # beyond the fit range
    want = qt.transform(X_test)
    got = host(quantile_transform(backend.asarray(X_test), backend.asarray(qt.quantiles_), output))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def ple_paper(x: np.ndarray, edges: list[np.ndarray], n_bins: int) -> np.ndarray:
    """Gorishniy et al. (2022), eq. (1), one scalar at a time; components past T are 0."""
    out = np.zeros((x.shape[0], x.shape[1] * n_bins))
    for j, b in enumerate(edges):
        T = b.size - 1
        for i in range(x.shape[0]):
            for t in range(1, T + 1):
                v = x[i, j]
                if v < b[t - 1] and t > 1:
                    e = 0.0
                elif v >= b[t] and t < T:
                    e = 1.0
                else:
                    e = (v - b[t - 1]) / (b[t] - b[t - 1])
                out[i, j * n_bins + t - 1] = e
    return out


@pytest.mark.parametrize("n_bins", [1, 2, 7])
def test_piecewise_linear_encoding_matches_the_paper(backend, n_bins):
    rng = np.random.default_rng(1)
    n = 60
    X = np.column_stack(
        [
            rng.normal(size=n),
            rng.integers(0, 3, n).astype(np.float64),  # fewer distinct edges than bins
            np.full(n, -1.0),  # a single edge: no bins
        ]
    )
    edges = ple_edges(np.percentile(X, np.linspace(0, 100, n_bins + 1), axis=0))
    padded = np.full((n_bins + 1, X.shape[1]), np.nan)
    for j, e in enumerate(edges):
        padded[: e.size, j] = e
    X_test = np.concatenate([X, [[-10.0, -5.0, 0.0], [10.0, 5.0, -1.0]]])  # outside the bins
    got = host(
        piecewise_linear_encode(
            backend.asarray(X_test), backend.asarray(padded), [e.size for e in edges], n_bins
        )
    )
    want = ple_paper(X_test, edges, n_bins)
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    assert got.shape == (X_test.shape[0], 3 * n_bins)
    # Within the fitted range every component is in [0, 1].
    assert got[:n].min() >= 0.0 and got[:n].max() <= 1.0


def test_indicators_and_fill_match_simple_imputer(backend):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 4))
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 2] = rng.normal(size=30)  # no missing values: no indicator
    imp = SimpleImputer(strategy="median", add_indicator=True).fit(X)
    cols = [j for j in range(4) if np.isnan(X[:, j]).any()]
    xb = backend.asarray(X)
    filled = fill_missing(xb, backend.asarray(imp.statistics_))
    got = np.concatenate([host(filled), host(missing_indicators(xb, cols))], axis=1)
    np.testing.assert_array_equal(got, imp.transform(X))
