"""Federated analytics: statistics that silos compute locally and the server merges exactly.

* :mod:`~fedsilo.analytics.sketch` -- a mergeable relative-error quantile sketch (DDSketch);
* :mod:`~fedsilo.analytics.grid` -- that sketch as a dense vector on a fixed window of
  buckets, which silos can sum securely;
* :mod:`~fedsilo.analytics.quantiles` -- quantiles from counts on intervals (merged sketch
  buckets, or a noisy public grid under DP), with the interval that holds the true value;
* :mod:`~fedsilo.analytics.describe` -- count, nulls, extremes, mean, variance (Chan merges);
* :mod:`~fedsilo.analytics.histograms` -- histograms on agreed edges, value counts;
* :mod:`~fedsilo.analytics.privacy` -- client-side differential privacy through OpenDP;
* :mod:`~fedsilo.analytics.stats` -- everything known about one column, and its merge;
* :mod:`~fedsilo.analytics.results` -- the results API of an EDA session;
* :mod:`~fedsilo.analytics.plots` -- histogram figures (matplotlib, no pyplot).
"""

from __future__ import annotations

from fedsilo.analytics.describe import Moments
from fedsilo.analytics.results import EdaColumn, EdaDataset, EdaResults
from fedsilo.analytics.sketch import QuantileSketch
from fedsilo.analytics.stats import ColumnStats

__all__ = [
    "ColumnStats",
    "EdaColumn",
    "EdaDataset",
    "EdaResults",
    "Moments",
    "QuantileSketch",
]
