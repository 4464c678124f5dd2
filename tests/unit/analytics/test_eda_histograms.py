"""Histograms on agreed edges, value counts and the withholding policy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsilo.analytics.histograms import (
    agreed_edges,
    canonical_value,
    histogram,
    merge_histograms,
    merge_value_counts,
    sorted_counts,
    value_counts,
    withhold_small,
)


def test_histograms_match_numpy_and_add_up_across_silos() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(i, 1.0, 1000 + i) for i in range(3)]
    pooled = np.concatenate(parts)
    edges = agreed_edges(float(pooled.min()), float(pooled.max()), 12)
    assert edges is not None and edges.size == 13
    expected, _ = np.histogram(pooled, bins=edges)
    merged = merge_histograms([histogram(p, edges) for p in parts])
    np.testing.assert_array_equal(merged, expected)
    # a value on an interior edge counts as numpy counts it
    np.testing.assert_array_equal(
        histogram(edges[[0, 3, 12]], edges), np.histogram(edges[[0, 3, 12]], edges)[0]
    )


def test_values_outside_the_agreed_range_land_in_the_end_bins() -> None:
    edges = np.array([0.0, 1.0, 2.0])
    np.testing.assert_array_equal(histogram(np.array([-5.0, 0.5, 1.5, 7.0]), edges), [2, 2])


def test_agreed_edges_edge_cases() -> None:
    assert agreed_edges(math.nan, 1.0, 5) is None
    assert agreed_edges(2.0, 1.0, 5) is None
    np.testing.assert_array_equal(agreed_edges(3.0, 3.0, 2), [2.5, 3.0, 3.5])
    with pytest.raises(ValueError, match=r"'bins' parameter must be >= 1\. Got 0"):
        agreed_edges(0.0, 1.0, 0)


def test_canonical_values_unify_numbers_and_keep_types() -> None:
    assert canonical_value(np.float64(2.0)) == 2 and isinstance(canonical_value(2.0), int)
    assert canonical_value(np.int64(7)) == 7
    assert canonical_value(2.5) == 2.5
    assert canonical_value(np.bool_(True)) is True
    assert canonical_value("a") == "a"
    assert canonical_value(pd.Timestamp("2024-01-02")) == "2024-01-02 00:00:00"


def test_value_counts_equal_pandas_and_merge() -> None:
    a = pd.Series(["x", "y", "x", None, "z"])
    b = pd.Series(["y", "y", "w"])
    counts_a = value_counts(a)
    assert counts_a == {'"x"': 2, '"y"': 1, '"z"': 1}
    numeric = value_counts(pd.Series([1.0, 1.0, 2.0, np.nan]))
    assert numeric == {"1": 2, "2": 1}
    merged = merge_value_counts(
        [sorted_counts({k: float(v) for k, v in value_counts(s).items()}) for s in (a, b)]
    )
    pooled = pd.concat([a, b]).value_counts()
    assert dict(merged) == {k: float(v) for k, v in pooled.items()}
    assert merged[0] == ("y", 3.0)  # most frequent first


def test_withhold_small_counts() -> None:
    released, withheld = withhold_small(np.array([0, 1, 4, 5, 100]), 5)
    assert withheld == 2
    np.testing.assert_array_equal(np.isnan(released), [False, True, True, False, False])
    pooled = merge_histograms([released, np.ones(5)])
    assert math.isnan(pooled[1]) and pooled[4] == 101.0  # a withheld part makes the bin unknown
    with pytest.raises(ValueError, match="different bin counts"):
        merge_histograms([np.ones(2), np.ones(3)])
