"""Histograms that add up across silos, and categorical value counts.

A continuous column is binned on edges every silo agrees on (:func:`agreed_edges`, from the
range of the merged first-round sketches), so the histogram of the pooled data is the
bin-wise sum of the silos' histograms (:func:`merge_histograms`). Values outside the agreed
range -- possible when the range comes from a differentially private sketch whose sparse
tail buckets were suppressed -- are counted in the first or last bin, the same way the
moments clamp them.

A categorical column sends its value counts (:func:`value_counts`), keyed by a JSON-able
canonical value (:func:`canonical_value`) so that ``1``, ``1.0`` and ``np.int64(1)`` are one
category in every silo and on the wire.

A count that the policy does not allow to leave un-noised is *withheld*
(:func:`withhold_small`): NaN in a histogram, absent from value counts. A pooled bin with a
withheld part is NaN too, since its total is unknown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CategoryValue",
    "ValueCounts",
    "agreed_edges",
    "canonical_value",
    "category_from_key",
    "category_key",
    "histogram",
    "merge_histograms",
    "merge_value_counts",
    "value_counts",
    "withhold_small",
]

#: a category as it travels: JSON scalars only
CategoryValue = str | int | float | bool
#: categories with their counts, most frequent first
ValueCounts = list[tuple[CategoryValue, float]]

# Integers beyond 2**53 are not exactly representable as floats; keep such floats as floats.
_EXACT_INT_LIMIT = 2.0**53


def agreed_edges(low: float, high: float, bins: int) -> np.ndarray | None:
    """Equal-width bin edges over ``[low, high]``.

    Parameters
    ----------
    low, high : float
        The agreed range (pooled minimum and maximum, or a private range).
    bins : int
        Number of bins, >= 1.

    Returns
    -------
    ndarray of shape (bins + 1,) or None
        None when the range is unknown (NaN or infinite). A degenerate range (one value)
        gets the unit-width bins around it that numpy's ``histogram`` would use.
    """
    if bins < 1:
        raise ValueError(f"The 'bins' parameter must be >= 1. Got {bins}.")
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        return None
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins ``[e_i, e_{i+1})`` (the last bin closed).

    Parameters
    ----------
    values : ndarray of shape (n_values,)
        Finite floats.
    edges : ndarray of shape (n_bins + 1,)
        Increasing edges. Values below ``edges[0]`` count in the first bin, values above
        ``edges[-1]`` in the last.

    Returns
    -------
    ndarray of shape (n_bins,), int64
    """
    # Clipped into the range, then numpy's own histogram: its bins are exactly the ones a
    # reader of the edges expects, and on a million values it is faster than a search of
    # the edges per value (it sorts blocks of values once).
    inside = np.clip(values, edges[0], edges[-1])
    counts, _ = np.histogram(inside, bins=edges)
    return counts.astype(np.int64)


def canonical_value(value: Any) -> CategoryValue:
    """The JSON scalar a category is known by: bools stay bools, integral numbers become
    ints, other numbers floats, strings stay, anything else (dates, ...) its ``str``."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if number.is_integer() and abs(number) < _EXACT_INT_LIMIT:
            return int(number)
        return number
    if isinstance(value, str):
        return value
    return str(value)


def category_key(value: CategoryValue) -> str:
    """A string key that tells ``1`` from ``"1"`` (the JSON text of the value)."""
    return json.dumps(value)


def category_from_key(key: str) -> CategoryValue:
    value: CategoryValue = json.loads(key)
    return value


def value_counts(series: pd.Series) -> dict[str, int]:
    """Exact counts of the non-null values of ``series``, keyed by :func:`category_key`.

    Parameters
    ----------
    series : Series of shape (n_rows,)

    Returns
    -------
    dict of str to int
        Raw values that share a canonical value (``1`` and ``1.0``) are counted together.
    """
    counts: dict[str, int] = {}
    for raw, count in series.value_counts(dropna=True, sort=False).items():
        key = category_key(canonical_value(raw))
        counts[key] = counts.get(key, 0) + int(count)
    return counts


def sorted_counts(counts: dict[str, float]) -> ValueCounts:
    """Counts as ``[(value, count), ...]``, most frequent first, ties by value text."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [(category_from_key(key), float(count)) for key, count in ordered]


def withhold_small(counts: np.ndarray, min_count: int) -> tuple[np.ndarray, int]:
    """Withhold the non-zero counts below ``min_count`` (the policy for exact releases).

    Returns
    -------
    released : ndarray of float64, same shape
        NaN where a count was withheld.
    withheld : int
        How many counts were withheld.
    """
    released = counts.astype(np.float64)
    small = (counts > 0) & (counts < min_count)
    released[small] = math.nan
    return released, int(small.sum())


def merge_histograms(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Bin-wise sums of histograms on the same edges; NaN where any part is withheld.

    Raises
    ------
    ValueError
        When the parts do not have the same number of bins (different edges).
    """
    if not parts:
        raise ValueError("merge_histograms needs at least one histogram.")
    sizes = {part.size for part in parts}
    if len(sizes) != 1:
        raise ValueError(f"Cannot add histograms with different bin counts: {sorted(sizes)}.")
    total: np.ndarray = np.sum(np.stack([p.astype(np.float64) for p in parts]), axis=0)
    return total


def merge_value_counts(parts: Iterable[ValueCounts]) -> ValueCounts:
    """Category-wise sums of value counts (a category absent from a part counts 0 there)."""
    totals: dict[str, float] = {}
    for part in parts:
        for value, count in part:
            key = category_key(value)
            totals[key] = totals.get(key, 0.0) + count
    return sorted_counts(totals)
