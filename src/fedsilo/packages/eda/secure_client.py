"""The client half of eda under secure aggregation: fixed-length vectors for the secure sum.

The executor (:class:`~fedsilo.packages.eda.client.EdaExecutor`) answers these two task
kinds; the client's secure-aggregation mod (:mod:`fedsilo.client.secure`) then multiplies
every reply array by the task's public scale, masks it and sends one vector, so the server
learns only the sum over every silo (:mod:`fedsilo.packages.eda.secure_server`). Every silo
answers the same layout: a column it does not have is all zeros.

``eda_sketch_sum`` (round 1, after a schema-only ``eda_profile``)
    meta ``{"columns": [name, ...]}``: the columns that may be continuous. Arrays per listed
    column ``j``: ``c{j}/sketch``, its bucket counts on the fixed window of
    :class:`~fedsilo.analytics.grid.SketchGrid`, and ``c{j}/profile`` = ``[has the column,
    has at most max_categories distinct values, values beyond the window]``.
``eda_summary_sum`` (round 2)
    meta ``{"columns": [{"name", "kind", "edges"}, ...], "norms": {name: pooled count},
    "levels": L}``. Arrays per column ``j``: ``c{j}/counts`` = ``[non-null, null]``; for a
    continuous column with edges also ``c{j}/histogram`` (counts on the edges) and
    ``c{j}/sums`` = ``[sum y, sum y^2] * L / norm`` with ``y = (clip(x) - centre) / half``
    the value scaled to ``[-1, 1]`` over the agreed range.

Counts travel as integers: the scale the server sets (``clip_range / L``, with ``L =
2 ** (quantization_bits - 1) - 1`` the fixed point's largest level) makes each one exactly
one level, so counts up to ``L`` a silo are summed without error. ``sum y`` is at most a
silo's count, hence at most the pooled count ``norm``, so ``sum y * L / norm`` is within
``L`` levels and rounds by at most half a level.

With ``epsilon`` set (and ``categorical`` declared, see :mod:`fedsilo.config.secure`) every
count, bucket, bin and sum is noised on the client *before* it is masked, with the
mechanisms and budget shares of :mod:`fedsilo.analytics.privacy`: the sketch window by the
discrete Laplace mechanism on every bucket (a fixed grid, so no threshold and no delta; share
``PROFILE_SHARES``), round 2 as without secure aggregation (``CONTINUOUS_SHARES``; the
quantile grid ``c{j}/grid`` on ``quantile_bins`` bins), a categorical column's counts with the
column's whole share (its value counts are omitted). The noise scales, a public function of
the budget, go in clear (``noise_scales``) with ``epsilon_spent``; the profile reports no
distinct or out-of-window count. The sums' ``norm`` then leaves room for the noise.

Both replies' meta is ``{"num_rows", "columns": [{"name", "moments": {"count"}}]}``: the
data owner's policy (:mod:`fedsilo.client.release_guard`, inside the masking) holds each
column's count to ``min_rows`` and the rows to the delta rule before anything is masked;
what reaches the server in clear is the row count and the column names only
(:func:`fedsilo.workflows.secure.clear_meta`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsilo.analytics.grid import SketchGrid
from fedsilo.analytics.histograms import agreed_edges, histogram
from fedsilo.analytics.privacy import (
    CONTINUOUS_NO_RANGE_SHARES,
    CONTINUOUS_SHARES,
    PROFILE_SHARES,
    Release,
    noisy_counts,
    noisy_sum,
)
from fedsilo.errors import TaskError
from fedsilo.packages.eda.config import EdaModelConfig
from fedsilo.wire import Arrays

__all__ = ["SECURE_KINDS", "SKETCH_SUM", "SUMMARY_SUM", "SecureColumn", "sketch_sum", "summary_sum"]

SKETCH_SUM = "eda_sketch_sum"
SUMMARY_SUM = "eda_summary_sum"
#: the task kinds of eda under secure aggregation
SECURE_KINDS = (SKETCH_SUM, SUMMARY_SUM)


@dataclass(frozen=True)
class SecureColumn:
    """One analysed column of this silo: its non-null numeric values (None when it is not
    numeric), non-null and null counts."""

    values: np.ndarray | None
    count: int
    nulls: int


def sketch_sum(
    mc: EdaModelConfig,
    columns: Mapping[str, SecureColumn],
    rows: int,
    meta: Mapping[str, Any],
    epsilon: float = 0.0,
) -> tuple[dict[str, Any], Arrays]:
    """Round 1's vector: the dense sketch and the profile counts of each listed column
    (``epsilon``: each column's budget under DP)."""
    names = _names(meta.get("columns"), SKETCH_SUM)
    grid = SketchGrid(mc.sketch_accuracy())
    arrays: Arrays = {}
    ledger = _Ledger()
    for j, name in enumerate(names):
        column = columns.get(name)
        dense = np.zeros(grid.size)
        profile = np.zeros(3)
        if column is not None and column.values is not None:
            dense, outside = grid.counts(column.values)
            if mc.private:
                dense = ledger.counts(dense, epsilon * PROFILE_SHARES["sketch"], name, "sketch")
                profile = np.array([1.0, 0.0, 0.0])  # the schema only: no data-dependent bit
            else:
                few = int(np.unique(column.values).size <= mc.max_categories)
                profile = np.array([1.0, float(few), float(outside)])
        arrays[f"c{j}/sketch"] = dense
        arrays[f"c{j}/profile"] = profile
    return {**_counts_meta(columns, names, rows), **ledger.meta()}, arrays


def summary_sum(
    mc: EdaModelConfig,
    columns: Mapping[str, SecureColumn],
    rows: int,
    meta: Mapping[str, Any],
    epsilon: float = 0.0,
) -> tuple[dict[str, Any], Arrays]:
    """Round 2's vector: counts, histograms and scaled sums of each planned column
    (``epsilon``: each column's budget under DP)."""
    plan = meta.get("columns")
    if not isinstance(plan, list) or not all(isinstance(c, Mapping) for c in plan):
        raise TaskError(f"Task {SUMMARY_SUM!r} needs meta 'columns' as a list of objects.")
    norms = meta.get("norms")
    levels = meta.get("levels")
    if not isinstance(norms, Mapping) or isinstance(levels, bool) or not isinstance(levels, int):
        raise TaskError(
            f"Task {SUMMARY_SUM!r} needs meta 'norms' (column -> pooled count) and 'levels' "
            f"(an integer). Got {norms!r} and {levels!r}."
        )
    arrays: Arrays = {}
    names: list[str] = []
    ledger = _Ledger()
    for j, spec in enumerate(plan):
        name = str(spec.get("name"))
        names.append(name)
        column = columns.get(name)
        counts = np.zeros(2)
        edges = spec.get("edges")
        continuous = spec.get("kind") == "continuous"
        if column is not None:
            counts = np.array([float(column.count), float(column.nulls)])
            if mc.private:
                share = (
                    1.0  # a categorical column releases its counts only
                    if not continuous
                    else CONTINUOUS_SHARES["counts"]
                    if edges is not None
                    else CONTINUOUS_NO_RANGE_SHARES["counts"]
                )
                counts = ledger.counts(counts, epsilon * share, name, "counts")
        arrays[f"c{j}/counts"] = counts
        if not continuous or edges is None:
            continue
        bins = np.asarray(edges, dtype=np.float64)
        if bins.ndim != 1 or bins.size < 2 or bool(np.any(np.diff(bins) <= 0)):
            raise TaskError(
                f"Column {name!r}: the edges must be an increasing list of at least two "
                f"numbers. Got {edges!r}."
            )
        norm = norms.get(name)
        if not isinstance(norm, int | float) or not math.isfinite(norm) or norm <= 0:
            raise TaskError(f"Column {name!r}: meta 'norms' needs a count > 0. Got {norm!r}.")
        low, high = float(bins[0]), float(bins[-1])
        hist = np.zeros(bins.size - 1)
        sums = np.zeros(2)
        grid_edges = agreed_edges(low, high, mc.quantile_bins) if mc.private else None
        grid = np.zeros(0 if grid_edges is None else grid_edges.size - 1)
        if column is not None and column.values is not None:
            values = column.values
            hist = histogram(values, bins).astype(np.float64)
            center, half = (low + high) / 2.0, (high - low) / 2.0
            shifted = np.clip(values, low, high) - center
            if mc.private:
                assert grid_edges is not None  # a finite range, as the edges' ends are
                hist = ledger.counts(
                    hist, epsilon * CONTINUOUS_SHARES["histogram"], name, "histogram"
                )
                grid = ledger.counts(
                    histogram(values, grid_edges).astype(np.float64),
                    epsilon * CONTINUOUS_SHARES["quantiles"],
                    name,
                    "quantiles",
                )
                total = ledger.sum(shifted, (low - center, high - center), epsilon, name, "sum")
                squares = ledger.sum(
                    np.square(shifted), (0.0, half * half), epsilon, name, "sum_squares"
                )
                sums = np.array([total / half, squares / (half * half)])
            else:
                y = shifted / half
                sums = np.array([y.sum(), np.square(y).sum()])
            sums = sums * (levels / float(norm))
        arrays[f"c{j}/histogram"] = hist
        arrays[f"c{j}/sums"] = sums
        if grid_edges is not None:
            arrays[f"c{j}/grid"] = grid
    return {**_counts_meta(columns, names, rows), **ledger.meta()}, arrays


class _Ledger:
    """The DP releases of one reply: noised values, and what they cost (clear meta)."""

    def __init__(self) -> None:
        self.releases: list[Release] = []

    def counts(self, counts: np.ndarray, epsilon: float, column: str, statistic: str) -> np.ndarray:
        # Negative noisy counts are kept: the pooled count's error is then a sum of noises.
        noisy, release = noisy_counts(
            np.rint(counts).astype(np.int64), epsilon, column, statistic, nonnegative=False
        )
        self.releases.append(release)
        return noisy.astype(np.float64)

    def sum(
        self,
        values: np.ndarray,
        bounds: tuple[float, float],
        column_epsilon: float,
        column: str,
        statistic: str,
    ) -> float:
        epsilon = column_epsilon * CONTINUOUS_SHARES[statistic]
        total, release = noisy_sum(values, bounds, epsilon, column, statistic)
        self.releases.append(release)
        return total

    def meta(self) -> dict[str, Any]:
        """``releases`` (the ledger: the owner's policy does not hold noised counts to
        min_rows), ``epsilon_spent`` and ``noise_scales`` (both in clear); empty without DP."""
        if not self.releases:
            return {}
        scales: dict[str, dict[str, float]] = {}
        for release in self.releases:
            scales.setdefault(release.column, {})[release.statistic] = release.scale
        return {
            "releases": [r.to_json() for r in self.releases],
            "epsilon_spent": math.fsum(r.epsilon for r in self.releases),
            "noise_scales": scales,
        }


def _counts_meta(
    columns: Mapping[str, SecureColumn], names: list[str], rows: int
) -> dict[str, Any]:
    """The reply meta the owner's policy reads (and :func:`clear_meta` strips to names)."""
    return {
        "num_rows": rows,
        "columns": [
            {"name": name, "moments": {"count": columns[name].count}}
            for name in names
            if name in columns
        ],
    }


def _names(raw: Any, kind: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise TaskError(f"Task {kind!r} needs meta 'columns' as a list of names. Got {raw!r}.")
    return list(raw)
