"""Quantiles from counts on intervals, with the interval that holds the true value.

Two summaries carry the quantiles of an EDA column:

* **Exact, coarsened sketch buckets** (differential privacy off). A silo's log buckets below
  the policy's ``min_count`` are merged with their neighbours into wider intervals that keep
  their rows (:meth:`~fedsilo.analytics.sketch.QuantileSketch.coarsened`); pooled datasets
  are the union of every silo's intervals, which may overlap. For counts ``c_i`` on closed
  intervals ``[l_i, h_i]`` and a rank ``r`` (0-based), the value ``x_(r)`` of that rank lies
  in ``[L, U]`` (:func:`rank_bracket`), where ``L`` is the smallest ``l_i`` with
  ``sum(c_j : l_j <= l_i) >= r + 1`` (fewer than ``r + 1`` values are below it) and ``U``
  the smallest ``h_i`` with ``sum(c_j : h_j <= h_i) >= r + 1`` (at least ``r + 1`` values
  are at or below it). On disjoint intervals this is the interval holding rank ``r``; on one
  silo's un-merged buckets it is the bucket DDSketch would pick, so the estimate is the
  same and within ``relative_accuracy`` of ``x_(r)``.

* **Noisy counts on a public grid** (differential privacy on): ``B`` equal-width bins of
  width ``w`` over the column's agreed range, every bin noised with the discrete Laplace
  mechanism (nothing is thresholded away, so no mass is lost). :func:`grid_quantile`
  interpolates in the noisy cumulative counts ``C'_j`` at ``q N'`` (``N' = C'_B``). If every
  ``|C'_j - C_j| <= lambda`` (:func:`prefix_noise_bound`, probability ``>= 1 - beta``), the
  estimate lies in a bin that holds at least ``q N - 2 lambda`` values at or below its upper
  edge and fewer than ``q N + 2 lambda`` below its lower edge, hence::

      Q(q - delta) - w  <=  estimate  <=  Q(q + delta) + w,    delta = (2 lambda + 1) / N,

  with ``Q(p)`` the rank-``floor(p (N - 1))`` value of the silos' values clamped to the range
  (numpy's ``method="lower"``), read as the range's lower (upper) end for ``p < 0``
  (``p > 1``). ``lambda`` is a Chernoff bound on the sum of the ``B`` bins' noises of every
  silo, with Levy's inequality for the maximum over prefixes; for ``S`` silos of noise scale
  ``1 / epsilon`` it is about ``(2 / epsilon) sqrt(B S ln(4 / beta))``. The bound is a
  worst case at ``beta``; typical errors are several times smaller (measured in the README).

  Why a grid rather than the round-1 sketch: the sketch's buckets exist only where data is,
  so under DP they are released by a *threshold* mechanism that suppresses sparse buckets,
  and a log grid has many sparse buckets near zero; the grid's bins are public (the range
  is agreed in round 1), so every bin is released and no row is lost. Why not a DP quantile
  mechanism (exponential mechanism over candidates): its answers do not add up across
  silos, so pooled quantiles would be out of reach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "grid_interval",
    "grid_quantile",
    "merge_small",
    "point_estimate",
    "prefix_noise_bound",
    "rank_bracket",
]


def rank_bracket(
    lows: np.ndarray, highs: np.ndarray, counts: np.ndarray, rank: int
) -> tuple[float, float]:
    """The interval ``[L, U]`` that holds the value of 0-based ``rank`` (see the module doc).

    Parameters
    ----------
    lows, highs : ndarray of shape (n_intervals,)
        Closed intervals holding the values (``lows <= highs``), in any order; may overlap.
    counts : ndarray of shape (n_intervals,)
        Values per interval, >= 0.
    rank : int
        In ``[0, counts.sum())``.
    """
    by_low = np.argsort(lows, kind="stable")
    by_high = np.argsort(highs, kind="stable")
    low_cumulative = np.cumsum(counts[by_low])
    high_cumulative = np.cumsum(counts[by_high])
    at_low = int(np.searchsorted(low_cumulative, rank + 1, side="left"))
    at_high = int(np.searchsorted(high_cumulative, rank + 1, side="left"))
    return float(lows[by_low][at_low]), float(highs[by_high][at_high])


def merge_small(
    lows: np.ndarray, highs: np.ndarray, counts: np.ndarray, min_count: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Merge neighbouring intervals until every count is at least ``min_count``, rows kept.

    Intervals are walked in order; one below ``min_count`` starts a span that takes the
    following small intervals until it holds ``min_count``. A span still short when it meets
    an interval that is not small joins whichever neighbour holds fewer values -- so an
    atom, such as a column's many exact zeros, keeps its own interval -- and a last span
    still short joins the unit before it. Merging only where needed keeps the rest at their
    full accuracy; a run of sparse buckets (near zero on a log grid, or in a tail) becomes
    spans of about ``min_count`` values each.

    Parameters
    ----------
    lows, highs : ndarray of shape (n_intervals,)
        Disjoint intervals in increasing order.
    counts : ndarray of shape (n_intervals,), int
        Positive counts.
    min_count : int

    Returns
    -------
    kept : ndarray of shape (n_intervals,), bool
        The intervals that stay as they are.
    spans : (lows, highs, counts)
        The merged intervals (float64, float64, int64). With fewer than ``min_count``
        values in all, nothing is kept and there are no spans.
    """
    # units in order: [low, high, count, index of the interval kept as is, or -1: a span]
    units: list[list[Any]] = []
    pending: list[Any] | None = None
    for index, (low, high, count) in enumerate(
        zip(lows.tolist(), highs.tolist(), counts.tolist(), strict=True)
    ):
        if count >= min_count:
            if pending is None:
                units.append([low, high, count, index])
            elif units and units[-1][2] <= count:
                _absorb(units[-1], pending)
                units.append([low, high, count, index])
            else:
                units.append([pending[0], high, pending[2] + count, -1])
            pending = None
            continue
        if pending is None:
            pending = [low, high, 0, -1]
        pending[1] = high
        pending[2] += count
        if pending[2] >= min_count:
            units.append(pending)
            pending = None
    if pending is not None and units:
        _absorb(units[-1], pending)
    kept = np.zeros(counts.size, dtype=bool)
    kept[[u[3] for u in units if u[3] >= 0]] = True
    spans = [u for u in units if u[3] < 0]
    return kept, (
        np.array([u[0] for u in spans], dtype=np.float64),
        np.array([u[1] for u in spans], dtype=np.float64),
        np.array([u[2] for u in spans], dtype=np.int64),
    )


