"""Global bin edges from merged relative-error quantile sketches, and binning by them.

Round 0 of a gbm session: every client sketches each predictor with
:class:`fedsilo.analytics.sketch.QuantileSketch` (DDSketch) at the config's
``sketch_relative_accuracy`` ``alpha``; the server merges the sketches and cuts each merged
sketch into at most ``max_bins`` bins of about equal pooled counts.

Why DDSketch (a relative-error sketch) rather than KLL (rank error):

* it is *exactly* mergeable -- a value's bucket depends on the value alone, so the merged
  sketch is the sketch of the pooled column bit for bit, whatever the number of silos or the
  order they reply in, and the edges are deterministic (KLL's compactions are randomized and
  its merged error grows with the merge tree);
* the bucket boundaries ``gamma**k`` (``gamma = (1 + alpha) / (1 - alpha)``) are cut points no
  data value straddles: cutting only there, two values get different bins whenever they fall
  in different buckets, i.e. whenever they differ by more than about ``2 alpha`` relatively.
  A column with at most ``max_bins`` buckets gets one bin per bucket, so a binary or
  small-integer column is binned exactly as scikit-learn bins it (one bin per value); a
  continuous column gets cuts within one bucket (relative width ``2 alpha``) of the pooled
  quantiles scikit-learn would use.

The price of relative error: resolution is relative to the distance from 0, so a column far
from 0 with a narrow spread (a year, 2000-2020, at ``alpha = 0.01``: one bucket) loses
resolution; ``alpha = 0.001`` (the seed's value) resolves 0.2 % of the magnitude.
"""

from __future__ import annotations

import math

import numpy as np

from fedsilo.analytics.sketch import QuantileSketch

__all__ = ["bin_edges", "bin_matrix", "sketch_to_cuts"]


def _bucket_upper_edges(sketch: QuantileSketch) -> tuple[np.ndarray, np.ndarray]:
    """Upper boundaries of the non-empty buckets, in value order, with their counts.

    A positive bucket ``k`` holds ``(gamma**(k-1), gamma**k]``; a negative bucket ``k`` holds
    ``[-gamma**k, -gamma**(k-1))``; the zero bucket holds magnitudes below ``min_indexable``.
    """
    arrays = sketch.to_arrays()
    log_gamma = math.log(sketch.gamma)
    neg_keys = arrays["negative_keys"][::-1]
    pos_keys = arrays["positive_keys"]
    uppers = [-np.exp((neg_keys - 1) * log_gamma), np.exp(pos_keys * log_gamma)]
    counts = [arrays["negative_counts"][::-1], arrays["positive_counts"]]
    if sketch.zero_count:
        uppers.insert(1, np.array([sketch.min_indexable]))
        counts.insert(1, np.array([sketch.zero_count], dtype=np.int64))
    return np.concatenate(uppers), np.concatenate(counts).astype(np.float64)


def sketch_to_cuts(sketch: QuantileSketch, max_bins: int) -> np.ndarray:
    """Cut points of one predictor: at most ``max_bins - 1`` bucket boundaries.

    Parameters
    ----------
    sketch : QuantileSketch
        The pooled sketch of the column.
    max_bins : int

    Returns
    -------
    ndarray of shape (n_bins - 1,), increasing
        A row goes to bin ``b`` when ``cuts[b-1] < x <= cuts[b]``.
    """
    uppers, counts = _bucket_upper_edges(sketch)
    if uppers.size <= 1:
        return np.zeros(0)
    if uppers.size <= max_bins:
        return uppers[:-1].copy()
    # scikit-learn's cuts are the pooled percentiles 100 i / max_bins, i = 1 .. max_bins - 1;
    # cut at the boundary of the bucket holding each target rank.
    cumulative = np.cumsum(counts)
    targets = cumulative[-1] * np.arange(1, max_bins) / max_bins
    positions = np.searchsorted(cumulative, targets, side="left")
    positions = np.unique(np.minimum(positions, uppers.size - 2))
    chosen: np.ndarray = uppers[positions].copy()
    return chosen


def bin_edges(sketches: list[QuantileSketch], max_bins: int) -> list[np.ndarray]:
    """Cut points of every predictor from its pooled sketch (see :func:`sketch_to_cuts`)."""
    return [sketch_to_cuts(sketch, max_bins) for sketch in sketches]


def bin_matrix(x: np.ndarray, cuts: list[np.ndarray]) -> np.ndarray:
    """Bin indices of a feature matrix.

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
    cuts : list of n_features ndarrays
        From :func:`bin_edges`.

    Returns
    -------
    ndarray of shape (n_samples, n_features), uint8
        ``searchsorted(cuts, x, side="left")``: the number of cuts below ``x``.
    """
    binned = np.empty(x.shape, dtype=np.uint8)
    for j, feature_cuts in enumerate(cuts):
        binned[:, j] = np.searchsorted(feature_cuts, x[:, j], side="left")
    return binned
