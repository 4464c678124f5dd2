"""Bin cuts from merged DDSketches, histograms and split finding, against direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.analytics.sketch import QuantileSketch
from fedsilo.packages.gbm.binning import bin_edges, bin_matrix, sketch_to_cuts
from fedsilo.packages.gbm.histograms import node_histograms
from fedsilo.packages.gbm.splitting import TreeGrower, best_splits


def sketch_of(values: np.ndarray, alpha: float = 0.001) -> QuantileSketch:
    sketch = QuantileSketch(alpha)
    sketch.add(values)
    return sketch


def test_few_distinct_values_get_one_bin_each() -> None:
    values = np.array([-3.0, -1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 7.0, 100.0])
    cuts = sketch_to_cuts(sketch_of(values), max_bins=255)
    bins = bin_matrix(values[:, None], [cuts])[:, 0]
    distinct = np.unique(values)
    assert cuts.size == distinct.size - 1
    # one bin per distinct value, in value order
    np.testing.assert_array_equal(bins, np.searchsorted(distinct, values))


def test_merged_sketches_give_the_cuts_of_the_pooled_column() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.lognormal(0, 1, 3000) - 1.0, rng.normal(2, 3, 5000), rng.exponential(1, 800)]
    merged = sketch_of(parts[0])
    for part in parts[1:]:
        merged.merge(sketch_of(part))
    pooled = np.concatenate(parts)
    np.testing.assert_array_equal(bin_edges([merged], 64)[0], sketch_to_cuts(sketch_of(pooled), 64))


@pytest.mark.parametrize("alpha", [0.01, 0.001])
def test_continuous_bins_hold_about_equal_counts(alpha: float) -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(5.0, 2.0, 20000)
    max_bins = 32
    cuts = sketch_to_cuts(sketch_of(values, alpha), max_bins)
    assert cuts.size <= max_bins - 1
    counts = np.bincount(bin_matrix(values[:, None], [cuts])[:, 0], minlength=cuts.size + 1)
    # each cut sits on the boundary of the sketch bucket holding its target rank, so a bin's
    # share is off by at most the mass of one bucket (relative width 2 alpha) near the cut
    tolerance = 0.03 if alpha == 0.01 else 0.01
    assert np.abs(counts / values.size - 1 / max_bins).max() < tolerance
    # cuts are within one bucket of the exact pooled percentiles scikit-learn would use
    exact = np.percentile(values, np.linspace(0, 100, max_bins + 1)[1:-1])
    assert np.all(np.abs(cuts - exact) <= 2.5 * alpha * np.abs(exact) + 1e-12)


def test_constant_column_has_one_bin() -> None:
    assert sketch_to_cuts(sketch_of(np.full(50, 3.5)), 255).size == 0


def test_node_histograms_equal_a_direct_loop() -> None:
    rng = np.random.default_rng(2)
    n, f, b = 500, 3, 7
    binned = rng.integers(0, b, size=(n, f)).astype(np.uint8)
    g, h = rng.normal(size=n), rng.uniform(0.1, 1, n)
    node_of_row = rng.choice([3, 4, 5], n)
    nodes = np.array([5, 3])
    result = node_histograms(binned, g, h, node_of_row, nodes, b)
    for i, node in enumerate(nodes):
        for j in range(f):
            for k in range(b):
                rows = (node_of_row == node) & (binned[:, j] == k)
                np.testing.assert_allclose(
                    result[i, j, k], [g[rows].sum(), h[rows].sum(), rows.sum()], atol=1e-12
                )


def test_best_split_maximizes_the_regularized_gain() -> None:
    rng = np.random.default_rng(3)
    histograms = np.stack(
        [rng.normal(size=(2, 4, 6)), rng.uniform(0.5, 2, (2, 4, 6)), rng.integers(1, 9, (2, 4, 6))],
        axis=-1,
    )
    lam, leaf = 0.7, 5
    gain, feature, bin_ = best_splits(histograms, lam, leaf)
    for node in range(2):
        best = -np.inf
        for j in range(4):
            total = histograms[node, j].sum(axis=0)
            for s in range(6):
                left = histograms[node, j, : s + 1].sum(axis=0)
                right = total - left
                if left[2] < leaf or right[2] < leaf:
                    continue
                value = (
                    left[0] ** 2 / (left[1] + lam)
                    + right[0] ** 2 / (right[1] + lam)
                    - total[0] ** 2 / (total[1] + lam)
                )
                if value > best:
                    best, where = value, (j, s)
        assert gain[node] == pytest.approx(best, rel=1e-12)
        assert (feature[node], bin_[node]) == where


def test_a_node_below_twice_min_samples_leaf_stays_a_leaf() -> None:
    grower = TreeGrower(0.1, 0.0, 20, 3, None)
    histograms = np.zeros((1, 1, 2, 3))
    histograms[0, 0] = [[-5.0, 10.0, 19.0], [5.0, 10.0, 20.0]]  # 39 rows < 2 * 20
    grower.add_histograms([0], histograms)
    assert grower.done() and grower.next_splits() == []
    tree = grower.arrays()
    assert tree["left"].tolist() == [-1] and tree["value"][0] == pytest.approx(0.0)
