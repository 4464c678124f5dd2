"""Everything known about one column of one dataset (or of the pooled datasets).

:class:`ColumnStats` bundles the column's :class:`~fedsilo.analytics.describe.Moments`, its
quantile sketch and histogram (continuous columns) or its value counts (categorical
columns), merges exactly with the same column of another dataset, and travels as a JSON
header plus named arrays (:meth:`ColumnStats.to_payload`), which is how the server stores an
EDA session's results and the SDK reads them back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from fedsilo.analytics.describe import Moments
from fedsilo.analytics.histograms import ValueCounts, merge_histograms, merge_value_counts
from fedsilo.analytics.quantiles import grid_interval, grid_quantile, prefix_noise_bound
from fedsilo.analytics.sketch import SKETCH_ARRAYS, QuantileSketch

__all__ = ["ColumnKind", "ColumnStats", "pool"]

ColumnKind = Literal["continuous", "categorical"]


@dataclass(frozen=True)
class ColumnStats:
    """The aggregates of one column.

    Attributes
    ----------
    name : str
    kind : {"continuous", "categorical"}
    dtype : str
        The column's dtype in the silo (``"mixed"`` when pooled datasets disagree).
    moments : Moments
        Count, nulls, extremes, mean, M2 (the last four NaN for categorical columns).
    sketch : QuantileSketch or None
        Continuous columns: the log-bucket sketch (exact, coarsened to the policy's
        ``min_count``; or noisy and thresholded under DP, where it gives the range only).
    edges : ndarray of shape (n_bins + 1,) or None
        Continuous columns: the agreed bin edges.
    histogram : ndarray of shape (n_bins,) or None
        Continuous columns: counts per bin (float; NaN where the policy withheld a count).
    value_counts : list of (value, count) or None
        Categorical columns: released categories, most frequent first.
    quantile_edges : ndarray of shape (n_quantile_bins + 1,) or None
        Under DP: the public grid over the agreed range that quantiles come from.
    quantile_counts : ndarray of shape (n_quantile_bins,) or None
        Under DP: noisy counts on that grid (summed over pooled datasets; may be negative).
    quantile_scales : tuple of float
        The discrete Laplace scale of each dataset's grid counts (one per pooled dataset).
    distinct : float
        The silo's (possibly noisy) distinct count, NaN when not measured or pooled.
    withheld : int
        Bins or categories the policy withheld (exact releases only).
    """

    name: str
    kind: ColumnKind
    dtype: str
    moments: Moments
    sketch: QuantileSketch | None = None
    edges: np.ndarray | None = None
    histogram: np.ndarray | None = None
    value_counts: ValueCounts | None = None
    quantile_edges: np.ndarray | None = None
    quantile_counts: np.ndarray | None = None
    quantile_scales: tuple[float, ...] = ()
    distinct: float = math.nan
    withheld: int = 0

    # ----------------------------------------------------------------- statistics

    def quantile(self, q: float) -> float:
        """The quantile ``q``: from the noisy grid under DP, else from the sketch (NaN for
        categorical columns or without either)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"The quantile 'q' must be in [0, 1]. Got {q!r}.")
        if self.kind != "continuous":
            return math.nan
        if self.quantile_counts is not None and self.quantile_edges is not None:
            return grid_quantile(self.quantile_edges, self.quantile_counts, q)
        if self.sketch is None:
            return math.nan
        return self.sketch.quantile(q)

    def quantile_interval(self, q: float, alpha: float = 0.05) -> tuple[float, float]:
        """An interval holding the true rank-``floor(q (n - 1))`` value.

        Without DP it holds it for certain (the value's sketch bucket or merged bucket).
        Under DP it holds it with probability at least ``1 - alpha`` for the values clamped
        to the agreed range (:func:`~fedsilo.analytics.quantiles.grid_interval` with the
        noise bound of :func:`~fedsilo.analytics.quantiles.prefix_noise_bound`).
        ``(nan, nan)`` when no quantile is known.
        """
        if math.isnan(self.quantile(q)):  # validates q too
            return math.nan, math.nan
        if self.quantile_counts is not None and self.quantile_edges is not None:
            noise = self.quantile_noise(alpha)
            return grid_interval(self.quantile_edges, self.quantile_counts, q, noise)
        assert self.sketch is not None
        return self.sketch.quantile_interval(q)

    def quantile_noise(self, alpha: float = 0.05) -> float:
        """Under DP: ``lambda``, a bound on the error of every noisy cumulative count of the
        quantile grid holding with probability ``1 - alpha``; 0 without DP."""
        if self.quantile_counts is None:
            return 0.0
        return prefix_noise_bound(self.quantile_scales, self.quantile_counts.size, alpha)

    def unique_count(self) -> float:
        """Released categories (NaN for continuous columns)."""
        if self.kind != "categorical" or self.value_counts is None:
            return math.nan
        return float(len(self.value_counts))

    def mode(self) -> Any:
        """The most frequent released category (NaN when none, or continuous)."""
        if self.kind != "categorical" or not self.value_counts:
            return math.nan
        return self.value_counts[0][0]

    def uniques(self) -> Any:
        """The released categories, most frequent first (NaN for continuous columns)."""
        if self.kind != "categorical" or self.value_counts is None:
            return math.nan
        return [value for value, _ in self.value_counts]

    def describe(self) -> dict[str, Any]:
        """One value per :data:`~fedsilo.analytics.describe.DESCRIBE_ROWS` entry."""
        m = self.moments
        continuous = self.kind == "continuous"
        nan = math.nan
        freq = self.value_counts[0][1] if (not continuous and self.value_counts) else nan
        return {
            "count": m.count,
            "nulls": m.nulls,
            "mean": m.mean if continuous else nan,
            "std": m.std if continuous else nan,
            "min": m.min if continuous else nan,
            "25%": self.quantile(0.25),
            "50%": self.quantile(0.5),
            "75%": self.quantile(0.75),
            "max": m.max if continuous else nan,
            "unique": self.unique_count(),
            "top": self.mode(),
            "freq": freq,
        }

    # ---------------------------------------------------------------- merging

    def merge(self, other: ColumnStats) -> ColumnStats:
        """The statistics of this column over both datasets (exact where released exactly).

        Raises
        ------
        ValueError
            When the columns differ in name or kind, or their histograms in edges.
        """
        if other.name != self.name or other.kind != self.kind:
            raise ValueError(
                f"Cannot merge column {self.name!r} ({self.kind}) with "
                f"{other.name!r} ({other.kind})."
            )
        sketch = None
        if self.sketch is not None and other.sketch is not None:
            sketch = self.sketch.copy()
            sketch.merge(other.sketch)
        else:
            sketch = self.sketch or other.sketch
        histogram = None
        if self.histogram is not None and other.histogram is not None:
            if (
                self.edges is None
                or other.edges is None
                or not np.array_equal(self.edges, other.edges)
            ):
                raise ValueError(f"Column {self.name!r}: histograms on different edges.")
            histogram = merge_histograms([self.histogram, other.histogram])
        else:
            histogram = self.histogram if self.histogram is not None else other.histogram
        grid = None
        if self.quantile_counts is not None and other.quantile_counts is not None:
            if (
                self.quantile_edges is None
                or other.quantile_edges is None
                or not np.array_equal(self.quantile_edges, other.quantile_edges)
            ):
                raise ValueError(f"Column {self.name!r}: quantile grids on different edges.")
            grid = (self.quantile_edges, self.quantile_counts + other.quantile_counts)
        value_counts = None
        if self.value_counts is not None or other.value_counts is not None:
            value_counts = merge_value_counts([self.value_counts or [], other.value_counts or []])
        return replace(
            self,
            dtype=self.dtype if self.dtype == other.dtype else "mixed",
            moments=self.moments.merge(other.moments),
            sketch=sketch,
            edges=self.edges if self.edges is not None else other.edges,
            histogram=histogram,
            value_counts=value_counts,
            # A part without a grid (no private range there) leaves the pooled grid short of
            # its rows, so the pooled quantiles fall back to the sketch.
            quantile_edges=None if grid is None else grid[0],
            quantile_counts=None if grid is None else grid[1],
            quantile_scales=() if grid is None else self.quantile_scales + other.quantile_scales,
            distinct=math.nan,
            withheld=self.withheld + other.withheld,
        )

    # ------------------------------------------------------------ (de)serializing

    def to_payload(self, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A JSON-safe header and named arrays (names start with ``prefix``)."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "dtype": self.dtype,
            "moments": self.moments.to_json(),
            "distinct": None if math.isnan(self.distinct) else self.distinct,
            "withheld": self.withheld,
            "value_counts": (
                None if self.value_counts is None else [[v, c] for v, c in self.value_counts]
            ),
            "sketch": None,
            "quantile_scales": list(self.quantile_scales),
        }
        if self.sketch is not None:
            meta["sketch"] = {
                "relative_accuracy": self.sketch.relative_accuracy,
                "zero_count": self.sketch.zero_count,
                "min": None if math.isnan(self.sketch.min) else self.sketch.min,
                "max": None if math.isnan(self.sketch.max) else self.sketch.max,
            }
            for key, value in self.sketch.to_arrays().items():
                arrays[f"{prefix}sketch/{key}"] = value
        if self.edges is not None:
            arrays[f"{prefix}edges"] = np.asarray(self.edges, dtype=np.float64)
        if self.histogram is not None:
            arrays[f"{prefix}histogram"] = np.asarray(self.histogram, dtype=np.float64)
        if self.quantile_edges is not None and self.quantile_counts is not None:
            arrays[f"{prefix}quantile_edges"] = np.asarray(self.quantile_edges, np.float64)
            arrays[f"{prefix}quantile_counts"] = np.asarray(self.quantile_counts, np.float64)
        return meta, arrays

    @classmethod
    def from_payload(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], prefix: str
    ) -> ColumnStats:
        """Rebuild what :meth:`to_payload` wrote."""
        sketch = None
        sketch_meta = meta.get("sketch")
        if sketch_meta is not None:
            sketch = QuantileSketch.from_arrays(
                float(sketch_meta["relative_accuracy"]),
                {
                    key: arrays[f"{prefix}sketch/{key}"]
                    for key in SKETCH_ARRAYS
                    if f"{prefix}sketch/{key}" in arrays
                },
                zero_count=int(sketch_meta.get("zero_count", 0)),
                minimum=_float(sketch_meta.get("min")),
                maximum=_float(sketch_meta.get("max")),
            )
        raw_counts = meta.get("value_counts")
        value_counts = None if raw_counts is None else [(v, float(c)) for v, c in raw_counts]
        kind: ColumnKind = "categorical" if meta["kind"] == "categorical" else "continuous"
        return cls(
            name=str(meta["name"]),
            kind=kind,
            dtype=str(meta.get("dtype", "")),
            moments=Moments.from_json(meta.get("moments", {})),
            sketch=sketch,
            edges=arrays.get(f"{prefix}edges"),
            histogram=arrays.get(f"{prefix}histogram"),
            value_counts=value_counts,
            quantile_edges=arrays.get(f"{prefix}quantile_edges"),
            quantile_counts=arrays.get(f"{prefix}quantile_counts"),
            quantile_scales=tuple(float(s) for s in meta.get("quantile_scales") or ()),
            distinct=_float(meta.get("distinct")),
            withheld=int(meta.get("withheld", 0)),
        )


def pool(parts: Sequence[ColumnStats]) -> ColumnStats:
    """Merge the same column of several datasets (see :meth:`ColumnStats.merge`).

    Raises
    ------
    ValueError
        When ``parts`` is empty.
    """
    if not parts:
        raise ValueError("pool needs at least one ColumnStats.")
    pooled = parts[0]
    for part in parts[1:]:
        pooled = pooled.merge(part)
    return pooled


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)
