"""The results API: the shapes a user types and reads, reprs, plots, serialization."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fedsilo.analytics.describe import DESCRIBE_ROWS
from fedsilo.analytics.results import EdaColumn, EdaDataset, EdaResults

SEED_CONFIG = {"dataset_one": [1, "x5", "x7"], "dataset_two": ["x1", "x10", "x11"]}


@pytest.fixture
def results(run_eda: Any, frames: dict[str, pd.DataFrame]) -> EdaResults:
    eda: EdaResults = run_eda({"epsilon": None}, SEED_CONFIG, frames).results()
    return eda


def test_three_levels_of_access(results: EdaResults) -> None:
    assert repr(results).startswith(
        "EDA Session collection of datasets: ['dataset_one', 'dataset_two']"
    )
    one = results["dataset_one"]
    assert isinstance(one, EdaDataset) and results[0].name == "dataset_one"
    assert repr(one) == "EDA dataset 'dataset_one' with columns: ['x1', 'x5', 'x7']"
    assert isinstance(one["x1"], EdaColumn) and one[0].name == "x1" and one[-1].name == "x7"
    assert repr(one["x1"]).startswith("EDA column 'x1' of dataset 'dataset_one' (continuous, ")
    sub = results["dataset_two"][["x10", "x11"]]
    assert isinstance(sub, EdaDataset) and sub.columns == ["x10", "x11"]
    assert [c.name for c in results["dataset_two"][[2, "x1"]]] == ["x11", "x1"]
    assert (
        len(results) == 2 and "dataset_two" in results and list(results.keys()) == results.datasets
    )
    with pytest.raises(KeyError, match="No dataset 'three' in these results; datasets: "):
        results["three"]
    with pytest.raises(KeyError, match="has no column 'x99'; it has \\['x1', 'x5', 'x7'\\]"):
        one["x99"]
    with pytest.raises(IndexError, match="has 3 column\\(s\\); no position 3"):
        one[3]


def test_statistics_have_the_shape_of_their_level(results: EdaResults) -> None:
    column = results["dataset_one"]["x1"]
    assert isinstance(column.mean(), float) and isinstance(column.median(), float)
    assert isinstance(column.quantile([0.1, 0.9]), pd.Series)
    series = results["dataset_one"].mean()
    assert isinstance(series, pd.Series) and list(series.index) == ["x1", "x5", "x7"]
    quantiles = results["dataset_one"].quantile([0.25, 0.75])
    assert isinstance(quantiles, pd.DataFrame) and list(quantiles.index) == [0.25, 0.75]
    table = results.std()
    assert list(table.index) == ["dataset_one", "dataset_two"]
    assert list(table.columns) == ["x1", "x5", "x7", "x10", "x11"]
    assert math.isnan(table.loc["dataset_two", "x5"])  # absent from dataset_two
    assert math.isnan(table.loc["dataset_two", "x10"])  # categorical
    assert not math.isnan(table.loc["dataset_two", "x1"])
    for name in ("count", "nulls", "min", "max", "var", "median", "unique_count", "mode"):
        assert getattr(results, name)().shape == (2, 5), name
    assert results.quantile(0.9).shape == (2, 5)
    counts = results["dataset_two"].unique_count()
    assert math.isnan(counts["x1"]) and counts["x10"] == 5 and counts["x11"] == 4
    modes = results["dataset_two"].mode()
    assert modes["x11"] == "red" and math.isnan(modes["x1"])


def test_describe_at_every_level(results: EdaResults) -> None:
    collection = results.describe()
    assert collection.shape == (2 * len(DESCRIBE_ROWS), 5)
    assert list(collection.loc["dataset_one"].index) == list(DESCRIBE_ROWS)
    dataset = results["dataset_two"].describe()
    assert list(dataset.index) == list(DESCRIBE_ROWS)
    assert list(dataset.columns) == ["x1", "x10", "x11"]
    assert dataset.loc["top", "x11"] == "red" and math.isnan(dataset.loc["top", "x1"])
    column = results["dataset_two"]["x1"].describe()
    assert column["count"] == dataset.loc["count", "x1"]
    pooled = results.pooled()
    assert pooled.name == "pooled" and pooled.columns == results.columns
    assert pooled["x1"].count() == results.count()["x1"].sum()


def test_histograms_and_figures(results: EdaResults) -> None:
    column = results["dataset_two"]["x1"]
    counts = column.histogram()
    assert isinstance(counts.index, pd.IntervalIndex) and counts.size == 10
    # the policy (min_count 5) withholds the sparse tail bins of an exact release
    assert counts.isna().sum() == column.stats.withheld >= 1
    assert counts.sum() < column.count()
    categories = results["dataset_two"]["x11"].histogram()
    assert set(categories.index) == {"red", "green", "blue", "violet"}

    single = column.plot_hist()
    assert isinstance(single, Figure) and len(single.axes) == 1
    grid = results["dataset_two"].plot_hist()
    assert isinstance(grid, Figure)
    assert [a.get_title() for a in grid.axes if a.axison] == ["x1", "x10", "x11"]
    collection = results.plot_hist()
    titles = [a.get_title() for a in collection.axes if a.axison]
    assert titles == ["x1", "x5", "x7", "x10", "x11"]
    x1_axes = collection.axes[0]
    assert x1_axes.get_legend() is not None  # both datasets overlaid on shared edges
    for figure in (single, grid, collection):
        figure.canvas.draw()  # renders without pyplot or a display


def test_payload_round_trip_keeps_everything(results: EdaResults) -> None:
    meta, arrays = results.to_payload()
    again = EdaResults.from_payload(meta, arrays)
    assert again.describe().equals(results.describe())
    assert again.warnings == results.warnings and again.epsilon is None
    np.testing.assert_array_equal(
        again["dataset_one"]["x1"].stats.histogram, results["dataset_one"]["x1"].stats.histogram
    )
    with pytest.raises(ValueError, match=r"Not an EDA result of format 'fedsilo\.eda/1'"):
        EdaResults.from_payload({"format": "other"}, {})
