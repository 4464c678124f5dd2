"""The glm executor: data checks, task contract, Newton statistics and per-task metrics.

Metrics are checked against scikit-learn's metric functions on the pooled test rows: the
federated ``loss``, ``accuracy`` and ``r2`` must be the pooled values exactly (1e-10), and
the ``*_client_mean`` values the test-weighted means of the clients' own values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import DataError, TaskError
from fedsilo.federation import get_package
from fedsilo.packages.glm import GLMExecutor
from fedsilo.regression.newton import local_statistics

PREDICTORS = ["x0", "x1", "x2", "x3"]
PACKAGE = get_package("glm")


def executor(
    config: dict[str, Any],
    data_config: dict[str, Any],
    train: pd.DataFrame,
    test: pd.DataFrame | None = None,
) -> GLMExecutor:
    mc, dc = PACKAGE.parse_configs(config, data_config)
    return GLMExecutor(mc, dc, LocalDataset(train, test, 64))


def test_bad_data_is_refused_with_every_problem_listed(
    silos: Callable[..., list[pd.DataFrame]], config: Any
) -> None:
    frame = silos("poisson")[0].head(50).copy()
    frame.loc[:2, "y"] = -1.0
    frame.loc[:4, "expo"] = 0.0
    frame.loc[:1, "w"] = -2.0
    test = frame.drop(columns=["x3"])
    data_config = {
        "predictors": PREDICTORS,
        "target": "y",
        "exposure": "expo",
        "sample_weight": "w",
    }
    with pytest.raises(DataError) as info:
        executor(config("poisson"), data_config, frame, test)
    problems = info.value.problems
    assert (
        "train: target column 'y' must be >= 0 for poisson; 3 row(s) are not, e.g. -1" in problems
    )
    assert "train: exposure column 'expo' must be > 0; 5 row(s) are not" in problems
    assert "train: sample_weight column 'w' must be >= 0; 2 row(s) are not" in problems
    assert any(p.startswith("test: missing required column(s) 'x3'") for p in problems)


@pytest.mark.parametrize(
    ("task", "value", "expected"),
    [
        ("logistic", 2.0, "must be 0 or 1 for logistic"),
        ("gamma", 0.0, "must be > 0 for gamma"),
        ("inverseGaussian", -1.0, "must be > 0 for inverseGaussian"),
    ],
)
def test_targets_outside_the_family_domain(
    task: str, value: float, expected: str, silos: Callable[..., list[pd.DataFrame]], config: Any
) -> None:
    frame = silos(task)[0].head(20).copy()
    frame.loc[0, "y"] = value
    with pytest.raises(DataError, match=expected):
        executor(config(task), {"predictors": PREDICTORS, "target": "y"}, frame)


def test_task_contract(silos: Callable[..., list[pd.DataFrame]], config: Any) -> None:
    silo = executor(config("gamma"), {"predictors": PREDICTORS, "target": "y"}, silos("gamma")[0])
    with pytest.raises(TaskError, match="cannot run task kind 'train'; known kinds: evaluate, fit"):
        silo.handle("train", {}, {})
    with pytest.raises(TaskError, match=r"array 'beta' of shape \(5,\).*got shape \(4,\)"):
        silo.handle("newton_stats", {}, {"beta": np.zeros(4)})
    with pytest.raises(TaskError, match="no 'beta' array"):
        silo.handle("evaluate", {}, {})
    with pytest.raises(TaskError, match="non-finite"):
        silo.handle("evaluate", {}, {"beta": np.array([np.nan, 0, 0, 0, 0])})
    meta, arrays = silo.handle("target_summary", {}, {})
    assert meta == {"num_rows": 500}
    assert arrays["summary"][0] == 500.0


@pytest.mark.parametrize(
    "task", ["logistic", "normal", "poisson", "gamma", "inverseGaussian", "tweedie"]
)
def test_newton_statistics_sum_over_silos_and_differentiate_the_deviance(
    task: str, silos: Callable[..., list[pd.DataFrame]], config: Any
) -> None:
    frames = silos(task)
    extra = {"power": 1.5} if task == "tweedie" else {}
    data_config = {"predictors": PREDICTORS, "target": "y", "offset": "off", "sample_weight": "w"}
    executors = [executor(config(task, **extra), data_config, frame) for frame in frames]
    pooled = executor(config(task, **extra), data_config, pd.concat(frames, ignore_index=True))
    beta = np.array([0.2, 0.3, -0.1, 0.05, 0.02])
    parts = [e.statistics(beta) for e in executors]
    total = parts[0] + parts[1] + parts[2]
    whole = pooled.statistics(beta)
    np.testing.assert_allclose(total.gradient, whole.gradient, rtol=1e-10)
    np.testing.assert_allclose(total.fisher, whole.fisher, rtol=1e-10)
    assert total.deviance == pytest.approx(whole.deviance, rel=1e-12)
    assert (total.num_rows, total.weight_sum) == (9500, pytest.approx(whole.weight_sum))

    # The gradient is that of D/2: central differences of the pooled deviance.
    family, data = pooled.family, pooled.train
    step = 1e-6
    for j in range(beta.size):
        up, down = beta.copy(), beta.copy()
        up[j] += step
        down[j] -= step
        numeric = (
            local_statistics(family, data, up).deviance
            - local_statistics(family, data, down).deviance
        ) / (4 * step)
        assert numeric == pytest.approx(whole.gradient[j], rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(whole.fisher, whole.fisher.T)
    assert np.all(np.linalg.eigvalsh(whole.fisher) > 0)


def pooled_reference(
    task: str, test: pd.DataFrame, mean: np.ndarray, weight: np.ndarray | None
) -> dict[str, float]:
    y = test["y"].to_numpy()
    if task == "logistic":
        return {
            "loss": skm.log_loss(y, mean, sample_weight=weight),
            "accuracy": skm.accuracy_score(y, mean > 0.5, sample_weight=weight),
        }
    loss = {
        "normal": lambda: skm.mean_squared_error(y, mean, sample_weight=weight),
        "poisson": lambda: skm.mean_poisson_deviance(y, mean, sample_weight=weight),
        "gamma": lambda: skm.mean_gamma_deviance(y, mean, sample_weight=weight),
        "tweedie": lambda: skm.mean_tweedie_deviance(y, mean, sample_weight=weight, power=1.5),
    }[task]()
    return {"loss": loss, "r2": skm.r2_score(y, mean, sample_weight=weight)}


@pytest.mark.parametrize("task", ["logistic", "normal", "poisson", "gamma", "tweedie"])
@pytest.mark.parametrize("weighted", [False, True])
def test_federated_metrics_are_the_pooled_metrics(
    task: str,
    weighted: bool,
    silos: Callable[..., list[pd.DataFrame]],
    run_federated: Any,
    config: Any,
) -> None:
    frames = silos(task)
    tests = silos(task, seed=1)
    extra = {"power": 1.5} if task == "tweedie" else {}
    data_config: dict[str, Any] = {"predictors": PREDICTORS, "target": "y"}
    if weighted:
        data_config["sample_weight"] = "w"
    fit = run_federated(config(task, **extra), data_config, frames, tests=tests)
    saved_round = fit.ctx.saved[2]
    federated, per_client = fit.ctx.rounds[saved_round]
    pooled_test = pd.concat(tests, ignore_index=True)
    weight = pooled_test["w"].to_numpy() if weighted else None
    expected = pooled_reference(task, pooled_test, fit.model.predict_mean(pooled_test), weight)
    for key, value in expected.items():
        assert federated[key] == pytest.approx(value, rel=1e-10), key

    sizes = [float(t["w"].sum()) if weighted else float(len(t)) for t in tests]
    client_key, fed_key = (
        ("test_roc_auc", "roc_auc_client_mean")
        if task == "logistic"
        else ("test_r2", "r2_client_mean")
    )
    own = []
    for name, test in zip(sorted(per_client), tests, strict=True):
        w = test["w"].to_numpy() if weighted else None
        mean = fit.model.predict_mean(test)
        if task == "logistic":
            own.append(skm.roc_auc_score(test["y"], mean, sample_weight=w))
        else:
            own.append(skm.r2_score(test["y"], mean, sample_weight=w))
        assert per_client[name][client_key] == pytest.approx(own[-1], rel=1e-10)
        assert per_client[name]["test_num_examples"] == len(test)
    assert federated[fed_key] == pytest.approx(np.average(own, weights=sizes), rel=1e-10)
    if task != "logistic":
        assert federated["r2"] != pytest.approx(federated["r2_client_mean"], rel=1e-6)
    # The training loss of the final round is the pooled mean loss of the training rows.
    assert federated["train_loss"] == pytest.approx(
        fit.model.family.loss_factor() * fit.model.meta["deviance"] / fit.model.meta["weight_sum"]
    )
    assert federated["loss"] == fit.model.meta["federated_loss"]


def test_a_silo_with_no_more_rows_than_coefficients_refuses(
    silos: Callable[..., list[pd.DataFrame]], config: Any
) -> None:
    frame = silos("normal")[0]
    with pytest.raises(DataError, match=r"has 5 row\(s\); a glm client needs more rows than"):
        executor(config("normal"), {"predictors": PREDICTORS, "target": "y"}, frame.head(5))
    executor(config("normal"), {"predictors": PREDICTORS, "target": "y"}, frame.head(6))
