"""Moments and their exact merges, against pandas on the pooled data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsilo.analytics.describe import Moments

TOL = 1e-9


def moments_of(series: pd.Series) -> Moments:
    values = series.dropna().to_numpy(dtype=np.float64)
    return Moments.of(values, nulls=int(series.isna().sum()))


def assert_matches(m: Moments, series: pd.Series) -> None:
    assert m.count == series.count()
    assert m.nulls == series.isna().sum()
    assert m.min == series.min() and m.max == series.max()
    assert m.mean == pytest.approx(series.mean(), rel=TOL, abs=TOL)
    assert m.std == pytest.approx(series.std(), rel=TOL, nan_ok=True)
    assert m.variance == pytest.approx(series.var(), rel=TOL, nan_ok=True)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_chan_merges_equal_pandas_on_the_pooled_data(offset: float) -> None:
    rng = np.random.default_rng(0)
    parts = [
        pd.Series(rng.normal(offset + 3.0 * i, 1.0 + i, size))
        for i, size in enumerate([1, 7, 5000, 123])
    ]
    parts[2][::9] = np.nan
    pooled = pd.concat(parts, ignore_index=True)
    merged = moments_of(parts[0])
    for part in parts[1:]:
        merged = merged.merge(moments_of(part))
    assert_matches(merged, pooled)
    for part in parts:
        assert_matches(moments_of(part), part)


def test_empty_parts_merge_as_nothing() -> None:
    empty = Moments.of(np.array([]), nulls=4)
    assert empty.count == 0 and math.isnan(empty.mean) and math.isnan(empty.std)
    full = Moments.of(np.array([1.0, 2.0, 4.0]))
    merged = empty.merge(full)
    assert (merged.count, merged.nulls, merged.mean) == (3.0, 4.0, full.mean)
    assert merged.m2 == full.m2
    single = Moments.of(np.array([5.0]))
    assert math.isnan(single.std)  # ddof=1 needs two values, as pandas


def test_from_sums_recovers_exact_moments_and_clips_noisy_ones() -> None:
    values = np.array([1.0, 2.0, 2.5, 9.0])
    center = 5.0
    shifted = values - center
    m = Moments.from_sums(4, 0, shifted.sum(), (shifted**2).sum(), center, (1.0, 9.0))
    assert m.mean == pytest.approx(values.mean(), rel=1e-12)
    assert m.variance == pytest.approx(values.var(ddof=1), rel=1e-12)
    wild = Moments.from_sums(4, 0, 1e6, -5.0, center, (1.0, 9.0))
    assert wild.mean == 9.0 and wild.m2 == 0.0
    none = Moments.from_sums(-2, 1, 3.0, 4.0, center, (1.0, 9.0))
    assert math.isnan(none.mean) and none.count == -2


def test_json_round_trip_turns_nan_into_null() -> None:
    m = Moments(count=0.0, nulls=3.0)
    data = m.to_json()
    assert data["mean"] is None and data["count"] == 0.0
    again = Moments.from_json(data)
    assert again.count == 0.0 and math.isnan(again.mean)
