"""The DDSketch-style quantile sketch: stated accuracy, exact merges, serialization."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsilo.analytics.sketch import SKETCH_ARRAYS, QuantileSketch

SPAN_EDGES = ("span_lows", "span_highs")

QUANTILES = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]


def mixed_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Negative, zero and positive values over many orders of magnitude."""
    return np.concatenate(
        [
            rng.lognormal(2.0, 3.0, n),
            -rng.lognormal(0.0, 1.0, n // 2),
            np.zeros(n // 10),
            rng.normal(0.0, 1e-3, n // 5),
        ]
    )


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_quantiles_are_within_the_relative_accuracy_of_the_lower_order_statistic(
    alpha: float,
) -> None:
    values = mixed_values(np.random.default_rng(1), 20_000)
    sketch = QuantileSketch(alpha)
    sketch.add(values)
    assert sketch.count == values.size
    for q in QUANTILES:
        true = float(np.quantile(values, q, method="lower"))
        # 1e-12 covers the float rounding of log/exp at a bucket boundary.
        assert abs(sketch.quantile(q) - true) <= alpha * abs(true) * (1 + 1e-9) + 1e-300, q


def test_extremes_are_exact_and_quantiles_stay_within_them() -> None:
    values = np.array([3.0, 3.0001, 7.5, 1000.0])
    sketch = QuantileSketch(0.05)
    sketch.add(values)
    assert (sketch.min, sketch.max) == (3.0, 1000.0)
    assert sketch.quantile(0.0) == 3.0  # the bucket value is below 3; clipped to the min
    assert sketch.quantile(1.0) == pytest.approx(1000.0, rel=0.05)
    assert 3.0 <= sketch.quantile(0.0) <= sketch.quantile(1.0) <= 1000.0


def test_merge_of_parts_is_the_sketch_of_the_whole() -> None:
    rng = np.random.default_rng(2)
    values = mixed_values(rng, 30_000)
    whole = QuantileSketch(0.01)
    whole.add(values)
    parts = np.array_split(rng.permutation(values), 5)
    merged = QuantileSketch(0.01)
    for part in parts:
        sketch = QuantileSketch(0.01)
        sketch.add(part)
        merged.merge(sketch)
    assert merged == whole
    for q in QUANTILES:
        assert merged.quantile(q) == whole.quantile(q)


def test_merge_refuses_a_different_grid() -> None:
    with pytest.raises(ValueError, match=r"different relative accuracy: 0.01 and 0.02"):
        QuantileSketch(0.01).merge(QuantileSketch(0.02))


def test_arrays_and_counts_round_trip() -> None:
    values = mixed_values(np.random.default_rng(3), 5_000)
    sketch = QuantileSketch(0.02)
    sketch.add(values)
    arrays = sketch.to_arrays()
    assert list(arrays) == list(SKETCH_ARRAYS)
    assert all(a.dtype == np.int64 for k, a in arrays.items() if k not in SPAN_EDGES)
    assert all(arrays[k].dtype == np.float64 and arrays[k].size == 0 for k in SPAN_EDGES)
    again = QuantileSketch.from_arrays(0.02, arrays, sketch.zero_count, sketch.min, sketch.max)
    assert again == sketch
    from_counts = QuantileSketch.from_counts(0.02, sketch.to_counts())
    from_counts.min, from_counts.max = sketch.min, sketch.max
    assert from_counts == sketch
    assert sum(sketch.to_counts().values()) == values.size


def test_bounds_cover_the_values() -> None:
    sketch = QuantileSketch(0.05)
    assert all(math.isnan(b) for b in sketch.bounds())
    sketch.add(np.array([-4.0, -0.5, 2.0, 9.0]))
    low, high = sketch.bounds()
    assert low <= -4.0 and low >= -4.0 * (1.05 / 0.95)
    assert high >= 9.0 and high <= 9.0 * (1.05 / 0.95)
    positive = QuantileSketch(0.05)
    positive.add(np.array([2.0, 3.0]))
    assert 2.0 / (1.05 / 0.95) <= positive.bounds()[0] <= 2.0
    zeros = QuantileSketch(0.05)
    zeros.add(np.zeros(3))
    assert zeros.bounds() == (0.0, 0.0)


def test_empty_sketch_and_bad_input() -> None:
    sketch = QuantileSketch()
    assert math.isnan(sketch.quantile(0.5))
    sketch.add(np.array([]))
    assert sketch.count == 0
    with pytest.raises(ValueError, match="finite values only"):
        sketch.add(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match=r"quantile 'q' must be in \[0, 1\]. Got 1.5"):
        sketch.quantile(1.5)
    with pytest.raises(ValueError, match=r"'relative_accuracy' .* must be in \(0, 1\). Got 0"):
        QuantileSketch(0)
