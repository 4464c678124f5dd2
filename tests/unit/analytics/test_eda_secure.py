"""eda under secure aggregation, in process: the pooled statistics against pandas on the
pooled data, the stated tolerances, and what is refused (with DP, threshold, plain tasks).

The in-process context runs every task through the client's real mod chain (the secure
aggregation mod with real X25519 keys, masks and Shamir shares), so the workflow here sees
only what a server would: the masked vectors and the clear meta.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.analytics.results import POOLED
from fedsilo.config.secure import check_threshold, safe_minimum_threshold
from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import get_package
from fedsilo.packages.eda.secure_client import SKETCH_SUM, SUMMARY_SUM
from fedsilo.packages.eda.secure_server import POOLED_ONLY
from fedsilo.privacy.secagg.encoding import FixedPoint
from fedsilo.privacy.secagg.spec import SecAggSpec
from fedsilo.workflows.secure import clear_meta

from .conftest import make_frame

SECURE: dict[str, Any] = {"epsilon": None, "secure_aggregation": {"enabled": True}}
DATA = {"dataset_one": [], "dataset_two": [], "dataset_three": []}
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {
        "dataset_one": make_frame(1, 400),
        "dataset_two": make_frame(2, 300, shift=1.0),
        "dataset_three": make_frame(3, 200, shift=-1.0),
    }


def test_pooled_statistics_equal_pandas_within_the_stated_error(
    run_eda: Any, frames: dict[str, pd.DataFrame]
) -> None:
    # min_count 0: no sketch bucket merged, so every quantile has the sketch's guarantee
    run = run_eda({**SECURE, "policy": {"min_count": 0}}, DATA, frames)
    results = run.results()
    assert run.asked == [
        "eda_profile",
        *("secagg.keys", "secagg.shares", "secagg.deliver", SKETCH_SUM, "secagg.unmask"),
        *("secagg.keys", "secagg.shares", "secagg.deliver", SUMMARY_SUM, "secagg.unmask"),
    ]
    # Pooled only: one dataset, said so first.
    assert results.datasets == [POOLED]
    assert results.warnings[0] == POOLED_ONLY
    pooled = pd.concat(frames.values(), ignore_index=True)
    got = results.pooled()
    n, levels = len(frames), FixedPoint.from_spec(SecAggSpec()).max_level
    alpha = 0.01  # the exact sketch's relative accuracy
    gamma = (1 + alpha) / (1 - alpha)
    for column in ("x0", "x1", "x5", "x7"):
        stats, series = got[column].stats, pooled[column]
        values = series.dropna().to_numpy()
        assert stats.kind == "continuous"
        # Counts and histogram bins: exact.
        assert got[column].count() == series.count() and got[column].nulls() == series.isna().sum()
        assert stats.edges is not None and stats.histogram is not None
        np.testing.assert_array_equal(stats.histogram, np.histogram(values, bins=stats.edges)[0])
        # Mean and variance: within the quantization bound of the docs.
        half = (stats.edges[-1] - stats.edges[0]) / 2
        count = values.size
        mean_bound = n * half / (2 * levels)
        var_bound = 3 * n * half**2 * count / (2 * levels * (count - 1))
        assert abs(got[column].mean() - series.mean()) <= mean_bound + 1e-12
        assert abs(got[column].var() - series.var()) <= var_bound + 1e-12
        # Quantiles: the exact sketch's guarantee (rank floor(q (n - 1)), "lower").
        for q in QUANTILES:
            true = float(np.quantile(values, q, method="lower"))
            assert abs(got[column].quantile(q) - true) <= alpha * abs(true) * (1 + 1e-9)
        # min/max: the outer edges of the extreme buckets, within a factor gamma.
        low, high = float(values.min()), float(values.max())
        assert got[column].min() <= low and got[column].max() >= high
        for reported, true in ((got[column].min(), low), (got[column].max(), high)):
            assert abs(reported - true) <= (gamma - 1) * abs(true) * (1 + 1e-9)
    for column in ("x10", "x11"):
        part, series = got[column], pooled[column]
        assert part.kind == "categorical"
        assert part.count() == series.count() and part.nulls() == series.isna().sum()
        # Omitted: the categories (each dataset's set of values).
        assert part.stats.value_counts is None and math.isnan(part.unique_count())


def test_measured_errors_are_far_inside_the_bounds(
    run_eda: Any, frames: dict[str, pd.DataFrame]
) -> None:
    """The numbers of the report: the largest error of mean and std over the columns."""
    got = run_eda(SECURE, DATA, frames).results().pooled()
    pooled = pd.concat(frames.values(), ignore_index=True)
    # With the default min_count 5 small buckets are merged: each quantile is in its interval.
    for c in ("x0", "x1", "x5", "x7"):
        values = pooled[c].dropna().to_numpy()
        for q in QUANTILES:
            low, high = got[c].quantile_interval(q)
            assert low <= float(np.quantile(values, q, method="lower")) <= high
    mean_error = max(abs(got[c].mean() - pooled[c].mean()) for c in ("x0", "x1", "x5", "x7"))
    std_error = max(
        abs(got[c].std() - pooled[c].std()) / pooled[c].std() for c in ("x0", "x1", "x5", "x7")
    )
    assert mean_error < 1e-5 and std_error < 1e-5


def test_a_declared_categorical_and_per_dataset_columns_line_up(
    run_eda: Any, frames: dict[str, pd.DataFrame]
) -> None:
    """Datasets with different columns send the same layout (zeros for a missing column)."""
    config = {**SECURE, "categorical": ["x10", "x11"]}
    data = {"dataset_one": ["x1", "x10"], "dataset_two": ["x1", "x5"], "dataset_three": ["x5"]}
    got = run_eda(config, data, frames).results().pooled()
    x1 = pd.concat([frames["dataset_one"]["x1"], frames["dataset_two"]["x1"]])
    x5 = pd.concat([frames["dataset_two"]["x5"], frames["dataset_three"]["x5"]])
    assert got["x1"].count() == x1.count() and got["x5"].count() == x5.count()
    assert got["x1"].mean() == pytest.approx(x1.mean(), abs=1e-5)
    assert got["x5"].mean() == pytest.approx(x5.mean(), abs=1e-5)
    assert got["x10"].kind == "categorical" and got["x10"].count() == 400


def test_secure_aggregation_with_dp_needs_declared_categoricals() -> None:
    package = get_package("eda")
    for config in ({"secure_aggregation": {"enabled": True}}, {**SECURE, "epsilon": 2.0}):
        with pytest.raises(ConfigError, match="needs model_config categorical") as caught:
            package.parse_model_config(config)
        assert "noisy distinct count, which does not add up" in str(caught.value)
    assert package.parse_model_config(SECURE).secure
    assert package.parse_model_config({**SECURE, "epsilon": 2.0, "categorical": []}).private


def test_the_threshold_is_checked_against_min_num_clients() -> None:
    def config(threshold: int | None) -> dict[str, Any]:
        return {**SECURE, "secure_aggregation": {"enabled": True, "threshold": threshold}}

    check_threshold(config(None), 2)
    check_threshold(config(3), 4)
    check_threshold(config(4), 4)
    check_threshold({"epsilon": None}, 1)  # no secure aggregation: nothing to check
    with pytest.raises(ConfigError, match=r"at most min_num_clients \(3\).*got 4") as caught:
        check_threshold(config(4), 3)
    assert "threshold" in str(caught.value) and "Expected 2 <= threshold <= 3" in str(caught.value)
    with pytest.raises(ConfigError, match=r"strict majority.*Expected 4 <= threshold <= 6; got 3"):
        check_threshold(config(3), 6)
    with pytest.raises(ConfigError, match=r"min_num_clients must be at least 2.*Got 1"):
        check_threshold(config(None), 1)
    assert [safe_minimum_threshold(n) for n in (2, 3, 4, 5, 10)] == [2, 2, 3, 3, 6]


def test_the_client_refuses_plain_statistics_in_a_secure_session(
    frames: dict[str, pd.DataFrame],
) -> None:
    package = get_package("eda")
    plan = {"columns": [{"name": "x0", "kind": "categorical", "edges": None}]}
    secure = package.executor(
        *package.parse_configs(SECURE, {"dataset_one": ["x0"]}),
        LocalDataset(frames["dataset_one"], None, 1, name="dataset_one"),
    )
    with pytest.raises(TaskError, match="only into a secure sum"):
        secure.handle("eda_summarize", plan, {})
    # Round 1 in clear is the schema only.
    meta, arrays = secure.handle("eda_profile", {}, {})
    assert arrays == {}
    assert [(c["distinct"], c["min"], c["sketch"]) for c in meta["columns"]] == [(None,) * 3]
    plain = package.executor(
        *package.parse_configs({"epsilon": None}, {"dataset_one": ["x0"]}),
        LocalDataset(frames["dataset_one"], None, 1, name="dataset_one"),
    )
    with pytest.raises(TaskError, match="not under secure aggregation"):
        plain.handle(SKETCH_SUM, {"columns": ["x0"]}, {})


def test_the_policy_reads_counts_the_server_does_not_get(frames: dict[str, pd.DataFrame]) -> None:
    """The reply meta carries each column's count for the owner's policy (inside the
    masking); the clear meta keeps the names only."""
    package = get_package("eda")
    executor = package.executor(
        *package.parse_configs(SECURE, {"dataset_one": ["x1"]}),
        LocalDataset(frames["dataset_one"], None, 1, name="dataset_one"),
    )
    meta, _ = executor.handle(SKETCH_SUM, {"columns": ["x1"]}, {})
    count = int(frames["dataset_one"]["x1"].count())
    assert meta == {"num_rows": 400, "columns": [{"name": "x1", "moments": {"count": count}}]}
    assert clear_meta({**meta, "secagg_clipped": 0}) == {
        "num_rows": 400,
        "columns": ["x1"],
        "secagg_clipped": 0,
    }


def test_with_dp_every_dataset_noises_before_masking_and_spends_its_epsilon(
    run_eda: Any,
) -> None:
    """epsilon 8 over 6 columns, 3 x 3000 rows: the noisy pooled statistics against pandas
    within tolerances ~5x the noise's standard deviation (stated below), and the ledger."""
    frames = {
        "dataset_one": make_frame(21, 3000),
        "dataset_two": make_frame(22, 3000, shift=1.0),
        "dataset_three": make_frame(23, 3000, shift=-1.0),
    }
    config = {**SECURE, "epsilon": 8.0, "categorical": ["x10", "x11"]}
    run = run_eda(config, DATA, frames)
    results = run.results()
    assert results.datasets == [POOLED] and results.epsilon == 8.0
    assert results.privacy[POOLED].epsilon == pytest.approx(8.0, rel=1e-6)
    assert any("noised each count" in w for w in results.warnings)
    # The plain statistics kinds were never asked; each secure reply carried its ledger.
    assert "eda_summarize" not in run.asked
    pooled = pd.concat(frames.values(), ignore_index=True)
    got = results.pooled()
    for column in ("x0", "x1", "x5", "x7"):
        series = pooled[column]
        assert abs(got[column].count() - series.count()) <= 150  # 3 discrete Laplace(7.5)
        assert abs(got[column].mean() - series.mean()) <= 0.1 * series.std()
        if column != "x5":  # lognormal: its sparse tail is clamped into the private range
            assert got[column].std() == pytest.approx(series.std(), rel=0.1)
        low, high = got[column].quantile_interval(0.5, alpha=0.001)
        assert low <= float(np.quantile(series.dropna(), 0.5, method="lower")) <= high
    for column in ("x10", "x11"):
        assert abs(got[column].count() - pooled[column].count()) <= 50  # Laplace(0.75) x 3
