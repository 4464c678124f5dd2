"""Data binding: a package declares its tables by role; binding loads and checks them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fedsilo.errors import ConfigError, DataError
from fedsilo.federation import get_package
from fedsilo.federation.binding import NAMED_DATASET, TRAIN_TEST, DataBinding, TableSpec
from fedsilo.federation.package import DataConfigBase


class IdDataConfig(DataConfigBase):
    """A PRL-like data_config: an id column and the columns read."""

    id_column: str
    columns: list[str]

    def required_columns(self) -> list[str]:
        return list(self.columns)


#: what a PRL/VFL package would declare: one table, aligned by its id column
ALIGNED = DataBinding(
    tables=(TableSpec("train", required=True, option="--train-path"),),
    id_column="id_column",
    join_hint="`fedsilo client join --table train=P`",
)


@pytest.fixture
def tables(tmp_path: Path) -> dict[str, str]:
    train = tmp_path / "train.parquet"
    test = tmp_path / "test.csv"
    frame = pd.DataFrame({"id": ["a", "b", "c"], "x1": [0.1, 0.2, 0.3], "y": [0, 1, 0]})
    frame.to_parquet(train)
    frame.iloc[:1].to_csv(test, index=False)
    return {"train": str(train), "test": str(test)}


def test_packages_declare_their_binding() -> None:
    assert get_package("ffnet").binding is TRAIN_TEST
    assert get_package("echo").binding is TRAIN_TEST
    assert get_package("eda").binding is NAMED_DATASET


def test_train_and_test_by_role(tables: dict[str, str]) -> None:
    data_config = get_package("echo").parse_data_config({"columns": ["x1"]})
    bound = TRAIN_TEST.bind(data_config, tables, batch_size=4)
    assert len(bound.dataset.train) == 3 and bound.dataset.test is not None
    assert bound.dataset.batch_size == 4
    assert bound.columns == ["x1"]
    assert (bound.summary.train_rows, bound.summary.test_rows) == (3, 1)
    alone = TRAIN_TEST.bind(data_config, {"train": tables["train"], "test": None})
    assert alone.dataset.test is None


def test_roles_are_checked(tables: dict[str, str]) -> None:
    data_config = get_package("echo").parse_data_config({})
    with pytest.raises(ConfigError, match=r"got test\. Join it with `fedsilo client train"):
        TRAIN_TEST.bind(data_config, {"test": tables["test"]})
    with pytest.raises(ConfigError, match="does not take named datasets"):
        TRAIN_TEST.bind(data_config, {"train": tables["train"]}, dataset_name="d")
    eda = get_package("eda").parse_data_config({"d": []})
    with pytest.raises(ConfigError, match="analyses named datasets"):
        NAMED_DATASET.bind(eda, {"dataset": tables["train"]})
    with pytest.raises(ConfigError, match="dataset name must start"):
        NAMED_DATASET.bind(eda, {"dataset": tables["train"]}, dataset_name="no/slash")


def test_a_named_dataset_takes_the_columns_its_config_selects(tables: dict[str, str]) -> None:
    eda = get_package("eda").parse_data_config({"d": ["x1", "y"]})
    bound = NAMED_DATASET.bind(eda, {"dataset": tables["train"]}, dataset_name="d")
    assert bound.dataset.name == "d" and bound.dataset.test is None
    assert bound.columns == ["x1", "y"]
    with pytest.raises(DataError, match="nope"):
        missing = get_package("eda").parse_data_config({"d": ["nope"]})
        NAMED_DATASET.bind(missing, {"dataset": tables["train"]}, dataset_name="d")


def test_an_id_column_is_read_and_must_be_unique(tables: dict[str, str], tmp_path: Path) -> None:
    data_config = IdDataConfig(id_column="id", columns=["x1"])
    bound = ALIGNED.bind(data_config, {"train": tables["train"]})
    assert bound.columns == ["id", "x1"]
    assert [c.name for c in bound.summary.columns] == ["id", "x1"]

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": ["a", "a", None], "x1": [1.0, 2.0, 3.0]}).to_csv(bad, index=False)
    with pytest.raises(DataError) as info:
        ALIGNED.bind(data_config, {"train": str(bad)})
    assert info.value.problems == [
        f"--train-path '{bad}': id column 'id' has 1 null value(s)",
        f"--train-path '{bad}': id column 'id' has 1 repeated value(s)",
    ]
    with pytest.raises(DataError, match="missing the id column 'key'"):
        ALIGNED.bind(IdDataConfig(id_column="key", columns=[]), {"train": tables["train"]})
