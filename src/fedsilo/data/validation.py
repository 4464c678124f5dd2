"""Check a silo's table against what a session's data_config needs, before joining.

:func:`find_problems` lists *every* problem in one pass (missing columns, non-numeric columns,
nulls, infinities, column names the platform does not accept, an empty table), so a data owner
fixes them all at once instead of discovering them one run at a time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fedsilo.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from fedsilo.wire import DatasetSummary

__all__ = ["COLUMN_NAME_PATTERN", "find_problems", "summarize", "validate_table"]

#: Column names must start with a letter and contain only letters, digits, '-' and '_'
#: (the rule of the seed documentation's data requirements).
COLUMN_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")

# Listing thousands of available columns would bury the problem; this many is enough to spot
# a misspelling.
_MAX_LISTED_COLUMNS = 30


def _quoted(names: Sequence[object], limit: int = _MAX_LISTED_COLUMNS) -> str:
    shown = ", ".join(repr(str(name)) for name in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names) - limit} more)"
    return shown


def find_problems(
    df: pd.DataFrame, required_columns: Sequence[str], source: str = "dataset"
) -> list[str]:
    """Every reason ``df`` cannot be used, one message per problem.

    Parameters
    ----------
    df : DataFrame of shape (n_rows, n_columns)
    required_columns : sequence of str
        Columns the session's package reads (``data_config.required_columns()``); they must
        exist, be numeric and hold no null or infinite value.
    source : str
        Names the table in every message (e.g. ``"--train-path 'silo0.parquet'"``), so problems
        of several files can be listed together.

    Returns
    -------
    list of str
        Empty when the table is usable. Column names are checked for *all* columns of the
        table, because names must be consistent across silos whether or not this session
        reads them.
    """
    import numpy as np
    from pandas.api.types import is_float_dtype, is_numeric_dtype

    problems: list[str] = []
    if len(df) == 0:
        problems.append(f"{source}: has no rows")

    present = [str(column) for column in df.columns]
    wanted = list(dict.fromkeys(required_columns))  # predictors may repeat the target
    missing = [column for column in wanted if column not in present]
    if missing:
        available = _quoted(present) if present else "none"
        problems.append(
            f"{source}: missing required column(s) {_quoted(missing)}; "
            f"available columns: {available}"
        )

    counts = Counter(present)
    for name, count in counts.items():
        if count > 1:
            problems.append(f"{source}: column {name!r} appears {count} times")

    for position, name in enumerate(present):
        if name not in wanted or counts[name] > 1:
            continue
        series = df.iloc[:, position]
        if not is_numeric_dtype(series.dtype):
            problems.append(
                f"{source}: column {name!r} is not numeric (dtype {series.dtype}); "
                "encode it as numbers (e.g. one-hot) before training"
            )
        nulls = int(series.isna().sum())
        if nulls:
            problems.append(
                f"{source}: column {name!r} has {nulls} null value(s) of {len(series)}; "
                "impute or drop them"
            )
        if is_float_dtype(series.dtype):
            infinite = int(np.isinf(series.to_numpy(dtype="float64", na_value=np.nan)).sum())
            if infinite:
                problems.append(f"{source}: column {name!r} has {infinite} infinite value(s)")

    bad_names = [name for name in present if not COLUMN_NAME_PATTERN.match(name)]
    for name in bad_names:
        problems.append(
            f"{source}: column name {name!r} is not allowed; names must start with a letter "
            "and contain only letters, digits, '-' and '_'"
        )
    return problems


def validate_table(
    df: pd.DataFrame, required_columns: Sequence[str], source: str = "dataset"
) -> None:
    """Raise :class:`~fedsilo.errors.DataError` listing every problem of ``df``, if any.

    See :func:`find_problems` for the checks.
    """
    problems = find_problems(df, required_columns, source)
    if problems:
        raise DataError(problems, source=source)


def summarize(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame | None = None,
    *,
    columns: Sequence[str] | None = None,
) -> DatasetSummary:
    """What a client tells the server about its data: row counts, column names and dtypes.

    Never values: no statistics, no examples.

    Parameters
    ----------
    train_df : DataFrame of shape (n_train_rows, n_columns)
    test_df : DataFrame of shape (n_test_rows, n_columns), optional
        ``test_rows`` is 0 without one.
    columns : sequence of str, optional
        Only describe these columns (the ones the session reads), so the names of columns a
        session does not use stay in the silo. Default: every column of ``train_df``.

    Returns
    -------
    DatasetSummary
    """
    from fedsilo.wire import ColumnSummary, DatasetSummary

    names = [str(name) for name in train_df.columns] if columns is None else list(columns)
    dtypes = {str(name): str(dtype) for name, dtype in train_df.dtypes.items()}
    return DatasetSummary(
        train_rows=len(train_df),
        test_rows=0 if test_df is None else len(test_df),
        columns=[ColumnSummary(name=name, dtype=dtypes.get(name, "missing")) for name in names],
    )
