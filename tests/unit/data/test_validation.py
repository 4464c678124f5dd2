"""find_problems lists every problem at once; summarize carries shapes and types, no values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.validation import find_problems, summarize, validate_table
from fedsilo.errors import DataError
from fedsilo.wire import ColumnSummary

SOURCE = "--train-path 'silo.csv'"


def test_clean_table_has_no_problems() -> None:
    df = pd.DataFrame({"x1": [0.1, 0.2], "x_2": [1, 2], "y-1": [True, False], "note": ["a", "b"]})
    # 'note' is not required, so its dtype does not matter; its name is still valid
    assert find_problems(df, ["x1", "x_2", "y-1"], SOURCE) == []
    validate_table(df, ["x1", "x_2", "y-1"], SOURCE)


def test_every_problem_is_reported_at_once() -> None:
    df = pd.DataFrame(
        {
            "x1": [0.1, None, None],  # nulls
            "x2": ["a", "b", "c"],  # not numeric
            "bad name": [1.0, 2.0, 3.0],  # invalid column name
        }
    )
    problems = find_problems(df, ["x1", "x2", "y"], SOURCE)
    assert all(problem.startswith(f"{SOURCE}: ") for problem in problems)
    text = "\n".join(problems)
    assert "missing required column(s) 'y'" in text
    assert "available columns: 'x1', 'x2', 'bad name'" in text
    assert "column 'x2' is not numeric (dtype" in text
    assert "column 'x1' has 2 null value(s) of 3" in text
    assert "column name 'bad name' is not allowed" in text
    assert len(problems) == 4

    with pytest.raises(DataError) as info:
        validate_table(df, ["x1", "x2", "y"], SOURCE)
    assert info.value.problems == problems
    assert info.value.source == SOURCE


def test_empty_table() -> None:
    df = pd.DataFrame({"x1": pd.Series([], dtype="float64")})
    assert find_problems(df, ["x1"], SOURCE) == [f"{SOURCE}: has no rows"]


@pytest.mark.parametrize("name", ["1st", "_x", "x.y", "x y", "é", ""])
def test_bad_column_names(name: str) -> None:
    df = pd.DataFrame({name: [1.0], "ok": [2.0]})
    problems = find_problems(df, ["ok"], SOURCE)
    assert problems == [
        f"{SOURCE}: column name {name!r} is not allowed; names must start with a letter "
        "and contain only letters, digits, '-' and '_'"
    ]


def test_infinite_values_and_duplicate_columns() -> None:
    df = pd.DataFrame([[1.0, np.inf, 3.0]], columns=["a", "b", "a"])
    text = "\n".join(find_problems(df, ["a", "b"], SOURCE))
    assert "column 'b' has 1 infinite value(s)" in text
    assert "column 'a' appears 2 times" in text


def test_summarize_shapes_and_types_only() -> None:
    train = pd.DataFrame({"x1": [0.1, 0.2, 0.3], "y": [0, 1, 1], "secret": ["a", "b", "c"]})
    test = train.iloc[:2]
    summary = summarize(train, test)
    assert summary.train_rows == 3
    assert summary.test_rows == 2
    assert summary.columns == [
        ColumnSummary(name="x1", dtype="float64"),
        ColumnSummary(name="y", dtype="int64"),
        ColumnSummary(name="secret", dtype=str(train["secret"].dtype)),
    ]
    # no values anywhere in what is sent
    assert "0.1" not in summary.model_dump_json()

    only_used = summarize(train, None, columns=["x1", "y"])
    assert only_used.test_rows == 0
    assert [column.name for column in only_used.columns] == ["x1", "y"]
