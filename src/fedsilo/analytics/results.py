"""The results of an EDA session: a collection of datasets, each a collection of columns.

::

    results = session.results()                # EDA Session collection of datasets: [...]
    results.describe()                         # (dataset, statistic) x column
    results["dataset_one"].describe()          # statistic x column
    results["dataset_one"]["x1"].mean()        # one number
    results["dataset_one"][["x10", "x11"]].uniques()
    results["dataset_two"].plot_hist()         # a matplotlib Figure, one panel per column
    results.pooled().describe()                # every dataset merged exactly

The same statistics exist at the three levels: a number for a column, a Series (indexed by
column) for a dataset, a DataFrame (datasets x columns) for the collection. A statistic that
does not apply to a column (the mean of a categorical column, the mode of a continuous one)
or a column absent from a dataset is NaN, as in pandas.

Continuous statistics: ``count``, ``nulls``, ``mean``, ``std``, ``var``, ``min``, ``max``
(exact without differential privacy; with it, from noisy sums of the values clamped to the
agreed private range, and ``min``/``max`` are that range's ends -- the extremes of the sketch
buckets that passed the privacy threshold -- never a row's value), ``median`` and
``quantile(q)`` (without DP from the log-bucket sketch, within its ``relative_accuracy`` of
the rank-``floor(q (n - 1))`` value unless the policy's ``min_count`` merged that value's
bucket with neighbours; with DP from noisy counts on a grid over the agreed range, within
the bound of :mod:`fedsilo.analytics.quantiles`), and ``quantile_interval(q)``, the
interval that holds the true value -- for certain without DP, with probability
``1 - alpha`` with it: the accuracy each quantile achieved. Categorical: ``unique_count``, ``mode``,
``uniques`` (the released categories, most frequent first). ``results.warnings`` says when DP
was off or a private range left many rows outside; ``results.privacy`` holds each dataset's
ledger of noisy releases and what they cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsilo.analytics.describe import DESCRIBE_ROWS
from fedsilo.analytics.privacy import Release
from fedsilo.analytics.stats import ColumnStats, pool

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FORMAT", "POOLED", "DatasetPrivacy", "EdaColumn", "EdaDataset", "EdaResults"]

#: the ``format`` tag of a serialized result
FORMAT = "fedsilo.eda/1"
#: the name of the merged dataset returned by :meth:`EdaResults.pooled`
POOLED = "pooled"

_Stat = Callable[[ColumnStats], Any]

#: statistic name -> how a column computes it
_STATISTICS: dict[str, _Stat] = {
    "count": lambda s: s.moments.count,
    "nulls": lambda s: s.moments.nulls,
    "mean": lambda s: s.moments.mean if s.kind == "continuous" else math.nan,
    "std": lambda s: s.moments.std if s.kind == "continuous" else math.nan,
    "var": lambda s: s.moments.variance if s.kind == "continuous" else math.nan,
    "min": lambda s: s.moments.min if s.kind == "continuous" else math.nan,
    "max": lambda s: s.moments.max if s.kind == "continuous" else math.nan,
    "median": lambda s: s.quantile(0.5),
    "unique_count": lambda s: s.unique_count(),
    "mode": lambda s: s.mode(),
    "uniques": lambda s: s.uniques(),
}


@dataclass(frozen=True)
class DatasetPrivacy:
    """What one dataset's client released and what it cost.

    Attributes
    ----------
    epsilon, delta : float
        Spent by this client (sums over :attr:`releases`; 0 without DP).
    releases : list of Release
        The client's ledger, one entry per noisy release.
    """

    epsilon: float = 0.0
    delta: float = 0.0
    releases: list[Release] = field(default_factory=list)


class EdaColumn:
    """One column of one dataset (or of the pooled datasets)."""

    def __init__(self, dataset: str, stats: ColumnStats) -> None:
        self.dataset = dataset
        self.stats = stats

    @property
    def name(self) -> str:
        return self.stats.name

    @property
    def kind(self) -> str:
        """``"continuous"`` or ``"categorical"``."""
        return self.stats.kind

    def count(self) -> float:
        return float(_STATISTICS["count"](self.stats))

    def nulls(self) -> float:
        return float(_STATISTICS["nulls"](self.stats))

    def mean(self) -> float:
        return float(_STATISTICS["mean"](self.stats))

    def std(self) -> float:
        """Sample standard deviation (``ddof=1``, as pandas)."""
        return float(_STATISTICS["std"](self.stats))

    def var(self) -> float:
        return float(_STATISTICS["var"](self.stats))

    def min(self) -> float:
        return float(_STATISTICS["min"](self.stats))

    def max(self) -> float:
        return float(_STATISTICS["max"](self.stats))

    def median(self) -> float:
        return self.stats.quantile(0.5)

    def quantile(self, q: float | Sequence[float] = 0.5) -> float | pd.Series:
        """The value at quantile ``q`` (a Series indexed by ``q`` for several)."""
        if isinstance(q, int | float):
            return self.stats.quantile(float(q))
        return pd.Series([self.stats.quantile(float(x)) for x in q], index=list(q), name=self.name)

    def quantile_interval(self, q: float = 0.5, alpha: float = 0.05) -> tuple[float, float]:
        """``(low, high)`` holding the true rank-``floor(q (n - 1))`` value: for certain
        without DP (the value's sketch bucket, or the merged bucket the policy's
        ``min_count`` made), with probability ``1 - alpha`` under DP (for the values clamped
        to the agreed range; see :mod:`fedsilo.analytics.quantiles`)."""
        return self.stats.quantile_interval(float(q), alpha)

    def unique_count(self) -> float:
        return self.stats.unique_count()

    def mode(self) -> Any:
        return self.stats.mode()

    def uniques(self) -> Any:
        return self.stats.uniques()

    def describe(self) -> pd.Series:
        """The :data:`~fedsilo.analytics.describe.DESCRIBE_ROWS` statistics as a Series."""
        return pd.Series(self.stats.describe(), name=self.name, dtype=object)

    def histogram(self) -> pd.Series:
        """The released counts: indexed by bin interval (continuous) or category."""
        stats = self.stats
        if stats.kind == "categorical":
            counts = stats.value_counts or []
            return pd.Series(
                [c for _, c in counts], index=[v for v, _ in counts], name=self.name, dtype=float
            )
        if stats.histogram is None or stats.edges is None:
            return pd.Series([], name=self.name, dtype=float)
        index = pd.IntervalIndex.from_breaks(stats.edges, closed="left")
        return pd.Series(stats.histogram, index=index, name=self.name, dtype=float)

    def plot_hist(self) -> Figure:
        """A Figure with this column's histogram."""
        from fedsilo.analytics.plots import column_figure

        return column_figure(self.name, {self.dataset: self.stats}, f"{self.dataset}: {self.name}")

    def __repr__(self) -> str:
        return (
            f"EDA column {self.name!r} of dataset {self.dataset!r} "
            f"({self.kind}, count {_shown(self.count())})"
        )


