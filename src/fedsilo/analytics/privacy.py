"""Client-side differential privacy for EDA releases, with OpenDP's calibrated mechanisms.

**Privacy unit.** One row of one silo's dataset, added or removed. Every statistic a silo
sends is computed by a mechanism built with OpenDP, whose privacy map gives the epsilon (and
delta) the release costs for that unit; the silo adds the noise *before* anything leaves it.
Pooled statistics are sums of the silos' releases -- post-processing, free of further cost --
and each silo's guarantee covers its own rows (a row lives in one silo).
The schema is treated as public: column names and dtypes decide which releases a column gets
(and travel in the join summary, with the silo's exact row count, which is outside this
guarantee).

**Budget.** The session's ``epsilon`` (and ``delta``) is the total a silo spends, by basic
sequential composition: the sum of its releases' epsilons equals it. It is split equally
over the columns the silo analyses (every row is in every column), and within a column by
the fixed shares below, so the accounting adds up whatever kind a column turns out to be:

=====================  ==================================================  =========
column                 releases (share of the column's epsilon)             delta
=====================  ==================================================  =========
numeric, round 1       distinct count 0.1 (when detecting categoricals),    1/2
                       log-bucket sketch 0.3 (0.4 when not detecting)
  continuous, round 2  counts 0.1, histogram 0.1, quantile grid 0.15,        --
                       sum 0.125, sum of squares 0.125 (counts 0.6 when
                       no range was found)
  categorical, rd. 2   counts 0.1, value counts 0.5                         1/2
categorical (declared  counts 0.1, value counts 0.9                         all
or non-numeric)
=====================  ==================================================  =========

"counts" is the pair (non-null count, null count): a row is in exactly one of them, so the
pair has L1 sensitivity 1 and costs one release. Histograms on agreed edges and counts use
the discrete Laplace mechanism on every bin (the bins are public, so no threshold is needed).
The quantile grid is such a histogram, with ``quantile_bins`` equal-width bins over the agreed
range, released without raising negative counts to zero so that the error of every
cumulative count is a plain sum of noises (the bound is in :mod:`fedsilo.analytics.quantiles`);
quantiles come from it rather than from the round-1 sketch, whose threshold suppresses the
sparse buckets -- near zero a log grid has many -- and with them their rows. The grid's share
was taken from the histogram (0.2 -> 0.1) and the two sums (0.15 -> 0.125 each), so a column,
and a session, spends exactly what it did before.
The sketch and value counts are over data-dependent keys (which buckets or categories
exist), so they use OpenDP's Laplace *threshold* mechanism: a key is released only when its
noisy count reaches a threshold calibrated to the delta share, and never below the policy's
``min_count`` -- a small category is never released un-noised, and usually not at all. Sums
and sums of squares are OpenDP chains ``clamp >> sum >> laplace`` on the values shifted to
the centre of the agreed range, so OpenDP's sensitivity proof (with its floating-point
slack) decides the noise.

OpenDP draws its noise from the operating system's cryptographic generator and cannot be
seeded, on purpose; tests check errors against the mechanisms' stated accuracy instead
(:meth:`Release.accuracy`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np

# OpenDP's Python API is untyped; its measurements are handled as Any here.
Measurement = Any

__all__ = [
    "CATEGORICAL_SHARES",
    "CONTINUOUS_NO_RANGE_SHARES",
    "CONTINUOUS_SHARES",
    "PROFILED_CATEGORICAL_SHARES",
    "PROFILE_SHARES",
    "PROFILE_SHARES_DETECTING",
    "Release",
    "noisy_count",
    "noisy_counts",
    "noisy_sum",
    "noisy_threshold_counts",
]

#: round 1 of a numeric column, when categoricals are detected by their distinct count
PROFILE_SHARES_DETECTING = {"distinct": 0.1, "sketch": 0.3}
#: round 1 of a numeric column, when the session declares its categorical columns
PROFILE_SHARES = {"sketch": 0.4}
#: round 2 of a continuous column (round 1 spent 0.4)
CONTINUOUS_SHARES = {
    "counts": 0.1,
    "histogram": 0.1,
    "quantiles": 0.15,
    "sum": 0.125,
    "sum_squares": 0.125,
}
#: round 2 of a continuous column for which no silo released a sketch bucket (no range)
CONTINUOUS_NO_RANGE_SHARES = {"counts": 0.6}
#: round 2 of a numeric column the session found categorical (round 1 spent 0.4)
PROFILED_CATEGORICAL_SHARES = {"counts": 0.1, "value_counts": 0.5}
#: the only round of a declared or non-numeric categorical column
CATEGORICAL_SHARES = {"counts": 0.1, "value_counts": 0.9}

# Thresholds are searched among these integers (OpenDP's search takes 32-bit ints).
_THRESHOLD_SEARCH_MAX = 2**30
# Relative step when the scale of a mechanism must grow to stay within its epsilon share
# (a float rounding of sensitivity / scale can exceed the share by one ulp).
_SCALE_NUDGE = 1e-12

_contrib_enabled = False


def _opendp() -> Any:
    """OpenDP's modules as one namespace (``dp.m``, ``dp.t``, ``dp.vector_domain``, ...), with
    the "contrib" features this module's constructors need (OpenDP gates mechanisms whose
    proofs are still under review behind that flag).

    Not ``opendp.prelude``: it imports OpenDP's scikit-learn extras, and with them
    scikit-learn, which adds about three seconds to a client's first release.
    """
    global _contrib_enabled
    import opendp.domains
    import opendp.measurements
    import opendp.metrics
    import opendp.mod
    import opendp.transformations
    import opendp.typing

    if not _contrib_enabled:
        opendp.mod.enable_features("contrib")
        _contrib_enabled = True
    return SimpleNamespace(
        m=opendp.measurements,
        t=opendp.transformations,
        i64=opendp.typing.i64,
        atom_domain=opendp.domains.atom_domain,
        vector_domain=opendp.domains.vector_domain,
        map_domain=opendp.domains.map_domain,
        absolute_distance=opendp.metrics.absolute_distance,
        l1_distance=opendp.metrics.l1_distance,
        l01inf_distance=opendp.metrics.l01inf_distance,
        symmetric_distance=opendp.metrics.symmetric_distance,
    )


@dataclass(frozen=True)
class Release:
    """One differentially private release, as the silo's ledger records it.

    Attributes
    ----------
    column, statistic : str
        What was released (``"sketch"``, ``"counts"``, ``"histogram"``, ``"sum"``, ...).
    mechanism : str
        ``"discrete_laplace"``, ``"laplace"`` or ``"laplace_threshold"``.
    epsilon, delta : float
        What OpenDP's privacy map says the release costs for one row added or removed.
    scale : float
        The noise scale.
    threshold : int or None
        For threshold mechanisms: keys whose noisy count is below it are not released.
    """

    column: str
    statistic: str
    mechanism: str
    epsilon: float
    delta: float
    scale: float
    threshold: int | None = None

    def accuracy(self, alpha: float = 0.05) -> float:
        """Half-width ``a`` with ``P(|noise| > a) <= alpha`` for one released number."""
        from opendp.accuracy import (
            discrete_laplacian_scale_to_accuracy,
            laplacian_scale_to_accuracy,
        )

        if self.mechanism == "laplace":
            return float(laplacian_scale_to_accuracy(self.scale, alpha))
        return float(discrete_laplacian_scale_to_accuracy(self.scale, alpha))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["accuracy_95"] = self.accuracy(0.05)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Release:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


# ------------------------------------------------------------------ mechanisms


def noisy_counts(
    counts: np.ndarray, epsilon: float, column: str, statistic: str, nonnegative: bool = True
) -> tuple[np.ndarray, Release]:
    """Discrete Laplace noise on every entry of a count vector with L1 sensitivity 1.

    Parameters
    ----------
    counts : ndarray of shape (n_counts,), int
        E.g. histogram bins, or (non-null, null) counts: one row changes one entry by one.
    epsilon : float
        The share to spend.
    nonnegative : bool, default True
        Raise negative noisy counts to 0 (post-processing; it only reduces each count's
        error, but makes the error of a sum of counts no longer a sum of noises).

    Returns
    -------
    noisy : ndarray of shape (n_counts,), int64
    release : Release
    """
    dp = _opendp()
    space = (dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l1_distance(T=dp.i64))
    measurement, scale = _calibrated(
        lambda s: dp.m.make_laplace(*space, scale=s), d_in=1, epsilon=epsilon, sensitivity=1.0
    )
    noisy = np.asarray(measurement(np.ascontiguousarray(counts, dtype=np.int64)), np.int64)
    if nonnegative:
        np.maximum(noisy, 0, out=noisy)
    spent = float(measurement.map(1))
    return noisy, Release(column, statistic, "discrete_laplace", spent, 0.0, scale)


def noisy_count(value: int, epsilon: float, column: str, statistic: str) -> tuple[int, Release]:
    """Discrete Laplace noise on one count of sensitivity 1 (e.g. a distinct count)."""
    dp = _opendp()
    space = (dp.atom_domain(T=dp.i64), dp.absolute_distance(T=dp.i64))
    measurement, scale = _calibrated(
        lambda s: dp.m.make_laplace(*space, scale=s), d_in=1, epsilon=epsilon, sensitivity=1.0
    )
    noisy = int(measurement(int(value)))
    return noisy, Release(
        column, statistic, "discrete_laplace", float(measurement.map(1)), 0.0, scale
    )


def noisy_sum(
    values: np.ndarray, bounds: tuple[float, float], epsilon: float, column: str, statistic: str
) -> tuple[float, Release]:
    """The sum of ``values`` clamped to ``bounds``, with Laplace noise: ``clamp >> sum >>
    laplace`` in OpenDP, whose sum transformation states the sensitivity.

    Parameters
    ----------
    values : ndarray of shape (n_values,)
        Finite floats (one per non-null row).
    bounds : (float, float)
        Public clamping bounds (from the agreed range), ``lower <= upper``.
    """
    dp = _opendp()
    lower, upper = float(bounds[0]), float(bounds[1])
    clamp_sum = (
        dp.t.make_clamp(
            dp.vector_domain(dp.atom_domain(T=float, nan=False)),
            dp.symmetric_distance(),
            bounds=(lower, upper),
        )
        >> dp.t.then_sum()
    )
    sensitivity = float(clamp_sum.map(1))
    measurement, scale = _calibrated(
        lambda s: clamp_sum >> dp.m.then_laplace(scale=s),
        d_in=1,
        epsilon=epsilon,
        sensitivity=sensitivity,
    )
    noisy = float(measurement(np.ascontiguousarray(values, dtype=np.float64)))
    return noisy, Release(column, statistic, "laplace", float(measurement.map(1)), 0.0, scale)


_K = TypeVar("_K", int, str)


def noisy_threshold_counts(
    counts: Mapping[_K, int],
    epsilon: float,
    delta: float,
    min_count: int,
    column: str,
    statistic: str,
) -> tuple[dict[_K, int], Release]:
    """Counts over data-dependent keys, released with OpenDP's Laplace threshold mechanism.

    One row changes one key's count by one (L0 = L1 = Linf = 1). A key is released only
    when its noisy count reaches the threshold, which is the smallest integer keeping the
    release within ``delta`` and at least ``min_count``.

    Parameters
    ----------
    counts : mapping of int or str to int
        Exact counts per key (sketch bucket codes, or category keys).
    epsilon, delta : float
        The shares to spend; ``delta > 0``.
    min_count : int
        The policy's floor for the threshold.

    Returns
    -------
    released : dict
        The keys that passed, with their noisy counts.
    release : Release
    """
    if delta <= 0:
        raise ValueError(f"A threshold release needs delta > 0. Got {delta!r}.")
    dp = _opendp()
    key_type = dp.i64 if _int_keys(counts) else str
    domain = dp.map_domain(dp.atom_domain(T=key_type), dp.atom_domain(T=dp.i64))
    metric = dp.l01inf_distance(dp.absolute_distance(T=dp.i64))
    d_in = (1, 1, 1)

    def make(scale: float, threshold: int) -> Measurement:
        return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)

    # The epsilon of the threshold mechanism is that of its Laplace noise (1 / scale here);
    # calibrate it with a provisional threshold, then find the smallest threshold for delta.
    _, scale = _calibrated(
        lambda s: make(s, _THRESHOLD_SEARCH_MAX),
        d_in=d_in,
        epsilon=epsilon,
        sensitivity=1.0,
        part=0,
    )
    threshold = _smallest_threshold(lambda t: make(scale, t).map(d_in)[1] <= delta, scale, delta)
    threshold = max(threshold, int(min_count), 1)
    measurement = make(scale, threshold)
    spent_epsilon, spent_delta = measurement.map(d_in)
    exact = {key: int(count) for key, count in counts.items() if count > 0}
    released: dict[_K, int] = dict(measurement(exact)) if exact else {}
    release = Release(
        column,
        statistic,
        "laplace_threshold",
        float(spent_epsilon),
        float(spent_delta),
        scale,
        threshold,
    )
    return released, release


# -------------------------------------------------------------------- helpers


def _calibrated(
    build: Callable[[float], Measurement],
    d_in: Any,
    epsilon: float,
    sensitivity: float,
    part: int | None = None,
) -> tuple[Measurement, float]:
    """The measurement with the smallest scale (from ``sensitivity / epsilon`` upwards) whose
    privacy map stays within ``epsilon`` (``part`` picks the epsilon of a (eps, delta) map)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"A release needs a finite epsilon > 0. Got {epsilon!r}.")
    scale = sensitivity / epsilon
    for attempt in range(64):
        measurement = build(scale)
        spent = measurement.map(d_in)
        if part is not None:
            spent = spent[part]
        if float(spent) <= epsilon:
            return measurement, scale
        # Doubling steps from one part in 1e12: the first step fixes a one-ulp overshoot.
        scale *= 1.0 + _SCALE_NUDGE * 2.0 ** min(attempt, 40)
    raise RuntimeError(f"Could not calibrate a mechanism to epsilon {epsilon}.")


def _smallest_threshold(passes: Callable[[int], bool], scale: float, delta: float) -> int:
    """The smallest integer threshold for which ``passes`` (delta within budget) holds.

    The Laplace tail gives the guess ``1 + scale * ln(1 / (2 delta))``; a bisection within
    +-10% of it (about eight privacy-map evaluations instead of thirty over the whole range)
    finds the exact integer, and the whole range is searched should the guess not bracket it.
    """
    guess = 1.0 + scale * math.log(1.0 / (2.0 * delta))
    low = max(1, math.floor(guess * 0.9) - 2)
    high = min(_THRESHOLD_SEARCH_MAX, math.ceil(guess * 1.1) + 2)
    if passes(low) or not passes(high):
        low, high = 1, _THRESHOLD_SEARCH_MAX
        if passes(low):
            return low
    # invariant: passes(high) and not passes(low)
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle
    return high


def _int_keys(counts: Mapping[Any, int]) -> bool:
    return all(isinstance(key, int) for key in counts)
