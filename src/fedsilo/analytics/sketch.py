"""A mergeable quantile sketch with a relative-error guarantee (DDSketch).

Masson, Rim & Lee, "DDSketch: A Fast and Fully-Mergeable Quantile Sketch with Relative-Error
Guarantees", VLDB 2019. Values are counted in logarithmic buckets: with relative accuracy
``alpha`` and ``gamma = (1 + alpha) / (1 - alpha)``, a positive value ``v`` falls in bucket
``k = ceil(log_gamma(v))``, i.e. ``gamma**(k-1) < v <= gamma**k``; negative values are counted
by the bucket of ``|v|`` in a second store, and values with ``|v|`` below the smallest
indexable magnitude in a zero bucket. A bucket is represented by ``2 gamma**k / (gamma + 1)``,
which is within ``alpha`` (relatively) of every value in it.

Why this sketch for federated EDA:

* **Exactly mergeable.** The bucket of a value depends on the value only, never on the other
  values or on the order they arrive, so the sketch of a union is the bucket-wise sum of the
  sketches of the parts -- bit for bit (:meth:`QuantileSketch.merge`). Pooled quantiles across
  silos therefore carry the same guarantee as quantiles of one silo.
* **A stated accuracy.** ``quantile(q)`` returns a value within ``alpha * |x|`` of ``x``, the
  element of rank ``floor(q * (n - 1))`` of the sorted data (numpy's ``method="lower"``).
* **Coarsened, not censored.** A policy that forbids releasing small counts is met by
  merging a silo's small buckets with their neighbours into *spans* that keep their rows
  (:meth:`QuantileSketch.coarsened`), never by dropping them: a column crossing zero has
  many narrow, sparse buckets near zero, and dropping them shifts every quantile above
  them. A quantile that falls in a span is known to the span's width;
  :meth:`QuantileSketch.quantile_interval` says to what width each quantile is known
  (:mod:`fedsilo.analytics.quantiles` has the rank argument, valid for overlapping spans of
  several silos too).
* **A histogram on a fixed, data-independent grid.** The bucket grid depends on ``alpha``
  alone, so the bucket counts can be released under differential privacy with a threshold
  mechanism (:mod:`fedsilo.analytics.privacy`) without a prior guess of the data's range.

Implemented here in numpy rather than with Datadog's ``ddsketch`` package: that package adds
values one at a time in Python (about a microsecond each, so seconds per million rows and
column), while a client needs a vectorised ``log``/``ceil``/``bincount`` over whole columns,
and the sketch must round-trip through the wire codec as plain integer arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedsilo.analytics.quantiles import merge_small, point_estimate, rank_bracket

__all__ = ["DEFAULT_RELATIVE_ACCURACY", "SKETCH_ARRAYS", "ZERO_CODE", "QuantileSketch"]

#: the arrays of :meth:`QuantileSketch.to_arrays` (the span arrays may be absent: none)
SKETCH_ARRAYS = (
    "positive_keys",
    "positive_counts",
    "negative_keys",
    "negative_counts",
    "span_lows",
    "span_highs",
    "span_counts",
)

DEFAULT_RELATIVE_ACCURACY = 0.01


@dataclass
class _Store:
    """Counts of consecutive bucket keys ``offset .. offset + len(counts) - 1``."""

    offset: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add_keys(self, keys: np.ndarray) -> None:
        if keys.size == 0:
            return
        low, high = int(keys.min()), int(keys.max())
        counts = np.bincount(keys - low, minlength=high - low + 1).astype(np.int64)
        self.add_counts(low, counts)

    def add_counts(self, offset: int, counts: np.ndarray) -> None:
        if counts.size == 0:
            return
        if self.counts.size == 0:
            self.offset, self.counts = offset, counts.astype(np.int64, copy=True)
            return
        low = min(self.offset, offset)
        high = max(self.offset + self.counts.size, offset + counts.size)
        merged = np.zeros(high - low, dtype=np.int64)
        merged[self.offset - low : self.offset - low + self.counts.size] += self.counts
        merged[offset - low : offset - low + counts.size] += counts
        self.offset, self.counts = low, merged

    def sparse(self) -> tuple[np.ndarray, np.ndarray]:
        """The non-empty buckets: keys (int64, ascending) and their counts (int64)."""
        nonzero = np.flatnonzero(self.counts)
        return (nonzero + self.offset).astype(np.int64), self.counts[nonzero].copy()

    @classmethod
    def from_sparse(cls, keys: np.ndarray, counts: np.ndarray) -> _Store:
        store = cls()
        keys = np.asarray(keys, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        if keys.size:
            low = int(keys.min())
            dense = np.zeros(int(keys.max()) - low + 1, dtype=np.int64)
            np.add.at(dense, keys - low, counts)
            store.offset, store.counts = low, dense
        return store


class QuantileSketch:
    """DDSketch over float values; see the module docstring.

    Parameters
    ----------
    relative_accuracy : float in (0, 1)
        ``alpha``: every quantile is returned within ``alpha`` relative error.

    Attributes
    ----------
    min, max : float
        The exact extremes of the values added (NaN when empty, or when the sketch came from
        a differentially private release, which cannot carry them).
    zero_count : int
        Values with ``|v|`` below :attr:`min_indexable`.
    spans : tuple of three ndarrays
        Merged buckets ``(lows, highs, counts)``: closed value intervals holding ``counts``
        values, from :meth:`coarsened` (empty for a sketch of raw values).

    Examples
    --------
    >>> sketch = QuantileSketch(0.01)
    >>> sketch.add(np.arange(1.0, 1001.0))
    >>> abs(sketch.quantile(0.5) - 500.0) <= 0.01 * 500.0
    True
    """

    def __init__(self, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(
                "The 'relative_accuracy' parameter of QuantileSketch must be in (0, 1). "
                f"Got {relative_accuracy!r}."
            )
        self.relative_accuracy = float(relative_accuracy)
        self.gamma = (1.0 + relative_accuracy) / (1.0 - relative_accuracy)
        # log1p keeps ln(gamma) accurate for small alpha, where gamma is close to 1.
        self._log_gamma = math.log1p(2.0 * relative_accuracy / (1.0 - relative_accuracy))
        # Below this magnitude the key would underflow the float range; DDSketch's own bound.
        self.min_indexable = float(np.finfo(np.float64).tiny) * self.gamma
        self._positive = _Store()
        self._negative = _Store()
        self.zero_count = 0
        self.spans: tuple[np.ndarray, np.ndarray, np.ndarray] = _no_spans()
        self.min = math.nan
        self.max = math.nan

    # ---------------------------------------------------------------- building

    def keys(self, magnitudes: np.ndarray) -> np.ndarray:
        """Bucket keys of positive magnitudes: ``ceil(log_gamma(v))``, int64."""
        keys: np.ndarray = np.ceil(np.log(magnitudes) / self._log_gamma).astype(np.int64)
        return keys

    def add(self, values: np.ndarray) -> None:
        """Count finite values.

        Parameters
        ----------
        values : ndarray of shape (n_values,)
            Finite floats (drop NaN and infinities first).

        Raises
        ------
        ValueError
            When a value is NaN or infinite.
        """
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0:
            return
        if not np.isfinite(x).all():
            raise ValueError("QuantileSketch.add takes finite values only; drop NaN/inf first.")
        magnitude = np.abs(x)
        indexable = magnitude >= self.min_indexable
        positive = indexable & (x > 0)
        negative = indexable & (x < 0)
        self._positive.add_keys(self.keys(magnitude[positive]))
        self._negative.add_keys(self.keys(magnitude[negative]))
        self.zero_count += int(x.size - positive.sum() - negative.sum())
        low, high = float(x.min()), float(x.max())
        self.min = low if math.isnan(self.min) else min(self.min, low)
        self.max = high if math.isnan(self.max) else max(self.max, high)

    def merge(self, other: QuantileSketch) -> None:
        """Add another sketch's counts to this one (exact: bucket-wise sums).

        Raises
        ------
        ValueError
            When the two sketches have different relative accuracies (different grids).
        """
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError(
                "Cannot merge sketches of different relative accuracy: "
                f"{self.relative_accuracy} and {other.relative_accuracy}."
            )
        self._positive.add_counts(other._positive.offset, other._positive.counts)
        self._negative.add_counts(other._negative.offset, other._negative.counts)
        self.zero_count += other.zero_count
        self.spans = tuple(  # type: ignore[assignment]  # three arrays stay three
            np.concatenate([mine, theirs])
            for mine, theirs in zip(self.spans, other.spans, strict=True)
        )
        self.min = float(np.fmin(self.min, other.min))
        self.max = float(np.fmax(self.max, other.max))

    def copy(self) -> QuantileSketch:
        clone = QuantileSketch(self.relative_accuracy)
        clone.merge(self)
        return clone

    def coarsened(self, min_count: int) -> QuantileSketch:
        """This sketch with every released count at least ``min_count``, rows kept.

        Small buckets are merged into spans with their neighbours in value order
        (:func:`~fedsilo.analytics.quantiles.merge_small`); buckets that need no merging stay
        buckets, so pooled silos still add them exactly.

        Returns
        -------
        QuantileSketch
            With the same min and max; empty when the sketch holds fewer than ``min_count``
            values in all (nothing can be released then).
        """
        lows, highs, counts = self._fine_intervals()
        if min_count <= 1 or bool((counts >= min_count).all()):
            return self.copy()
        kept, spans = merge_small(lows, highs, counts, min_count)
        codes = self._fine_codes()[kept]
        coarse = QuantileSketch.from_counts(
            self.relative_accuracy, dict(zip(codes.tolist(), counts[kept].tolist(), strict=True))
        )
        coarse.spans = spans
        if coarse.count:
            coarse.min, coarse.max = self.min, self.max
        return coarse

    # ---------------------------------------------------------------- reading

    @property
    def count(self) -> int:
        return (
            self._positive.total + self._negative.total + self.zero_count + int(self.spans[2].sum())
        )

    def value(self, key: int | np.ndarray) -> np.ndarray:
        """The representative value of positive bucket ``key``: ``2 gamma**k / (gamma + 1)``."""
        keys = np.asarray(key, dtype=np.float64)
        values: np.ndarray = 2.0 * np.exp(keys * self._log_gamma) / (self.gamma + 1.0)
        return values

    def quantile(self, q: float) -> float:
        """The value at quantile ``q``, within ``relative_accuracy`` of the rank-``floor(q(n-1))``
        element when that element is in an un-merged bucket, else within its span (see
        :meth:`quantile_interval`); NaN when the sketch is empty.

        Raises
        ------
        ValueError
            When ``q`` is not in [0, 1].
        """
        bracket = self._bracket(q)
        if bracket is None:
            return math.nan
        estimate = point_estimate(*bracket)
        # The true quantile lies within [min, max]; clipping to them can only reduce the error.
        if not math.isnan(self.min):
            estimate = min(max(estimate, self.min), self.max)
        return estimate

    def quantile_interval(self, q: float) -> tuple[float, float]:
        """The interval that holds the rank-``floor(q(n-1))`` element for certain: its bucket
        (half-width ``relative_accuracy``, relatively) or its span, within ``[min, max]``.
        ``(nan, nan)`` when the sketch is empty."""
        bracket = self._bracket(q)
        if bracket is None:
            return math.nan, math.nan
        low, high = bracket
        if not math.isnan(self.min):
            low, high = max(low, self.min), min(high, self.max)
        return low, high

    def _bracket(self, q: float) -> tuple[float, float] | None:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"The quantile 'q' must be in [0, 1]. Got {q!r}.")
        lows, highs, counts = self.intervals()
        total = int(counts.sum())
        if total == 0:
            return None
        return rank_bracket(lows, highs, counts, math.floor(q * (total - 1)))

    def intervals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every bucket and span as a closed value interval: ``(lows, highs, counts)``."""
        lows, highs, counts = self._fine_intervals()
        span_lows, span_highs, span_counts = self.spans
        return (
            np.concatenate([lows, span_lows]),
            np.concatenate([highs, span_highs]),
            np.concatenate([counts, span_counts]),
        )

    def _fine_intervals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The non-empty buckets (not spans) in value order: edges and counts."""
        neg_keys, neg_counts = self._negative.sparse()
        pos_keys, pos_counts = self._positive.sparse()
        neg_keys, neg_counts = neg_keys[::-1], neg_counts[::-1]
        zero = np.zeros(1 if self.zero_count else 0)
        lows = np.concatenate([-self._edge(neg_keys), zero, self._edge(pos_keys - 1)])
        highs = np.concatenate([-self._edge(neg_keys - 1), zero, self._edge(pos_keys)])
        zero_counts = np.array([self.zero_count] * zero.size, dtype=np.int64)
        counts = np.concatenate([neg_counts, zero_counts, pos_counts]).astype(np.int64)
        return lows, highs, counts

    def _fine_codes(self) -> np.ndarray:
        """The :meth:`to_counts` code of each bucket of :meth:`_fine_intervals`, same order."""
        neg_keys, _ = self._negative.sparse()
        pos_keys, _ = self._positive.sparse()
        zero = np.array([ZERO_CODE] * (1 if self.zero_count else 0), dtype=np.int64)
        return np.concatenate([2 * neg_keys[::-1] + 1, zero, 2 * pos_keys]).astype(np.int64)

    def _edge(self, keys: np.ndarray) -> np.ndarray:
        """``gamma**keys``: the upper edge of positive bucket ``keys``."""
        edges: np.ndarray = np.exp(keys.astype(np.float64) * self._log_gamma)
        return edges

    def buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """Non-empty buckets in increasing value order.

        Returns
        -------
        values : ndarray of shape (n_buckets,)
            Representative values (negative, then 0.0 for the zero bucket, then positive).
        counts : ndarray of shape (n_buckets,), int64
        """
        neg_keys, neg_counts = self._negative.sparse()
        pos_keys, pos_counts = self._positive.sparse()
        parts_v = [-self.value(neg_keys[::-1]), self.value(pos_keys)]
        parts_c = [neg_counts[::-1], pos_counts]
        if self.zero_count:
            parts_v.insert(1, np.zeros(1))
            parts_c.insert(1, np.array([self.zero_count], dtype=np.int64))
        return np.concatenate(parts_v).astype(np.float64), np.concatenate(parts_c)

    def bounds(self) -> tuple[float, float]:
        """The range covered by the non-empty buckets and spans: ``(lowest lower edge,
        highest upper edge)``.

        Used as the agreed range of a column when exact extremes cannot be released; NaN
        when the sketch is empty.
        """
        lows, highs, counts = self.intervals()
        if not counts.any():
            return math.nan, math.nan
        return float(lows[counts > 0].min()), float(highs[counts > 0].max())

    # ------------------------------------------------------------- (de)serializing

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The sketch as arrays (:data:`SKETCH_ARRAYS`): int64 ``positive_keys``,
        ``positive_counts``, ``negative_keys``, ``negative_counts`` (sparse, ascending keys)
        and the spans as float64 ``span_lows``, ``span_highs`` and int64 ``span_counts``."""
        pos_keys, pos_counts = self._positive.sparse()
        neg_keys, neg_counts = self._negative.sparse()
        return {
            "positive_keys": pos_keys,
            "positive_counts": pos_counts,
            "negative_keys": neg_keys,
            "negative_counts": neg_counts,
            "span_lows": self.spans[0].copy(),
            "span_highs": self.spans[1].copy(),
            "span_counts": self.spans[2].copy(),
        }

    def to_counts(self) -> dict[int, int]:
        """Every non-empty bucket (not the spans) as ``{code: count}``, one integer code each:
        ``2k`` for positive key ``k``, ``2k + 1`` for negative key ``k``, and
        :data:`ZERO_CODE` for the zero bucket (see :meth:`from_counts`)."""
        pos_keys, pos_counts = self._positive.sparse()
        neg_keys, neg_counts = self._negative.sparse()
        codes: dict[int, int] = {}
        codes.update(zip((2 * pos_keys).tolist(), pos_counts.tolist(), strict=True))
        codes.update(zip((2 * neg_keys + 1).tolist(), neg_counts.tolist(), strict=True))
        if self.zero_count:
            codes[ZERO_CODE] = self.zero_count
        return codes

    @classmethod
    def from_counts(cls, relative_accuracy: float, counts: dict[int, int]) -> QuantileSketch:
        """Rebuild a sketch from :meth:`to_counts` codes (e.g. after noise); min/max unknown."""
        sketch = cls(relative_accuracy)
        items = [(code, count) for code, count in counts.items() if count > 0]
        sketch.zero_count = sum(count for code, count in items if code == ZERO_CODE)
        rest = [(code, count) for code, count in items if code != ZERO_CODE]
        codes = np.array([c for c, _ in rest], dtype=np.int64)
        values = np.array([n for _, n in rest], dtype=np.int64)
        positive = codes % 2 == 0
        sketch._positive = _Store.from_sparse(codes[positive] // 2, values[positive])
        sketch._negative = _Store.from_sparse((codes[~positive] - 1) // 2, values[~positive])
        return sketch

    @classmethod
    def from_arrays(
        cls,
        relative_accuracy: float,
        arrays: dict[str, np.ndarray],
        zero_count: int = 0,
        minimum: float = math.nan,
        maximum: float = math.nan,
    ) -> QuantileSketch:
        """Rebuild a sketch written by :meth:`to_arrays` (absent span arrays: no spans)."""
        sketch = cls(relative_accuracy)
        sketch._positive = _Store.from_sparse(arrays["positive_keys"], arrays["positive_counts"])
        sketch._negative = _Store.from_sparse(arrays["negative_keys"], arrays["negative_counts"])
        if "span_counts" in arrays:
            sketch.spans = (
                np.asarray(arrays["span_lows"], dtype=np.float64),
                np.asarray(arrays["span_highs"], dtype=np.float64),
                np.asarray(arrays["span_counts"], dtype=np.int64),
            )
        sketch.zero_count = int(zero_count)
        sketch.min, sketch.max = float(minimum), float(maximum)
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        mine, theirs = self.to_arrays(), other.to_arrays()
        return (
            self.relative_accuracy == other.relative_accuracy
            and self.zero_count == other.zero_count
            and all(np.array_equal(mine[k], theirs[k]) for k in mine)
            and _same(self.min, other.min)
            and _same(self.max, other.max)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"QuantileSketch(relative_accuracy={self.relative_accuracy}, count={self.count}, "
            f"buckets={self.buckets()[1].size})"
        )


#: the code of the zero bucket in :meth:`QuantileSketch.to_counts` (no key maps to it)
ZERO_CODE = -(2**62)


def _no_spans() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b
