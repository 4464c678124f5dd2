"""The eda package (executor + workflow) against pandas on the same data.

Without DP: count, nulls, mean, std, min and max equal pandas per dataset and pooled to
1e-9; quantiles are within the sketch's relative accuracy of the true order statistic;
histograms equal numpy's on the agreed edges. With DP: every released number is within its
mechanism's stated accuracy and quantiles within the bound of ``fedsilo.analytics.quantiles``
(at failure probability ``ALPHA`` each; OpenDP cannot be seeded)
and each dataset's releases add up to the session's epsilon.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.analytics.histograms import histogram
from fedsilo.analytics.privacy import Release
from fedsilo.analytics.results import EdaResults
from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.federation import get_package

ALPHA = 1e-9
TOL = 1e-9
CONTINUOUS = ["x0", "x1", "x5", "x7"]
QUANTILES = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
EXACT: dict[str, Any] = {"epsilon": None, "policy": {"min_count": 0}}


def check_exact(results_part: Any, frame: pd.DataFrame, alpha: float) -> None:
    """Every continuous statistic of one results dataset (or pooled) against pandas."""
    for column in CONTINUOUS:
        got, series = results_part[column], frame[column]
        assert got.kind == "continuous"
        assert got.count() == series.count() and got.nulls() == series.isna().sum()
        assert got.mean() == pytest.approx(series.mean(), rel=TOL, abs=TOL)
        assert got.std() == pytest.approx(series.std(), rel=TOL)
        assert got.var() == pytest.approx(series.var(), rel=TOL)
        assert (got.min(), got.max()) == (series.min(), series.max())
        values = series.dropna().to_numpy()
        for q in QUANTILES:
            true = float(np.quantile(values, q, method="lower"))
            assert abs(got.quantile(q) - true) <= alpha * abs(true) * (1 + 1e-9), (column, q)
        stats = got.stats
        np.testing.assert_array_equal(stats.histogram, np.histogram(values, bins=stats.edges)[0])


def test_exact_statistics_equal_pandas_per_dataset_and_pooled(
    run_eda: Any, frames: dict[str, pd.DataFrame]
) -> None:
    ctx = run_eda(EXACT, {"dataset_one": [], "dataset_two": []}, frames)
    results: EdaResults = ctx.results()
    assert ctx.asked == ["eda_profile", "eda_summarize"] and ctx.rounds == [1, 2]
    assert results.datasets == ["dataset_one", "dataset_two"]
    assert results.epsilon is None and "differential privacy was off" in results.warnings[0]
    pooled = pd.concat(frames.values(), ignore_index=True)
    for name, frame in frames.items():
        check_exact(results[name], frame, 0.01)
    check_exact(results.pooled(), pooled, 0.01)
    # histograms share edges over the pooled range, so they add up
    edges = results["dataset_one"]["x1"].stats.edges
    np.testing.assert_array_equal(edges, results["dataset_two"]["x1"].stats.edges)
    assert (edges[0], edges[-1]) == (pooled["x1"].min(), pooled["x1"].max())
    assert edges.size == 11  # bins=10 by default

    for part, frame in [*((results[n], f) for n, f in frames.items()), (results.pooled(), pooled)]:
        for column in ("x10", "x11"):
            got, series = part[column], frame[column]
            assert got.kind == "categorical"
            expected = series.value_counts()
            assert dict(got.stats.value_counts) == {k: float(v) for k, v in expected.items()}
            assert got.unique_count() == series.nunique()
            assert set(got.uniques()) == set(series.dropna().unique())
            assert got.mode() == series.mode()[0]
            assert got.count() == series.count() and got.nulls() == series.isna().sum()
            assert math.isnan(got.mean()) and math.isnan(got.median())


def test_the_seed_dataset_config_selects_columns_by_name_and_position(
    run_eda: Any, frames: dict[str, pd.DataFrame]
) -> None:
    config = {"dataset_one": [1, "x5", "x7"], "dataset_two": ["x1", "x10", "x11"]}
    results = run_eda({"epsilon": None}, config, frames).results()
    assert results["dataset_one"].columns == ["x1", "x5", "x7"]  # position 1 is x1 (0-based)
    assert results["dataset_two"].columns == ["x1", "x10", "x11"]
    assert results.columns == ["x1", "x5", "x7", "x10", "x11"]
    described = results.describe()
    assert described.index.names == ["dataset", "statistic"]
    assert math.isnan(described.loc[("dataset_two", "mean"), "x5"])  # absent there
    assert math.isnan(described.loc[("dataset_one", "unique"), "x1"])  # continuous
    means = results.mean()
    assert list(means.index) == ["dataset_one", "dataset_two"]
    assert means.loc["dataset_one", "x1"] == pytest.approx(frames["dataset_one"]["x1"].mean())
    assert means[["x10", "x11"]].isna().all().all()
    uniques = results["dataset_two"][["x10", "x11"]].uniques()
    assert set(uniques["x11"]) == {"red", "green", "blue", "violet"}


def test_unnamed_datasets_use_all_columns_and_absent_named_ones_are_reported(
    run_eda: Any, frames: dict[str, pd.DataFrame]
) -> None:
    config = {"dataset_one": ["x1"], "nobody": []}
    ctx = run_eda({"epsilon": None, "num_datasets": 2}, config, frames)
    results = ctx.results()
    assert results["dataset_two"].columns == list(frames["dataset_two"].columns)
    assert any("did not take part: ['nobody']" in w for w in results.warnings)


def test_without_dp_small_counts_are_withheld(run_eda: Any) -> None:
    frame = pd.DataFrame(
        {"city": ["a"] * 40 + ["b"] * 2 + [None] * 3, "v": np.r_[np.arange(44.0), 1000.0]}
    )
    results = run_eda({"epsilon": None}, {"d": []}, {"d": frame}).results()
    city = results["d"]["city"]
    assert city.uniques() == ["a"] and city.stats.withheld == 1  # 'b' has 2 < min_count 5
    assert city.count() == 42 and city.nulls() == 3  # totals are not cells; they stay exact
    bins = results["d"]["v"].stats.histogram
    assert math.isnan(bins[-1])  # the outlier's bin holds 1 row
    assert results["d"]["v"].stats.withheld >= 1
    assert results["d"]["v"].max() == 1000.0


def ledger(results: EdaResults, dataset: str, column: str, statistic: str) -> Release:
    found = [
        r
        for r in results.privacy[dataset].releases
        if r.column == column and r.statistic == statistic
    ]
    assert len(found) == 1, (dataset, column, statistic, found)
    return found[0]


@pytest.mark.parametrize("categorical", [None, ["x10", "x11"]])
def test_dp_releases_add_up_to_the_session_epsilon(
    run_eda: Any, frames: dict[str, pd.DataFrame], categorical: list[str] | None
) -> None:
    config = {"epsilon": 2.0, "delta": 1e-6, "categorical": categorical}
    results = run_eda(config, {"dataset_one": [], "dataset_two": []}, frames).results()
    assert results.epsilon == 2.0 and results.delta == 1e-6
    for name in results.datasets:
        spent = results.privacy[name]
        assert spent.epsilon == pytest.approx(2.0, rel=1e-9) and spent.epsilon <= 2.0 * (1 + 1e-12)
        assert math.fsum(r.epsilon for r in spent.releases) == spent.epsilon
        assert 0.0 < spent.delta <= 1e-6
        per_column = {c: 0.0 for c in results[name].columns}
        for release in spent.releases:
            per_column[release.column] += release.epsilon
        for column, used in per_column.items():
            assert used == pytest.approx(2.0 / 6, rel=1e-9), column
    report = results.privacy_report()
    assert list(report.columns) == ["epsilon", "delta", "releases"]


def test_dp_without_any_range_still_spends_exactly_epsilon(run_eda: Any) -> None:
    frame = pd.DataFrame({"v": np.random.default_rng(0).normal(size=30)})
    results = run_eda({"epsilon": 0.5, "categorical": []}, {"d": []}, {"d": frame}).results()
    assert any("no range could be agreed" in w for w in results.warnings)
    v = results["d"]["v"]
    assert math.isnan(v.mean()) and v.stats.histogram is None
    assert results.privacy["d"].epsilon == pytest.approx(0.5, rel=1e-9)
    assert [r.statistic for r in results.privacy["d"].releases] == ["sketch", "counts"]


def test_dp_errors_are_within_the_stated_accuracy(run_eda: Any) -> None:
    frames = {"d1": _dp_frame(10, 20_000), "d2": _dp_frame(11, 15_000)}
    config = {"epsilon": 12.0, "categorical": ["city"], "bins": 8}
    results = run_eda(config, {"d1": [], "d2": []}, frames).results()
    for name, frame in frames.items():
        for column in ("x", "w"):
            _check_continuous(results, name, column, frame[column])
        _check_quantiles(results, name, "w", frame["w"])
        _check_quantiles(results, name, "x", frame["x"])
        _check_categorical(results, name, "city", frame["city"])


def _dp_frame(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(50.0, 10.0, rows),
            "w": rng.lognormal(2.0, 0.5, rows),
            "city": rng.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2]),
        }
    )
    frame.loc[7, "city"] = "rare"  # one row: shown only if noise of >= 4 counts pushed it up
    frame.loc[frame.index % 13 == 0, "x"] = np.nan
    return frame


def _check_continuous(results: EdaResults, name: str, column: str, series: pd.Series) -> None:
    got = results[name][column]
    values = series.dropna().to_numpy()
    n = values.size
    counts = ledger(results, name, column, "counts")
    a_count = counts.accuracy(ALPHA)
    assert abs(got.count() - n) <= a_count and abs(got.nulls() - series.isna().sum()) <= a_count
    edges = got.stats.edges
    assert edges is not None
    a_hist = ledger(results, name, column, "histogram").accuracy(ALPHA)
    assert np.all(np.abs(got.stats.histogram - histogram(values, edges)) <= a_hist)
    # mean = c + S'/n' from a noisy sum S' and count n' of values clamped to the edges
    low, high = edges[0], edges[-1]
    center = (low + high) / 2
    true_sum = float((np.clip(values, low, high) - center).sum())
    a_sum = ledger(results, name, column, "sum").accuracy(ALPHA)
    bound = (n * a_sum + abs(true_sum) * a_count) / (n * (n - a_count))
    assert abs(got.mean() - (center + true_sum / n)) <= bound


def _check_quantiles(results: EdaResults, name: str, column: str, series: pd.Series) -> None:
    """Quantiles from the noisy grid, within the bound stated in analytics.quantiles:
    ``Q(q - delta) - w <= estimate <= Q(q + delta) + w`` with ``delta = (2 lambda + 1) / n``
    for the values clamped to the range, where ``lambda`` bounds every noisy cumulative
    count's error (at ``ALPHA``) and ``w`` is the grid's bin width."""
    stats = results[name][column].stats
    edges = stats.quantile_edges
    assert edges is not None and stats.quantile_counts is not None
    assert edges.size == 33  # quantile_bins=32 by default
    release = ledger(results, name, column, "quantiles")
    assert stats.quantile_scales == (release.scale,)
    values = np.clip(series.dropna().to_numpy(), edges[0], edges[-1])
    n, width = values.size, float(edges[1] - edges[0])
    delta = (2 * stats.quantile_noise(ALPHA) + 1) / n
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        # beyond the data's ranks the bound is the range's end
        below = np.quantile(values, q - delta, method="lower") if q >= delta else edges[0]
        above = np.quantile(values, q + delta, method="lower") if q + delta <= 1 else edges[-1]
        assert below - width <= stats.quantile(q) <= above + width, q


def _check_categorical(results: EdaResults, name: str, column: str, series: pd.Series) -> None:
    got = results[name][column]
    release = ledger(results, name, column, "value_counts")
    assert release.threshold is not None
    a = release.accuracy(ALPHA)
    true = series.value_counts()
    released = dict(got.stats.value_counts)
    for value, count in released.items():
        assert count >= release.threshold and abs(count - true[value]) <= a
    for value, count in true.items():
        if count >= release.threshold + a:
            assert value in released
        if count < release.threshold - a:
            assert value not in released
    assert true["rare"] == 1 and "rare" not in released  # fails with probability ~1e-6


def test_a_restarted_server_reuses_round_one_and_the_clients_first_answers(
    run_eda: Any, frames: dict[str, pd.DataFrame]
) -> None:
    config = {"epsilon": 3.0}
    first = run_eda(config, {"dataset_one": [], "dataset_two": []}, frames)
    again = run_eda(
        config,
        {"dataset_one": [], "dataset_two": []},
        frames,
        restored=first.checkpointed,
        executors=first.executors,
    )
    assert again.asked == ["eda_summarize"]
    assert again.results().describe().equals(first.results().describe())
    assert again.results().privacy["dataset_one"].epsilon == pytest.approx(3.0, rel=1e-9)


def test_a_task_asked_again_with_other_meta_is_refused(frames: dict[str, pd.DataFrame]) -> None:
    package = get_package("eda")
    mc, dc = package.parse_configs({"epsilon": 1.0}, {"dataset_one": ["x11"]})
    executor = package.executor(mc, dc, LocalDataset(frames["dataset_one"], None, 1, "dataset_one"))
    plan = {"columns": [{"name": "x11", "kind": "categorical", "edges": None}]}
    first = executor.handle("eda_summarize", plan, {})
    assert executor.handle("eda_summarize", plan, {}) is first
    with pytest.raises(TaskError, match="would spend its privacy budget twice"):
        executor.handle("eda_summarize", {"columns": []}, {})
    with pytest.raises(TaskError, match="cannot run task kind 'fit'"):
        executor.handle("fit", {}, {})


def test_two_clients_with_one_dataset_name_fail_the_session(run_eda: Any) -> None:
    package = get_package("eda")
    mc, dc = package.parse_configs({"epsilon": None}, {"same": []})
    frame = pd.DataFrame({"v": np.arange(20.0)})
    executors = {
        c: package.executor(mc, dc, LocalDataset(frame, None, 1, "same")) for c in ("a", "b")
    }
    with pytest.raises(TaskError, match="both brought dataset 'same'"):
        run_eda({"epsilon": None}, {"same": []}, {"a": frame, "b": frame}, executors=executors)


def test_the_client_refuses_data_it_cannot_share() -> None:
    package = get_package("eda")
    mc, dc = package.parse_configs({}, {"d": ["nope", 7, "v"]})
    frame = pd.DataFrame({"v": [1.0, np.inf, 2.0], "w": [1, 2, 3]})
    with pytest.raises(DataError) as caught:
        package.executor(mc, dc, LocalDataset(frame, None, 1, "d"))
    message = str(caught.value)
    assert "dataset 'd' has no column 'nope'; available columns: 'v', 'w'" in message
    assert "column position 7 but dataset 'd' has 2 column(s) (positions are 0-based)" in message
    mc, dc = package.parse_configs({}, {"d": ["v"]})
    with pytest.raises(DataError) as caught:
        package.executor(mc, dc, LocalDataset(frame, None, 1, "d"))
    message = str(caught.value)
    assert "dataset 'd' has 3 row(s); the session's policy requires at least 10" in message
    assert "column 'v' has 1 infinite value(s)" in message
    with pytest.raises(ConfigError, match="needs the name of its dataset"):
        package.executor(mc, dc, LocalDataset(frame, None, 1))


@pytest.mark.parametrize(
    ("model_config", "data_config", "message"),
    [
        ({"epsilon": 0}, {"d": []}, "model_config is invalid: epsilon: Input should be greater"),
        ({"epsilon": 1, "eps": 2}, {"d": []}, "eps: Extra inputs are not permitted"),
        ({"policy": {"min_rows": 0}}, {"d": []}, "policy.min_rows"),
        ({}, {"d": [True]}, "d.0: a column is a name (string) or a 0-based position"),
        ({}, {"d": [-1]}, "d.0: a column position must be >= 0"),
        ({}, {"bad name": []}, "dataset name 'bad name' must start with a letter or digit"),
        ({}, {}, "name them in data_config"),
    ],
)
def test_config_errors_name_the_field(
    model_config: dict[str, Any], data_config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        get_package("eda").parse_configs(model_config, data_config)
    assert message in str(caught.value)