def _absorb(unit: list[Any], following: list[Any]) -> None:
    """Widen ``unit`` over the span ``following`` it: a span now."""
    unit[1] = following[1]
    unit[2] += following[2]
    unit[3] = -1


def point_estimate(low: float, high: float) -> float:
    """The point of ``[low, high]`` with the smallest worst-case error: the one of smallest
    worst *relative* error ``2 low high / (low + high)`` when both ends have one sign (for a
    log bucket, DDSketch's representative ``2 gamma**k / (gamma + 1)``), else the middle."""
    if low > 0.0 or high < 0.0:
        return 2.0 * low * high / (low + high)
    return (low + high) / 2.0


def grid_quantile(edges: np.ndarray, counts: np.ndarray, q: float) -> float:
    """The quantile ``q`` of noisy counts on grid ``edges``, interpolated within a bin.

    Parameters
    ----------
    edges : ndarray of shape (n_bins + 1,)
        Increasing bin edges.
    counts : ndarray of shape (n_bins,)
        Noisy counts, *not* raised to zero (the error of a prefix sum is then a sum of
        independent noises, which :func:`prefix_noise_bound` bounds).
    q : float in [0, 1]

    Returns
    -------
    float
        NaN when the noisy total is not positive.
    """
    cumulative = np.cumsum(counts, dtype=np.float64)
    total = float(cumulative[-1]) if cumulative.size else 0.0
    if not total > 0.0:
        return math.nan
    target = q * total
    # The first bin whose noisy cumulative count reaches the target; the noisy total
    # reaches it, so there is one. The previous cumulative count is below the target.
    j = int(np.argmax(cumulative >= target))
    before = float(cumulative[j - 1]) if j > 0 else 0.0
    inside = float(counts[j])
    fraction = (target - before) / inside if inside > 0.0 else 0.0
    fraction = min(max(fraction, 0.0), 1.0)
    return float(edges[j] + fraction * (edges[j + 1] - edges[j]))