class EdaDataset:
    """The analysed columns of one dataset (or of the pooled datasets).

    Columns are retrieved by name or by position: ``dataset["x1"]``, ``dataset[0]``; a list
    gives a dataset of those columns: ``dataset[["x10", "x11"]]``.
    """

    def __init__(self, name: str, columns: Mapping[str, ColumnStats]) -> None:
        self.name = name
        self._columns = dict(columns)

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def __getitem__(self, key: str | int | Sequence[str | int]) -> Any:
        if isinstance(key, str | int):
            name = self._column_name(key)
            return EdaColumn(self.name, self._columns[name])
        names = [self._column_name(k) for k in key]
        return EdaDataset(self.name, {n: self._columns[n] for n in names})

    def _column_name(self, key: str | int) -> str:
        names = self.columns
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise TypeError(f"Columns are selected by name or position. Got {key!r}.")
        if isinstance(key, int):
            if not -len(names) <= key < len(names):
                raise IndexError(
                    f"Dataset {self.name!r} has {len(names)} column(s); no position {key}."
                )
            return names[key]
        if key not in self._columns:
            raise KeyError(f"Dataset {self.name!r} has no column {key!r}; it has {names}.")
        return key

    def __iter__(self) -> Iterator[EdaColumn]:
        return (EdaColumn(self.name, stats) for stats in self._columns.values())

    def __len__(self) -> int:
        return len(self._columns)

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def stats(self, column: str) -> ColumnStats:
        return self._columns[column]

    def _series(self, statistic: _Stat, name: str) -> pd.Series:
        values = [statistic(stats) for stats in self._columns.values()]
        dtype = object if name in ("mode", "uniques") else float
        return pd.Series(values, index=self.columns, name=name, dtype=dtype)

    def count(self) -> pd.Series:
        return self._series(_STATISTICS["count"], "count")

    def nulls(self) -> pd.Series:
        return self._series(_STATISTICS["nulls"], "nulls")

    def mean(self) -> pd.Series:
        return self._series(_STATISTICS["mean"], "mean")

    def std(self) -> pd.Series:
        return self._series(_STATISTICS["std"], "std")

    def var(self) -> pd.Series:
        return self._series(_STATISTICS["var"], "var")

    def min(self) -> pd.Series:
        return self._series(_STATISTICS["min"], "min")

    def max(self) -> pd.Series:
        return self._series(_STATISTICS["max"], "max")

    def median(self) -> pd.Series:
        return self._series(_STATISTICS["median"], "median")

    def quantile(self, q: float | Sequence[float] = 0.5) -> pd.Series | pd.DataFrame:
        """A Series by column for one ``q``; a DataFrame (q x column) for several."""
        if isinstance(q, int | float):
            return self._series(lambda s: s.quantile(float(q)), str(q))
        return pd.DataFrame(
            {name: [stats.quantile(float(x)) for x in q] for name, stats in self._columns.items()},
            index=list(q),
        )

    def unique_count(self) -> pd.Series:
        return self._series(_STATISTICS["unique_count"], "unique_count")

    def mode(self) -> pd.Series:
        return self._series(_STATISTICS["mode"], "mode")

    def uniques(self) -> pd.Series:
        return self._series(_STATISTICS["uniques"], "uniques")

    def describe(self) -> pd.DataFrame:
        """statistic x column (rows: :data:`~fedsilo.analytics.describe.DESCRIBE_ROWS`)."""
        table = {name: stats.describe() for name, stats in self._columns.items()}
        return pd.DataFrame(table, index=list(DESCRIBE_ROWS), columns=self.columns, dtype=object)

    def plot_hist(self) -> Figure:
        """A Figure with one histogram panel per column."""
        from fedsilo.analytics.plots import grid_figure

        return grid_figure(self.columns, {self.name: self._columns}, self.name)

    def __repr__(self) -> str:
        return f"EDA dataset {self.name!r} with columns: {self.columns}"


