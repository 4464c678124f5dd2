"""Data binding (part of the package contract): the tables a package's client reads, by role, and
their loading.

A package declares what its client needs in ``ModelPackage.binding``, a :class:`DataBinding`:

* :data:`TRAIN_TEST` (the default) -- a ``train`` table and an optional ``test`` table, both
  checked for the columns ``data_config.required_columns()`` lists (numeric, no nulls);
* :data:`NAMED_DATASET` -- one ``dataset`` table joined under a dataset name; the session's
  data_config picks its columns with ``columns_for(name, available)`` (EDA);
* ``id_column`` -- the data_config field naming a row-id column (PRL, VFL): it must exist in
  every table, hold no nulls and no repeats; it is read but never summarised as numeric.

The runtime, the CLI (``fedsilo client join --table ROLE=PATH``, with ``train`` and ``eda`` as
named shortcuts), the local runners and the SDK all hand :meth:`DataBinding.bind` a mapping
``role -> path``; a new session kind declares a new binding instead of forking them.
Everything is checked before joining, so a session never sees a participant whose data it
cannot use, and every problem of every table is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fedsilo.errors import ConfigError, DataError
from fedsilo.wire import CLIENT_NAME_PATTERN

if TYPE_CHECKING:
    import pandas as pd

    from fedsilo.data.dataset import LocalDataset
    from fedsilo.wire import DatasetSummary

__all__ = [
    "NAMED_DATASET",
    "TRAIN_TEST",
    "BoundData",
    "DataBinding",
    "NamedDatasetsConfig",
    "TableSpec",
]


@runtime_checkable
class NamedDatasetsConfig(Protocol):
    """A data_config that maps dataset names to the columns each dataset contributes."""

    def columns_for(self, dataset_name: str, available: Sequence[str]) -> list[str]:
        """The columns read from dataset ``dataset_name`` with columns ``available``;
        raises :class:`~fedsilo.errors.DataError` listing what is missing."""
        ...


@dataclass(frozen=True)
class TableSpec:
    """One table a package's client reads.

    Attributes
    ----------
    role : str
        ``"train"``, ``"test"``, ``"dataset"``, ...: the key of the mapping handed to
        :meth:`DataBinding.bind` and of ``--table ROLE=PATH``.
    required : bool
    option : str
        The CLI option that names it, used in messages (``"--train-path"``).
    """

    role: str
    required: bool
    option: str


@dataclass(frozen=True)
class BoundData:
    """This silo's validated data for one session.

    Attributes
    ----------
    dataset : LocalDataset
        What the executor gets.
    summary : DatasetSummary
        What the join tells the server: row counts, names and types of the columns read.
    columns : list of str
        The columns the session reads.
    """

    dataset: LocalDataset
    summary: DatasetSummary
    columns: list[str]


@dataclass(frozen=True)
class DataBinding:
    """The tables a package's client needs, by role (see the module docstring).

    Attributes
    ----------
    tables : tuple of TableSpec
        In the order the roles are loaded and reported.
    named : bool
        The client joins under a dataset name and the data_config (a
        :class:`NamedDatasetsConfig`) selects its columns.
    id_column : str, optional
        Name of the data_config field that names the row-id column.
    join_hint : str
        How a user joins such a session, quoted in the refusal of a wrong one.
    """

    tables: tuple[TableSpec, ...]
    named: bool = False
    id_column: str | None = None
    join_hint: str = field(default="")

    @property
    def roles(self) -> list[str]:
        return [spec.role for spec in self.tables]

    def check_tables(
        self, tables: Mapping[str, str | None], dataset_name: str | None, where: str
    ) -> None:
        """Refuse tables or a dataset name this binding does not take.

        Parameters
        ----------
        tables : mapping of role to path (None: not given)
        dataset_name : str or None
        where : str
            Names the session in messages (``"Session 3f9a0c12de (eda, package eda)"``).

        Raises
        ------
        ConfigError
        """
        if self.named and dataset_name is None:
            raise ConfigError(f"{where} analyses named datasets: join it with {self.join_hint}.")
        if not self.named and dataset_name is not None:
            raise ConfigError(
                f"{where} does not take named datasets: join it with {self.join_hint}."
            )
        if dataset_name is not None and not CLIENT_NAME_PATTERN.match(dataset_name):
            raise ConfigError(
                "The dataset name must start with a letter or digit and contain only "
                f"letters, digits and '_.@:-' (at most 128 characters). Got {dataset_name!r}."
            )
        given = {role for role, path in tables.items() if path is not None}
        unknown = sorted(given - set(self.roles))
        missing = [s.role for s in self.tables if s.required and s.role not in given]
        if unknown or missing:
            wanted = ", ".join(
                f"{s.role} ({'required' if s.required else 'optional'})" for s in self.tables
            )
            got = ", ".join(sorted(given)) or "none"
            raise ConfigError(
                f"{where} reads the tables {wanted}; got {got}. Join it with {self.join_hint}."
            )

    def bind(
        self,
        data_config: Any,
        tables: Mapping[str, str | None],
        *,
        dataset_name: str | None = None,
        batch_size: int = 1,
        where: str = "The session",
    ) -> BoundData:
        """Load and validate this silo's tables for a session's data_config.

        Parameters
        ----------
        data_config : the package's parsed data_config
        tables : mapping of role to path (local path or fsspec URL, parquet or CSV)
        dataset_name : str, optional
            The dataset's name, for a :attr:`named` binding.
        batch_size : int
            Mini-batch size handed to the executor.
        where : str
            Names the session in messages.

        Raises
        ------
        ConfigError
            Tables or a dataset name this binding does not take.
        DataError
            Every problem of every table, together.
        """
        from fedsilo.data.dataset import LocalDataset
        from fedsilo.data.validation import summarize

        self.check_tables(tables, dataset_name, where)
        id_column = self._id_column(data_config)
        problems: list[str] = []
        frames: dict[str, pd.DataFrame] = {}
        columns: list[str] = []
        for spec in self.tables:
            path = tables.get(spec.role)
            if path is None:
                continue
            frame = self._load(spec, path, problems)
            if frame is None:
                continue
            frames[spec.role] = frame
            source = f"{spec.option} {path!r}"
            if self.named:
                assert dataset_name is not None  # check_tables made sure
                columns = data_config.columns_for(dataset_name, [str(c) for c in frame.columns])
            else:
                columns = list(data_config.required_columns())
                problems.extend(_find_problems(frame, columns, source))
            if id_column is not None:
                problems.extend(_id_problems(frame, id_column, source))
        if problems or not frames:
            raise DataError(problems, source="the local data")
        first, *rest = frames.values()
        second = rest[0] if rest else None
        read = [*([id_column] if id_column and id_column not in columns else []), *columns]
        dataset = LocalDataset(train=first, test=second, batch_size=batch_size, name=dataset_name)
        return BoundData(
            dataset=dataset,
            summary=summarize(first, second, columns=read),
            columns=read,
        )

    def _id_column(self, data_config: Any) -> str | None:
        if self.id_column is None:
            return None
        value = getattr(data_config, self.id_column, None)
        if value is not None and not isinstance(value, str):
            raise ConfigError(
                f"The data_config field {self.id_column!r} names the id column and must be a "
                f"string. Got {value!r}."
            )
        return value

    def _load(self, spec: TableSpec, path: str, problems: list[str]) -> pd.DataFrame | None:
        from fedsilo.data.loading import load_table

        try:
            return load_table(path, spec.option)
        except DataError as exc:
            problems.extend(exc.problems)
            return None

    def describe(self, dataset: LocalDataset) -> str:
        """One progress line: what was loaded."""
        if self.named:
            return f"dataset {dataset.name!r} {len(dataset.train)} rows"
        test = f", test {len(dataset.test)} rows" if dataset.test is not None else ", no test set"
        return f"train {len(dataset.train)} rows{test}"


def _find_problems(frame: pd.DataFrame, columns: list[str], source: str) -> list[str]:
    from fedsilo.data.validation import find_problems

    return find_problems(frame, columns, source)


def _id_problems(frame: pd.DataFrame, column: str, source: str) -> list[str]:
    if column not in {str(c) for c in frame.columns}:
        return [f"{source}: missing the id column {column!r}"]
    values = frame[column]
    problems = []
    nulls = int(values.isna().sum())
    if nulls:
        problems.append(f"{source}: id column {column!r} has {nulls} null value(s)")
    repeats = int(values.duplicated().sum())
    if repeats:
        problems.append(f"{source}: id column {column!r} has {repeats} repeated value(s)")
    return problems


#: A training table and an optional test table (HFL packages).
TRAIN_TEST = DataBinding(
    tables=(
        TableSpec("train", required=True, option="--train-path"),
        TableSpec("test", required=False, option="--test-path"),
    ),
    join_hint="`fedsilo client train --train-path P`",
)

#: One table joined under a dataset name; the data_config selects its columns (EDA).
NAMED_DATASET = DataBinding(
    tables=(TableSpec("dataset", required=True, option="--dataset-path"),),
    named=True,
    join_hint="`fedsilo client eda --dataset-path P --dataset-name NAME`",
)