def grid_interval(
    edges: np.ndarray, counts: np.ndarray, q: float, noise: float
) -> tuple[float, float]:
    """An interval that holds the rank-``floor(q (N - 1))`` value of the clamped data
    whenever every noisy prefix count is within ``noise`` of the true one.

    The true total ``N`` is within ``noise`` of the noisy total ``N'``, so the rank is in
    ``[q (N' - noise - 1) - 1, q (N' + noise - 1)]``; the value of a rank ``r`` is in the
    first bin whose true cumulative count exceeds ``r``, which is no earlier than the first
    with ``C'_j + noise > r_min`` and no later than the first with ``C'_j - noise > r_max``.
    """
    cumulative = np.cumsum(counts, dtype=np.float64)
    total = float(cumulative[-1]) if cumulative.size else 0.0
    lowest_rank = q * (total - noise - 1.0) - 1.0
    highest_rank = q * (total + noise - 1.0)
    first = np.flatnonzero(cumulative + noise > lowest_rank)
    last = np.flatnonzero(cumulative - noise > highest_rank)
    low = float(edges[first[0]]) if first.size else float(edges[-1])
    high = float(edges[last[0] + 1]) if last.size else float(edges[-1])
    return low, high


def prefix_noise_bound(scales: Sequence[float], bins: int, beta: float) -> float:
    """``lambda`` with ``P(max_j |E_j| > lambda) <= beta`` for the prefix-sum errors ``E_j``
    of ``bins`` bins, each the sum of one discrete Laplace noise per silo.

    Parameters
    ----------
    scales : sequence of float
        The discrete Laplace scale of each silo's grid release (``P(k) ~ exp(-|k| / s)``).
    bins : int
        Bins in the grid.
    beta : float in (0, 1)

    Notes
    -----
    The noises are independent and symmetric, so Levy's inequality gives
    ``P(max_j |E_j| > lambda) <= 2 P(|E_B| > lambda) <= 4 P(E_B > lambda)``, and Chernoff
    ``P(E_B > lambda) <= exp(B sum_s log M_s(t) - t lambda)`` for any ``0 < t < 1 / max s``,
    with the discrete Laplace moment generating function
    ``M_s(t) = (1 - p)**2 / ((1 - p e**t) (1 - p e**-t))``, ``p = exp(-1 / s)``. Every ``t``
    gives a valid bound; the smallest over a grid of ``t`` is returned.
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"The failure probability 'beta' must be in (0, 1). Got {beta!r}.")
    s = np.asarray(scales, dtype=np.float64)
    if s.size == 0 or bins < 1:
        return 0.0
    p = np.exp(-1.0 / s)
    # t from 1e-6 to 0.999 of the smallest 1/s, geometrically: the optimum is near
    # sqrt(2 ln(4/beta) / (B sum 2 s^2)), well inside for any B >= 1.
    t = np.geomspace(1e-6, 0.999, 2000)[:, None] / float(s.max())
    log_mgf = (2.0 * np.log1p(-p) - np.log1p(-p * np.exp(t)) - np.log1p(-p * np.exp(-t))).sum(
        axis=1
    )
    bounds = (bins * log_mgf + math.log(4.0 / beta)) / t[:, 0]
    return float(bounds.min())
