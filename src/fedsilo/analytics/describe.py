"""Count, nulls, extremes, mean and variance of one column, with exact pooled merges.

A silo sends the *sufficient statistics* of a column, never its values: the number of
non-null values ``n``, the number of nulls, ``min``, ``max``, the mean and ``M2``, the sum of
squared deviations from the mean. Two such summaries combine exactly into the summary of the
union (Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for computing sample
variances", 1979)::

    n    = n_a + n_b
    d    = mean_b - mean_a
    mean = mean_a + d * n_b / n
    M2   = M2_a + M2_b + d**2 * n_a * n_b / n

so pooled means and variances across silos equal those of the concatenated data up to
floating-point rounding (about 1e-15 relative), instead of being averages of averages.
``M2`` rather than the variance travels because it is additive in this formula and stays
accurate when the mean is large compared with the spread (no ``E[x^2] - E[x]^2``
cancellation on exact data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DESCRIBE_ROWS", "Moments"]

#: the rows of ``describe()``, in order (pandas' names, plus ``nulls``)
DESCRIBE_ROWS = (
    "count",
    "nulls",
    "mean",
    "std",
    "min",
    "25%",
    "50%",
    "75%",
    "max",
    "unique",
    "top",
    "freq",
)


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of one column (see the module docstring).

    Attributes
    ----------
    count : float
        Non-null values (an integer, or a noisy one under differential privacy).
    nulls : float
        Null values.
    min, max : float
        Extremes of the non-null values; NaN when unknown.
    mean : float
        NaN when ``count`` is not positive.
    m2 : float
        Sum of squared deviations from the mean; NaN when ``count`` is not positive.
    """

    count: float
    nulls: float
    min: float = math.nan
    max: float = math.nan
    mean: float = math.nan
    m2: float = math.nan

    # ---------------------------------------------------------------- building

    @classmethod
    def of(cls, values: np.ndarray, nulls: int = 0) -> Moments:
        """The exact statistics of ``values``.

        Parameters
        ----------
        values : ndarray of shape (n_values,)
            The non-null values (finite floats).
        nulls : int
            How many values of the column were null.
        """
        x = np.asarray(values, dtype=np.float64)
        if x.size == 0:
            return cls(count=0.0, nulls=float(nulls))
        mean = float(x.mean())
        # Two passes: the deviations from the computed mean, not sum(x^2) - n mean^2.
        m2 = float(np.square(x - mean).sum())
        return cls(
            count=float(x.size),
            nulls=float(nulls),
            min=float(x.min()),
            max=float(x.max()),
            mean=mean,
            m2=m2,
        )

    @classmethod
    def from_sums(
        cls,
        count: float,
        nulls: float,
        shifted_sum: float,
        shifted_sum_squares: float,
        center: float,
        bounds: tuple[float, float],
    ) -> Moments:
        """Statistics from (noisy) sums of values shifted by ``center`` and clamped to ``bounds``.

        With ``y = clip(x, lo, hi) - center``, ``mean = center + sum(y) / n`` and
        ``M2 = sum(y^2) - sum(y)^2 / n``. Under differential privacy every input is noisy;
        the mean is clipped back into ``bounds`` and ``M2`` at zero, which is post-processing
        and only moves the estimates towards values the clamped data can have.
        """
        low, high = bounds
        if count <= 0:
            return cls(count=float(count), nulls=float(nulls), min=low, max=high)
        mean = min(max(center + shifted_sum / count, low), high)
        m2 = max(shifted_sum_squares - shifted_sum**2 / count, 0.0)
        return cls(
            count=float(count), nulls=float(nulls), min=low, max=high, mean=mean, m2=float(m2)
        )

    def merge(self, other: Moments) -> Moments:
        """The statistics of the union of both columns' values (Chan et al.)."""
        count = self.count + other.count
        nulls = self.nulls + other.nulls
        low = float(np.fmin(self.min, other.min))
        high = float(np.fmax(self.max, other.max))
        # A part without a defined mean (no rows, or a noisy count <= 0) adds no moments.
        parts = [p for p in (self, other) if p.count > 0 and not math.isnan(p.mean)]
        if not parts:
            return Moments(count=count, nulls=nulls, min=low, max=high)
        if len(parts) == 1:
            return Moments(count, nulls, low, high, parts[0].mean, parts[0].m2)
        a, b = parts
        n = a.count + b.count
        delta = b.mean - a.mean
        mean = a.mean + delta * b.count / n
        m2 = a.m2 + b.m2 + delta * delta * a.count * b.count / n
        return Moments(count, nulls, low, high, mean, m2)

    # ---------------------------------------------------------------- reading

    @property
    def variance(self) -> float:
        """Sample variance (``ddof=1``, as pandas); NaN with fewer than two values."""
        if not self.count > 1 or math.isnan(self.m2):
            return math.nan
        return self.m2 / (self.count - 1.0)

    @property
    def std(self) -> float:
        """Sample standard deviation (``ddof=1``, as pandas)."""
        return math.sqrt(self.variance) if not math.isnan(self.variance) else math.nan

    # ------------------------------------------------------------- (de)serializing

    def to_json(self) -> dict[str, float | None]:
        """JSON-safe: NaN becomes None (JSON has no NaN; PostgreSQL's JSON rejects it)."""
        return {
            "count": _json_number(self.count),
            "nulls": _json_number(self.nulls),
            "min": _json_number(self.min),
            "max": _json_number(self.max),
            "mean": _json_number(self.mean),
            "m2": _json_number(self.m2),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Moments:
        return cls(
            count=_number(data.get("count")),
            nulls=_number(data.get("nulls")),
            min=_number(data.get("min")),
            max=_number(data.get("max")),
            mean=_number(data.get("mean")),
            m2=_number(data.get("m2")),
        )


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