class EdaResults:
    """Every dataset of an EDA session; see the module docstring.

    Parameters
    ----------
    datasets : mapping of str to (mapping of str to ColumnStats)
        Dataset name -> column name -> statistics, in display order.
    epsilon, delta : float or None
        The session's privacy budget per dataset; None when differential privacy was off.
    privacy : mapping of str to DatasetPrivacy, optional
        Each dataset's spend and ledger.
    warnings : list of str, optional
        Caveats about these results (DP off, datasets that did not take part, ...).
    """

    def __init__(
        self,
        datasets: Mapping[str, Mapping[str, ColumnStats]],
        *,
        epsilon: float | None,
        delta: float | None = None,
        privacy: Mapping[str, DatasetPrivacy] | None = None,
        warnings: Sequence[str] = (),
        client_names: Mapping[str, str] | None = None,
    ) -> None:
        self._datasets = {name: dict(columns) for name, columns in datasets.items()}
        self.epsilon = epsilon
        self.delta = delta
        self.privacy = dict(privacy or {})
        self.warnings = list(warnings)
        self.client_names = dict(client_names or {})

    # ------------------------------------------------------------------ access

    @property
    def datasets(self) -> list[str]:
        return list(self._datasets)

    @property
    def columns(self) -> list[str]:
        """Every column name, in order of first appearance."""
        return list(dict.fromkeys(c for cols in self._datasets.values() for c in cols))

    def __getitem__(self, name: str | int) -> EdaDataset:
        if isinstance(name, int) and not isinstance(name, bool):
            name = self.datasets[name]
        if name not in self._datasets:
            raise KeyError(f"No dataset {name!r} in these results; datasets: {self.datasets}.")
        return EdaDataset(name, self._datasets[name])

    def __iter__(self) -> Iterator[EdaDataset]:
        return (self[name] for name in self._datasets)

    def __len__(self) -> int:
        return len(self._datasets)

    def __contains__(self, name: object) -> bool:
        return name in self._datasets

    def keys(self) -> list[str]:
        return self.datasets

    def pooled(self) -> EdaDataset:
        """Every column merged over the datasets that have it: exact sums of counts and
        histograms, Chan's merge of means and variances, merged sketches for quantiles."""
        merged = {
            name: pool([cols[name] for cols in self._datasets.values() if name in cols])
            for name in self.columns
        }
        return EdaDataset(POOLED, merged)

    # -------------------------------------------------------------- statistics

    def _table(self, statistic: _Stat, name: str) -> pd.DataFrame:
        dtype = object if name in ("mode", "uniques") else float
        rows = {
            dataset: [statistic(cols[c]) if c in cols else math.nan for c in self.columns]
            for dataset, cols in self._datasets.items()
        }
        return pd.DataFrame.from_dict(rows, orient="index", columns=self.columns, dtype=dtype)

    def count(self) -> pd.DataFrame:
        return self._table(_STATISTICS["count"], "count")

    def nulls(self) -> pd.DataFrame:
        return self._table(_STATISTICS["nulls"], "nulls")

    def mean(self) -> pd.DataFrame:
        return self._table(_STATISTICS["mean"], "mean")

    def std(self) -> pd.DataFrame:
        return self._table(_STATISTICS["std"], "std")

    def var(self) -> pd.DataFrame:
        return self._table(_STATISTICS["var"], "var")

    def min(self) -> pd.DataFrame:
        return self._table(_STATISTICS["min"], "min")

    def max(self) -> pd.DataFrame:
        return self._table(_STATISTICS["max"], "max")

    def median(self) -> pd.DataFrame:
        return self._table(_STATISTICS["median"], "median")

    def quantile(self, q: float = 0.5) -> pd.DataFrame:
        """dataset x column: the value at quantile ``q`` of each column in each dataset."""
        return self._table(lambda s: s.quantile(float(q)), str(q))

    def unique_count(self) -> pd.DataFrame:
        return self._table(_STATISTICS["unique_count"], "unique_count")

    def mode(self) -> pd.DataFrame:
        return self._table(_STATISTICS["mode"], "mode")

    def uniques(self) -> pd.DataFrame:
        return self._table(_STATISTICS["uniques"], "uniques")

    def describe(self) -> pd.DataFrame:
        """(dataset, statistic) x column; NaN where a column is absent from a dataset."""
        frames = []
        for cols in self._datasets.values():
            table = {
                c: cols[c].describe() if c in cols else dict.fromkeys(DESCRIBE_ROWS, math.nan)
                for c in self.columns
            }
            frame = pd.DataFrame(table, index=list(DESCRIBE_ROWS), columns=self.columns)
            frames.append(frame.astype(object))
        return pd.concat(frames, keys=self.datasets, names=["dataset", "statistic"])

    def plot_hist(self) -> Figure:
        """A Figure with one panel per column, each overlaying the datasets that have it."""
        from fedsilo.analytics.plots import grid_figure

        return grid_figure(self.columns, self._datasets, "EDA session: all datasets")

    def privacy_report(self) -> pd.DataFrame:
        """Each dataset's epsilon and delta spent, and its number of noisy releases."""
        rows = {
            name: {
                "epsilon": p.epsilon,
                "delta": p.delta,
                "releases": float(len(p.releases)),
            }
            for name, p in self.privacy.items()
        }
        return pd.DataFrame.from_dict(rows, orient="index", dtype=float)

    # --------------------------------------------------------- (de)serializing

    def to_payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A JSON-safe header and named arrays (how the server saves the results)."""
        arrays: dict[str, np.ndarray] = {}
        datasets = []
        for i, (name, cols) in enumerate(self._datasets.items()):
            columns = []
            for j, stats in enumerate(cols.values()):
                meta, column_arrays = stats.to_payload(f"d{i}/c{j}/")
                columns.append(meta)
                arrays.update(column_arrays)
            spent = self.privacy.get(name, DatasetPrivacy())
            datasets.append(
                {
                    "name": name,
                    "client_name": self.client_names.get(name, name),
                    "epsilon_spent": spent.epsilon,
                    "delta_spent": spent.delta,
                    "releases": [r.to_json() for r in spent.releases],
                    "columns": columns,
                }
            )
        meta = {
            "format": FORMAT,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "warnings": self.warnings,
            "datasets": datasets,
        }
        return meta, arrays

    @classmethod
    def from_payload(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> EdaResults:
        """Rebuild what :meth:`to_payload` wrote.

        Raises
        ------
        ValueError
            When ``meta`` is not an EDA result of a format this version reads.
        """
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"Not an EDA result of format {FORMAT!r}: format is {meta.get('format')!r}."
            )
        datasets: dict[str, dict[str, ColumnStats]] = {}
        privacy: dict[str, DatasetPrivacy] = {}
        client_names: dict[str, str] = {}
        for i, entry in enumerate(meta.get("datasets", [])):
            name = str(entry["name"])
            datasets[name] = {}
            for j, column in enumerate(entry.get("columns", [])):
                stats = ColumnStats.from_payload(column, arrays, f"d{i}/c{j}/")
                datasets[name][stats.name] = stats
            privacy[name] = DatasetPrivacy(
                epsilon=float(entry.get("epsilon_spent") or 0.0),
                delta=float(entry.get("delta_spent") or 0.0),
                releases=[Release.from_json(r) for r in entry.get("releases", [])],
            )
            client_names[name] = str(entry.get("client_name", name))
        return cls(
            datasets,
            epsilon=meta.get("epsilon"),
            delta=meta.get("delta"),
            privacy=privacy,
            warnings=list(meta.get("warnings", [])),
            client_names=client_names,
        )

    def __repr__(self) -> str:
        lines = [f"EDA Session collection of datasets: {self.datasets}"]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _shown(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:g}"
