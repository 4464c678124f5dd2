"""The ffnet executor: training lowers the loss, metrics equal scikit-learn's, errors are clear."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, r2_score, roc_auc_score

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.packages.ffnet.client import FFNetExecutor
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig
from fedsilo.packages.ffnet.model import build_module, module_arrays

torch.set_num_threads(1)

PREDICTORS = ["a", "b", "c", "d"]


def model_config(**changes: Any) -> FFNetModelConfig:
    raw: dict[str, Any] = {
        "model": {"params": {"input_size": 4, "hidden_layer_sizes": [8, 8], "output_size": 2}},
        "ml_task": {"type": "classification", "params": {"loss_weights": None}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.5}},
        "seed": 5,
    }
    for key, value in changes.items():
        raw[key] = value
    return FFNetModelConfig.model_validate(raw)


DC = FFNetDataConfig(predictors=PREDICTORS, target="y")


def frame(n: int, seed: int, classes: int = 2, regression: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(PREDICTORS)))
    score = x[:, 0] - x[:, 1] + x[:, 2] * x[:, 3]
    data = pd.DataFrame(x, columns=PREDICTORS)
    if regression:
        data["y"] = score + 0.1 * rng.standard_normal(n)
    else:
        edges = np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])
        data["y"] = np.digitize(score, edges).astype(np.int64)
    return data


def executor(mc: FFNetModelConfig, train: pd.DataFrame, test: pd.DataFrame | None) -> FFNetExecutor:
    return FFNetExecutor(mc, DC, LocalDataset(train=train, test=test, batch_size=64))


def initial(mc: FFNetModelConfig) -> dict[str, np.ndarray]:
    return module_arrays(build_module(mc))


def test_fit_lowers_the_training_loss_and_reports_what_fedavg_needs() -> None:
    mc = model_config()
    train = frame(800, 0)
    ex = executor(mc, train, frame(200, 1))
    before = executor(mc, train, None).evaluate({}, initial(mc))["test_loss"]

    meta, arrays = ex.handle("fit", {"round": 1, "local_epochs": 3}, initial(mc))

    assert meta["num_examples"] == 800
    assert meta["local_epochs"] == 3
    assert set(arrays) == set(initial(mc))
    assert all(a.dtype == np.float32 for a in arrays.values())
    after = executor(mc, train, None).evaluate({}, arrays)["test_loss"]
    assert after < before - 0.1, (before, after)
    assert meta["train_loss"] < before


def test_fit_is_deterministic_per_round() -> None:
    mc = model_config()
    ex = executor(mc, frame(300, 0), None)
    _, first = ex.handle("fit", {"round": 2}, initial(mc))
    _, again = ex.handle("fit", {"round": 2}, initial(mc))
    _, other = ex.handle("fit", {"round": 3}, initial(mc))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert any(not np.array_equal(first[n], other[n]) for n in first)


def sklearn_metrics_of(
    mc: FFNetModelConfig, arrays: dict[str, np.ndarray], test: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    module = build_module(mc)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    with torch.no_grad():
        logits = module(torch.tensor(test[PREDICTORS].to_numpy(), dtype=torch.float32))
    return torch.softmax(logits.double(), dim=1).numpy(), test["y"].to_numpy()


@pytest.mark.parametrize("classes", [2, 3])
def test_evaluate_metrics_equal_scikit_learns_on_the_same_predictions(classes: int) -> None:
    params = {"input_size": 4, "hidden_layer_sizes": [8, 8], "output_size": classes}
    mc = model_config(model={"params": params})
    test = frame(300, 1, classes)
    ex = executor(mc, frame(600, 0, classes), test)
    _, arrays = ex.handle("fit", {"round": 1}, initial(mc))

    meta, out = ex.handle("evaluate", {"round": 1}, arrays)

    assert out == {}
    assert set(meta) == {
        "test_loss",
        "test_accuracy",
        "test_roc_auc",
        "test_num_examples",
        "evaluated_on",
    }
    proba, y = sklearn_metrics_of(mc, arrays, test)
    auc = (
        roc_auc_score(y, proba[:, 1])
        if classes == 2
        else roc_auc_score(y, proba, multi_class="ovr")
    )
    assert meta["test_loss"] == pytest.approx(log_loss(y, proba), abs=1e-6)
    assert meta["test_accuracy"] == pytest.approx(accuracy_score(y, proba.argmax(axis=1)), abs=1e-6)
    assert meta["test_roc_auc"] == pytest.approx(auc, abs=1e-6)
    assert meta["test_num_examples"] == 300
    assert meta["evaluated_on"] == "test"


def test_loss_weights_weigh_the_test_loss_like_sample_weights() -> None:
    mc = model_config(ml_task={"type": "classification", "params": {"loss_weights": [1.0, 3.0]}})
    test = frame(200, 1)
    ex = executor(mc, frame(400, 0), test)
    meta = ex.evaluate({}, initial(mc))
    proba, y = sklearn_metrics_of(mc, initial(mc), test)
    expected = log_loss(y, proba, sample_weight=np.where(y == 1, 3.0, 1.0))
    assert meta["test_loss"] == pytest.approx(expected, abs=1e-6)


def test_regression_metrics_equal_scikit_learns() -> None:
    params = {"input_size": 4, "hidden_layer_sizes": [8], "output_size": 1}
    mc = model_config(
        model={"params": params},
        ml_task={"type": "regression"},
        optimizer={"name": "SGD", "params": {"learning_rate": 0.05}},
    )
    test = frame(250, 1, regression=True)
    ex = executor(mc, frame(500, 0, regression=True), test)
    _, arrays = ex.handle("fit", {"round": 1}, initial(mc))

    meta = ex.evaluate({}, arrays)

    module = build_module(mc)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    with torch.no_grad():
        predicted = (
            module(torch.tensor(test[PREDICTORS].to_numpy(), dtype=torch.float32))
            .double()
            .numpy()[:, 0]
        )
    y = test["y"].to_numpy(dtype=np.float32).astype(np.float64)
    assert meta["test_loss"] == pytest.approx(mean_squared_error(y, predicted), abs=1e-6)
    assert meta["test_r2"] == pytest.approx(r2_score(y, predicted), abs=1e-6)
    assert meta["target_mean"] == pytest.approx(y.mean(), abs=1e-9)
    assert meta["target_m2"] == pytest.approx(((y - y.mean()) ** 2).sum(), rel=1e-9)
    assert "test_accuracy" not in meta


def test_eval_metrics_restrict_what_is_reported() -> None:
    mc = model_config(eval_metrics=["accuracy"])
    meta = executor(mc, frame(100, 0), frame(50, 1)).evaluate({}, initial(mc))
    assert set(meta) == {"test_loss", "test_accuracy", "test_num_examples", "evaluated_on"}


def test_without_a_test_set_it_evaluates_on_train_and_says_so() -> None:
    mc = model_config()
    meta = executor(mc, frame(120, 0), None).evaluate({}, initial(mc))
    assert meta["evaluated_on"] == "train"
    assert meta["test_num_examples"] == 120


def test_auc_is_nan_when_the_test_set_holds_one_class() -> None:
    mc = model_config()
    test = frame(100, 1)
    test["y"] = 1
    meta = executor(mc, frame(100, 0), test).evaluate({}, initial(mc))
    assert math.isnan(meta["test_roc_auc"])
    assert 0.0 <= meta["test_accuracy"] <= 1.0


def test_balancing_undersamples_the_majority_class_each_epoch() -> None:
    mc = model_config(balance_train_datasets=True)
    train = frame(400, 0)
    train.loc[:299, "y"] = 0
    train.loc[300:, "y"] = 1  # 300 vs 100
    meta, _ = executor(mc, train, None).fit({"round": 1}, initial(mc))
    assert meta["num_examples"] == 200


def test_unknown_task_kind_names_the_known_ones() -> None:
    mc = model_config()
    with pytest.raises(TaskError) as info:
        executor(mc, frame(50, 0), None).handle("predict", {}, {})
    assert "'predict'" in str(info.value)
    assert "evaluate, fit" in str(info.value)


def test_arrays_that_do_not_match_the_network_name_key_and_shapes() -> None:
    mc = model_config()
    ex = executor(mc, frame(50, 0), None)
    arrays = initial(mc)
    arrays["hidden0.weight"] = np.zeros((8, 5), dtype=np.float32)
    with pytest.raises(TaskError) as info:
        ex.handle("fit", {"round": 1}, arrays)
    assert "array 'hidden0.weight' has shape (8, 5); expected (8, 4)" in str(info.value)

    arrays = initial(mc)
    del arrays["output.bias"]
    with pytest.raises(
        TaskError, match=r"array 'output.bias' is missing \(expected shape \(2,\)\)"
    ):
        ex.handle("evaluate", {}, arrays)


def test_bad_task_meta_is_refused() -> None:
    mc = model_config()
    with pytest.raises(TaskError, match=r"'local_epochs' must be an integer >= 1\. Got 0"):
        executor(mc, frame(50, 0), None).fit({"round": 1, "local_epochs": 0}, initial(mc))


def test_bad_data_lists_every_problem() -> None:
    mc = model_config(
        model={"params": {"input_size": 4, "hidden_layer_sizes": [8], "output_size": 3}}
    )
    train = frame(50, 0).drop(columns=["d"])
    train.loc[0, "y"] = 3
    train.loc[1, "y"] = -1
    test = frame(20, 1)
    test["a"] = "text"
    test.loc[2, "b"] = np.nan
    with pytest.raises(DataError) as info:
        executor(mc, train, test)
    problems = info.value.problems
    assert any(p.startswith("train: missing columns ['d']") for p in problems)
    assert any(p.startswith("test: column 'a' must be numeric; got dtype") for p in problems)
    assert "test: column 'b' has 1 null value(s)" in problems
    assert not any("class labels" in p for p in problems)  # checked once the columns are fine

    train = frame(50, 0)
    train["y"] = train["y"].astype(float)
    train.loc[0, "y"] = 3.0
    train.loc[1, "y"] = 0.5
    with pytest.raises(DataError) as info:
        executor(mc, train, None)
    (problem,) = info.value.problems
    assert "target column 'y' must hold integer class labels 0..2 (output_size=3)" in problem
    assert "2 row(s) do not, e.g. 0.5, 3" in problem


def test_configs_that_disagree_are_refused_before_touching_data() -> None:
    mc = model_config(
        model={"params": {"input_size": 3, "hidden_layer_sizes": [8], "output_size": 2}}
    )
    with pytest.raises(
        ConfigError, match=r"input_size must equal the number of data_config predictors \(4\)"
    ):
        executor(mc, frame(10, 0), None)


def test_multiclass_auc_averages_the_classes_present() -> None:
    params = {"input_size": 4, "hidden_layer_sizes": [8], "output_size": 3}
    mc = model_config(model={"params": params})
    test = frame(90, 1, classes=2)  # labels 0 and 1 only; class 2 is absent
    meta = executor(mc, frame(90, 0, classes=3), test).evaluate({}, initial(mc))
    proba, y = sklearn_metrics_of(mc, initial(mc), test)
    expected = np.mean([roc_auc_score(y == c, proba[:, c]) for c in (0, 1)])
    assert meta["test_roc_auc"] == pytest.approx(expected, abs=1e-12)
