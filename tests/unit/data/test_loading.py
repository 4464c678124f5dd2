"""load_table: parquet and CSV through fsspec, with messages that name the flag and the path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.loading import load_table
from fedsilo.errors import DataError


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"x1": [0.5, -1.0, 2.0], "x2": [1, 2, 3], "y": [0, 1, 0]})


@pytest.mark.parametrize("suffix", [".parquet", ".pq", ".PARQUET"])
def test_load_parquet(tmp_path: Path, frame: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"silo{suffix}"
    frame.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(load_table(str(path)), frame)


def test_load_csv(tmp_path: Path, frame: pd.DataFrame) -> None:
    path = tmp_path / "silo.csv"
    frame.to_csv(path, index=False)
    loaded = load_table(str(path))
    assert list(loaded.columns) == ["x1", "x2", "y"]
    np.testing.assert_allclose(loaded.to_numpy(), frame.to_numpy())


def test_load_file_url(tmp_path: Path, frame: pd.DataFrame) -> None:
    path = tmp_path / "silo.parquet"
    frame.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(load_table(path.as_uri()), frame)


def test_load_expands_home(
    tmp_path: Path, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    frame.to_parquet(tmp_path / "silo.parquet", index=False)
    assert len(load_table("~/silo.parquet")) == 3


def test_unsupported_extension_names_path_and_supported(tmp_path: Path) -> None:
    path = tmp_path / "silo.xlsx"
    path.write_text("not a table")
    with pytest.raises(DataError) as info:
        load_table(str(path), "--train-path")
    (problem,) = info.value.problems
    assert problem.startswith(f"--train-path '{path}'")
    assert "'.xlsx'" in problem
    assert ".csv, .parquet, .pq" in problem


def test_missing_file_names_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "nope.parquet"
    with pytest.raises(DataError) as info:
        load_table(str(path), "--test-path")
    assert info.value.problems == [f"--test-path '{path}' does not exist"]


def test_corrupt_parquet_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match="could not be read as parquet"):
        load_table(str(path), "--train-path")


def test_empty_csv_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_table(str(path))
