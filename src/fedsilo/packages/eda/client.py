"""The client half of eda: aggregates of one silo's columns, never its rows.

Task kinds
----------
``eda_profile`` (round 1)
    meta ``{}``. Replies ``{"dataset_name", "columns": [...], "releases": [...]}``: per
    analysed column its dtype, whether it is numeric and whether the session declares it
    categorical; for numeric columns that may be continuous also the distinct count (when the
    session detects categoricals) and the log-bucket quantile sketch (arrays ``c{j}/...``
    for the j-th column), and without DP the exact min and max.
``eda_summarize`` (round 2)
    meta ``{"columns": [{"name", "kind", "edges"}, ...]}``: the session's decision for every
    column (``kind`` ``"continuous"`` with agreed ``edges`` -- or null when no range could be
    agreed -- or ``"categorical"``). Replies ``{"dataset_name", "columns": [...],
    "releases": [...]}`` with one :class:`~fedsilo.analytics.stats.ColumnStats` payload per
    column (arrays prefixed ``c{j}/``): counts and moments, the histogram on the agreed edges
    or the value counts.

With ``epsilon`` set every released number goes through a mechanism of
:mod:`fedsilo.analytics.privacy` first, and ``releases`` is the ledger of what it cost; the
budget split is documented there. Round 2 of a continuous column then also releases noisy
counts on ``quantile_bins`` equal-width bins over the agreed range, which the quantiles come
from. Without it, histogram bins and categories below the policy's ``min_count`` are
withheld, sketch buckets below it are merged with their neighbours (their rows kept), and
everything else is exact.

Under ``secure_aggregation`` (:mod:`fedsilo.packages.eda.secure_client`) round 1's
``eda_profile`` carries the schema only (dtype, numeric, declared), the statistics travel in
``eda_sketch_sum`` and ``eda_summary_sum`` replies that the client masks, and a plain
``eda_summarize`` -- one silo's statistics in clear -- is refused.

A task asked again with the same meta (a round re-run after a server restart) is answered
from the first answer, so it costs no further privacy; asked with other meta it is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from fedsilo.analytics.describe import Moments
from fedsilo.analytics.histograms import (
    agreed_edges,
    histogram,
    sorted_counts,
    value_counts,
    withhold_small,
)
from fedsilo.analytics.privacy import (
    CATEGORICAL_SHARES,
    CONTINUOUS_NO_RANGE_SHARES,
    CONTINUOUS_SHARES,
    PROFILE_SHARES,
    PROFILE_SHARES_DETECTING,
    PROFILED_CATEGORICAL_SHARES,
    Release,
    noisy_count,
    noisy_counts,
    noisy_sum,
    noisy_threshold_counts,
)
from fedsilo.analytics.sketch import QuantileSketch
from fedsilo.analytics.stats import ColumnStats
from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.federation import ExecutorContext
from fedsilo.packages.eda.config import EdaDataConfig, EdaModelConfig
from fedsilo.packages.eda.secure_client import (
    SECURE_KINDS,
    SKETCH_SUM,
    SecureColumn,
    sketch_sum,
    summary_sum,
)
from fedsilo.wire import Arrays

__all__ = ["KINDS", "PROFILE", "SUMMARIZE", "EdaExecutor"]

PROFILE = "eda_profile"
SUMMARIZE = "eda_summarize"
#: the task kinds the executor handles
KINDS = (PROFILE, SUMMARIZE, *SECURE_KINDS)


@dataclass(frozen=True)
class _Column:
    name: str
    dtype: str
    numeric: bool
    declared: bool

    @property
    def profiled(self) -> bool:
        """Numeric and not declared categorical: round 1 releases its sketch."""
        return self.numeric and not self.declared


class EdaExecutor:
    """Computes one silo's EDA aggregates; see the module docstring.

    Parameters
    ----------
    model_config : EdaModelConfig
    data_config : EdaDataConfig
    dataset : LocalDataset
        ``train`` is the dataset, ``name`` its dataset name (required).

    Raises
    ------
    ConfigError
        When the dataset has no name.
    DataError
        Listing every problem: fewer rows than the policy's ``min_rows``, selected columns
        missing or out of range, repeated column names, infinite values.
    """

    def __init__(
        self,
        model_config: EdaModelConfig,
        data_config: EdaDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> None:
        if dataset.name is None:
            raise ConfigError(
                "An EDA client needs the name of its dataset (--dataset-name); got none."
            )
        self.model_config = model_config
        self.dataset_name = dataset.name
        frame = dataset.train
        source = f"dataset {dataset.name!r}"
        names = [str(c) for c in frame.columns]
        problems: list[str] = []
        selected: list[str] = []
        try:
            selected = data_config.columns_for(dataset.name, names)
        except DataError as exc:
            problems.extend(exc.problems)
        policy = model_config.policy
        if len(frame) < policy.min_rows:
            problems.append(
                f"{source} has {len(frame)} row(s); the session's policy requires at least "
                f"{policy.min_rows} before anything is shared"
            )
        columns: list[_Column] = []
        self._series: dict[str, pd.Series] = {}
        for name in selected:
            if names.count(name) > 1:
                problems.append(f"{source}: column {name!r} appears {names.count(name)} times")
                continue
            series = frame[name]
            numeric = is_numeric_dtype(series.dtype) and not is_bool_dtype(series.dtype)
            if numeric:
                values = series.to_numpy(dtype=np.float64, na_value=np.nan)
                infinite = int(np.isinf(values).sum())
                if infinite:
                    problems.append(f"{source}: column {name!r} has {infinite} infinite value(s)")
            columns.append(
                _Column(
                    name, str(series.dtype), numeric, model_config.is_declared_categorical(name)
                )
            )
            self._series[name] = series
        if problems:
            raise DataError(problems, source=source)
        self.columns = columns
        count = max(len(columns), 1)
        # Every row is in every column, so the budget is split over the columns (see privacy).
        self.epsilon = (model_config.epsilon or 0.0) / count
        self.delta = model_config.delta / count
        self._answers: dict[str, tuple[str, tuple[dict[str, Any], Arrays]]] = {}
        self._rows = len(frame)

    # ------------------------------------------------------------------- tasks

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        """Run one task (see the module docstring); repeated tasks reuse the first answer.

        Raises
        ------
        TaskError
            On an unknown kind, malformed meta, or a repeated kind with other meta.
        """
        if kind not in KINDS:
            raise TaskError(
                f"The eda client cannot run task kind {kind!r}; known kinds: {', '.join(KINDS)}."
            )
        signature = json.dumps(meta, sort_keys=True, default=str)
        previous = self._answers.get(kind)
        if previous is not None:
            if previous[0] != signature:
                raise TaskError(
                    f"This client already answered {kind!r} for this session with other "
                    "parameters; answering again would spend its privacy budget twice."
                )
            return previous[1]
        answer = self._answer(kind, meta)
        self._answers[kind] = (signature, answer)
        return answer

    def _answer(self, kind: str, meta: dict[str, Any]) -> tuple[dict[str, Any], Arrays]:
        mc = self.model_config
        if kind == PROFILE:
            return self.profile()
        if mc.secure != (kind in SECURE_KINDS):
            why = (
                "this session is under secure aggregation, so this client releases its "
                "statistics only into a secure sum"
                if mc.secure
                else "this session is not under secure aggregation"
            )
            raise TaskError(f"The eda client refuses task kind {kind!r}: {why}.")
        if kind == SUMMARIZE:
            return self.summarize(meta)
        secure = sketch_sum if kind == SKETCH_SUM else summary_sum
        return secure(mc, self._secure_columns(), self._rows, meta, self.epsilon)

    def _secure_columns(self) -> dict[str, SecureColumn]:
        columns: dict[str, SecureColumn] = {}
        for column in self.columns:
            if column.numeric:
                values, nulls = self._numeric(column.name)
                columns[column.name] = SecureColumn(values, int(values.size), nulls)
            else:
                series = self._series[column.name]
                nulls = int(series.isna().sum())
                columns[column.name] = SecureColumn(None, len(series) - nulls, nulls)
        return columns

    def profile(self) -> tuple[dict[str, Any], Arrays]:
        """Round 1: dtypes, and for possibly continuous columns distinct counts and sketches."""
        mc = self.model_config
        releases: list[Release] = []
        arrays: Arrays = {}
        described: list[dict[str, Any]] = []
        shares = PROFILE_SHARES_DETECTING if mc.detects_categoricals() else PROFILE_SHARES
        for j, column in enumerate(self.columns):
            entry: dict[str, Any] = {
                "name": column.name,
                "dtype": column.dtype,
                "numeric": column.numeric,
                "declared": column.declared,
                "distinct": None,
                "min": None,
                "max": None,
                "sketch": None,
            }
            described.append(entry)
            # Under secure aggregation the schema only: the statistics go into secure sums.
            if not column.profiled or mc.secure:
                continue
            values, _ = self._numeric(column.name)
            if mc.detects_categoricals():
                distinct = int(np.unique(values).size)
                if mc.private:
                    distinct, release = noisy_count(
                        distinct, self.epsilon * shares["distinct"], column.name, "distinct"
                    )
                    releases.append(release)
                entry["distinct"] = distinct
            sketch = QuantileSketch(mc.sketch_accuracy())
            sketch.add(values)
            if mc.private:
                released, release = noisy_threshold_counts(
                    sketch.to_counts(),
                    self.epsilon * shares["sketch"],
                    self.delta / 2,
                    mc.policy.min_count,
                    column.name,
                    "sketch",
                )
                releases.append(release)
                sketch = QuantileSketch.from_counts(sketch.relative_accuracy, released)
            else:
                entry["min"], entry["max"] = _json_float(sketch.min), _json_float(sketch.max)
                sketch = sketch.coarsened(mc.policy.min_count)
            entry["sketch"] = {
                "relative_accuracy": sketch.relative_accuracy,
                "zero_count": sketch.zero_count,
            }
            for key, value in sketch.to_arrays().items():
                arrays[f"c{j}/{key}"] = value
        meta = {
            "dataset_name": self.dataset_name,
            "columns": described,
            "releases": [r.to_json() for r in releases],
        }
        return meta, arrays

    def summarize(self, meta: dict[str, Any]) -> tuple[dict[str, Any], Arrays]:
        """Round 2: counts, moments and histograms (continuous) or value counts (categorical)."""
        plan = _plan(meta)
        releases: list[Release] = []
        arrays: Arrays = {}
        described: list[dict[str, Any]] = []
        for j, column in enumerate(self.columns):
            spec = plan.get(column.name)
            if spec is None:
                raise TaskError(
                    f"Task {SUMMARIZE!r} says nothing about column {column.name!r} of dataset "
                    f"{self.dataset_name!r}; expected a kind for every analysed column."
                )
            if spec["kind"] == "continuous":
                stats = self._continuous(column, spec.get("edges"), releases)
            else:
                stats = self._categorical(column, releases)
            column_meta, column_arrays = stats.to_payload(f"c{j}/")
            described.append(column_meta)
            arrays.update(column_arrays)
        reply = {
            "dataset_name": self.dataset_name,
            "columns": described,
            "releases": [r.to_json() for r in releases],
        }
        return reply, arrays

    # ------------------------------------------------------------------ columns

    def _continuous(self, column: _Column, raw_edges: Any, releases: list[Release]) -> ColumnStats:
        if not column.numeric:
            raise TaskError(
                f"Column {column.name!r} of dataset {self.dataset_name!r} is not numeric "
                f"(dtype {column.dtype}); it cannot be summarized as continuous."
            )
        mc = self.model_config
        values, nulls = self._numeric(column.name)
        edges = None if raw_edges is None else np.asarray(raw_edges, dtype=np.float64)
        if edges is not None and (edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0)):
            raise TaskError(
                f"Column {column.name!r}: the edges must be an increasing list of at least two "
                f"numbers. Got {raw_edges!r}."
            )
        if not mc.private:
            counts = None if edges is None else histogram(values, edges)
            released, withheld = (
                (None, 0) if counts is None else withhold_small(counts, mc.policy.min_count)
            )
            return ColumnStats(
                column.name,
                "continuous",
                column.dtype,
                Moments.of(values, nulls),
                edges=edges,
                histogram=released,
                withheld=withheld,
            )
        shares = CONTINUOUS_SHARES if edges is not None else CONTINUOUS_NO_RANGE_SHARES
        noisy, release = noisy_counts(
            np.array([values.size, nulls]), self.epsilon * shares["counts"], column.name, "counts"
        )
        releases.append(release)
        count, noisy_nulls = float(noisy[0]), float(noisy[1])
        if edges is None:
            moments = Moments(count=count, nulls=noisy_nulls)
            return ColumnStats(column.name, "continuous", column.dtype, moments)
        low, high = float(edges[0]), float(edges[-1])
        bins, release = noisy_counts(
            histogram(values, edges), self.epsilon * shares["histogram"], column.name, "histogram"
        )
        releases.append(release)
        quantile_edges = agreed_edges(low, high, mc.quantile_bins)
        assert quantile_edges is not None  # a finite range, as the edges' ends are
        grid, grid_release = noisy_counts(
            histogram(values, quantile_edges),
            self.epsilon * shares["quantiles"],
            column.name,
            "quantiles",
            nonnegative=False,
        )
        releases.append(grid_release)
        # Shifted to the centre of the range: OpenDP's float sum costs (upper - lower) per row
        # either way, but the squares of centred values are bounded by a quarter of the width
        # squared instead of the whole.
        center, half = (low + high) / 2.0, (high - low) / 2.0
        shifted = np.clip(values, low, high) - center
        total, release = noisy_sum(
            shifted, (low - center, high - center), self.epsilon * shares["sum"], column.name, "sum"
        )
        releases.append(release)
        squares, release = noisy_sum(
            shifted * shifted,
            (0.0, half * half),
            self.epsilon * shares["sum_squares"],
            column.name,
            "sum_squares",
        )
        releases.append(release)
        moments = Moments.from_sums(count, noisy_nulls, total, squares, center, (low, high))
        return ColumnStats(
            column.name,
            "continuous",
            column.dtype,
            moments,
            edges=edges,
            histogram=bins.astype(np.float64),
            quantile_edges=quantile_edges,
            quantile_counts=grid.astype(np.float64),
            quantile_scales=(grid_release.scale,),
        )

    def _categorical(self, column: _Column, releases: list[Release]) -> ColumnStats:
        mc = self.model_config
        series = self._series[column.name]
        nulls = int(series.isna().sum())
        exact = value_counts(series)
        if not mc.private:
            kept = {k: c for k, c in exact.items() if c >= mc.policy.min_count}
            moments = Moments(count=float(len(series) - nulls), nulls=float(nulls))
            return ColumnStats(
                column.name,
                "categorical",
                column.dtype,
                moments,
                value_counts=sorted_counts({k: float(c) for k, c in kept.items()}),
                withheld=len(exact) - len(kept),
            )
        # A profiled column already spent its round-1 share; its delta is split with the sketch.
        shares = PROFILED_CATEGORICAL_SHARES if column.profiled else CATEGORICAL_SHARES
        delta = self.delta / 2 if column.profiled else self.delta
        noisy, release = noisy_counts(
            np.array([len(series) - nulls, nulls]),
            self.epsilon * shares["counts"],
            column.name,
            "counts",
        )
        releases.append(release)
        released, release = noisy_threshold_counts(
            exact,
            self.epsilon * shares["value_counts"],
            delta,
            mc.policy.min_count,
            column.name,
            "value_counts",
        )
        releases.append(release)
        return ColumnStats(
            column.name,
            "categorical",
            column.dtype,
            Moments(count=float(noisy[0]), nulls=float(noisy[1])),
            value_counts=sorted_counts({k: float(c) for k, c in released.items()}),
        )

    def _numeric(self, name: str) -> tuple[np.ndarray, int]:
        """The non-null values of a numeric column as float64, and the number of nulls."""
        values = self._series[name].to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(values)
        nulls = int(missing.sum())
        return (values[~missing] if nulls else values), nulls


def _plan(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    columns = meta.get("columns")
    if not isinstance(columns, list):
        raise TaskError(f"Task {SUMMARIZE!r} needs meta 'columns' as a list. Got {columns!r}.")
    plan: dict[str, dict[str, Any]] = {}
    for spec in columns:
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("name"), str)
            or spec.get("kind") not in ("continuous", "categorical")
        ):
            raise TaskError(
                f"Task {SUMMARIZE!r}: each column needs a 'name' and a 'kind' of 'continuous' "
                f"or 'categorical'. Got {spec!r}."
            )
        plan[spec["name"]] = spec
    return plan


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
