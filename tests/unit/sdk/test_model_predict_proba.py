"""Model.predict_proba: scikit-learn's shapes, equal to each package's own predictions and to
its scikit-learn export, for models trained by the real workflows in-process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.federation import get_package
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.sdk.model import Model
from fedsilo.wire import ModelMeta

PREDICTORS = ["x0", "x5", "x10", "x12"]


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return make_frames(seed=0)


def trained(
    package_name: str,
    model_config: Mapping[str, Any],
    data_config: Mapping[str, Any],
    frames: dict[str, pd.DataFrame],
    num_rounds: int,
) -> Model:
    """The package's real workflow over the two sample silos, as the SDK downloads it."""
    package = get_package(package_name)
    mc, dc = package.parse_configs(model_config, data_config)
    silos: Sequence[pd.DataFrame] = [frames["train_silo0"], frames["train_silo1"]]
    executors = {
        f"silo{i}": package.executor(mc, dc, LocalDataset(frame, frames["test"], 1024))
        for i, frame in enumerate(silos)
    }
    ctx = InProcessContext(executors, num_rounds)
    package.workflow(ctx, mc, dc)
    assert ctx.saved is not None
    arrays, meta, server_round = ctx.saved
    header = ModelMeta(
        session_id="0123456789",
        package_name=package_name,
        round=server_round,
        model_config=dict(model_config),
        data_config=dict(data_config),
        meta=meta,
    )
    return Model.from_frame(Model(arrays, header).frame)


def check_binary(probabilities: np.ndarray, labels: np.ndarray, n: int) -> None:
    assert isinstance(probabilities, np.ndarray)
    assert probabilities.shape == (n, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), labels)


def test_glm_logistic_equals_its_sklearn_export(frames: dict[str, pd.DataFrame]) -> None:
    config = {
        "model": {"params": {"input_size": len(PREDICTORS)}},
        "ml_task": {"type": "logistic", "params": {"alpha": 0.0, "l1_ratio": 0.0}},
    }
    model = trained("glm", config, {"predictors": PREDICTORS, "target": "y"}, frames, 20)
    test = frames["test"]
    probabilities = model.predict_proba(test)
    check_binary(probabilities, model.predict(test), len(test))
    np.testing.assert_allclose(probabilities, model.exported.predict_proba(test), rtol=1e-15)
    sklearn = model.as_sklearn().predict_proba(test[PREDICTORS])
    np.testing.assert_allclose(probabilities, sklearn, rtol=1e-10)


def test_gbm_classifier_equals_its_sklearn_export(frames: dict[str, pd.DataFrame]) -> None:
    config = {
        "strategy": {"name": "HistGradientBoosting", "params": {}},
        "model": {"params": {"max_depth": 3, "learning_rate": 0.1, "random_state": 23}},
        "ml_task": {"type": "classification", "params": {}},
    }
    model = trained("gbm", config, {"predictors": FEATURES, "target": "y"}, frames, 5)
    test = frames["test"]
    probabilities = model.predict_proba(test)
    check_binary(probabilities, model.predict(test), len(test))
    sklearn = model.as_sklearn().predict_proba(test[FEATURES])
    np.testing.assert_allclose(probabilities, sklearn, rtol=1e-12)


def test_ffnet_classifier_is_the_softmax_of_its_module(frames: dict[str, pd.DataFrame]) -> None:
    config = {
        "strategy": {"name": "FedAvg", "params": {}},
        "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6], "output_size": 2}},
        "ml_task": {"type": "classification", "params": {}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2}},
        "seed": 23,
    }
    model = trained("ffnet", config, {"predictors": FEATURES, "target": "y"}, frames, 1)
    test = frames["test"]
    probabilities = model.predict_proba(test)
    check_binary(probabilities, model.predict(test), len(test))
    with torch.no_grad():
        logits = model.as_pytorch()(torch.tensor(test[FEATURES].to_numpy(), dtype=torch.float32))
    np.testing.assert_allclose(probabilities, torch.softmax(logits.double(), dim=1), rtol=1e-6)


def test_regressions_and_non_classifiers_refuse(frames: dict[str, pd.DataFrame]) -> None:
    config = {
        "model": {"params": {"input_size": len(PREDICTORS)}},
        "ml_task": {"type": "normal", "params": {"alpha": 0.0, "l1_ratio": 0.0}},
    }
    data = frames["train_silo0"].assign(y=frames["train_silo0"]["x1"] * 2.0)
    model = trained(
        "glm",
        config,
        {"predictors": PREDICTORS, "target": "y"},
        {**frames, "train_silo0": data, "train_silo1": data},
        5,
    )
    with pytest.raises(ConfigError, match="predict_proba needs a logistic model"):
        model.predict_proba(frames["test"])
    echo = Model(
        {},
        ModelMeta(
            session_id="0123456789",
            package_name="echo",
            round=1,
            model_config={},
            data_config={},
            meta={},
        ),
    )
    with pytest.raises(FedsiloError, match="'echo' package has no class probabilities"):
        echo.predict_proba(frames["test"])
