"""The exported ffnet model: predictions equal the network's forward pass; errors are clear."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError, FedsiloError
from fedsilo.federation import get_package
from fedsilo.packages.ffnet import PACKAGE, FFNetExecutor, FFNetModel, run
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig
from fedsilo.packages.ffnet.model import build_module, module_arrays
from fedsilo.wire import SessionKind

torch.set_num_threads(1)

DC = FFNetDataConfig(predictors=["a", "b", "c"], target="y")


def model_config(task: str = "classification", output_size: int = 3) -> FFNetModelConfig:
    return FFNetModelConfig.model_validate(
        {
            "model": {
                "params": {"input_size": 3, "hidden_layer_sizes": [5], "output_size": output_size}
            },
            "ml_task": {"type": task},
            "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
            "seed": 3,
        }
    )


def trained_arrays(mc: FFNetModelConfig) -> dict[str, np.ndarray]:
    # Perturb the initial weights so the test does not depend on a lucky initialisation.
    rng = np.random.default_rng(1)
    return {
        k: v + rng.normal(0, 0.3, v.shape).astype(np.float32)
        for k, v in module_arrays(build_module(mc)).items()
    }


def data(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    # Extra columns and a different column order must not matter.
    return pd.DataFrame(rng.standard_normal((n, 4)), columns=["c", "extra", "a", "b"])


def manual_forward(
    mc: FFNetModelConfig, arrays: dict[str, np.ndarray], frame: pd.DataFrame
) -> torch.Tensor:
    module = build_module(mc)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    with torch.no_grad():
        out: torch.Tensor = module(
            torch.tensor(frame[["a", "b", "c"]].to_numpy(), dtype=torch.float32)
        )
    return out


def test_predict_and_predict_proba_equal_the_manual_forward_pass() -> None:
    mc = model_config()
    arrays = trained_arrays(mc)
    model = FFNetModel(mc, DC, arrays, {"round": 4})
    frame = data()
    logits = manual_forward(mc, arrays, frame)

    labels = model.predict(frame)
    proba = model.predict_proba(frame)

    assert labels.shape == (40,)
    np.testing.assert_array_equal(labels, logits.argmax(dim=1).numpy())
    assert proba.shape == (40, 3)
    np.testing.assert_allclose(
        proba, torch.softmax(logits.double(), dim=1).numpy(), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert len(set(labels.tolist())) > 1  # the check above is not trivially about one class


def test_regression_predicts_one_value_per_row() -> None:
    mc = model_config("regression", output_size=1)
    arrays = trained_arrays(mc)
    frame = data()
    predicted = FFNetModel(mc, DC, arrays).predict(frame)
    assert predicted.shape == (40,)
    np.testing.assert_array_equal(predicted, manual_forward(mc, arrays, frame)[:, 0].numpy())
    with pytest.raises(ConfigError, match="predict_proba needs a classification model"):
        FFNetModel(mc, DC, arrays).predict_proba(frame)


def test_as_pytorch_is_a_fresh_module_in_eval_mode_with_the_weights() -> None:
    mc = model_config()
    arrays = trained_arrays(mc)
    model = FFNetModel(mc, DC, arrays)
    module = model.as_pytorch()
    assert isinstance(module, torch.nn.Module)
    assert not module.training
    for name, tensor in module.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), arrays[name])
    with torch.no_grad():
        next(iter(module.parameters())).zero_()
    assert model.as_pytorch() is not module
    np.testing.assert_array_equal(
        model.as_pytorch().state_dict()["hidden0.weight"].numpy(), arrays["hidden0.weight"]
    )


def test_missing_predictors_are_listed() -> None:
    model = FFNetModel(model_config(), DC, trained_arrays(model_config()))
    with pytest.raises(DataError) as info:
        model.predict(data().drop(columns=["a", "c"]))
    assert "missing columns ['a', 'c']" in str(info.value)
    assert "prediction data" in str(info.value)


def test_there_is_no_scikit_learn_form() -> None:
    model = FFNetModel(model_config(), DC, trained_arrays(model_config()))
    with pytest.raises(FedsiloError, match=r"no scikit-learn form.*as_pytorch"):
        model.as_sklearn()


def test_arrays_that_do_not_fit_the_config_are_refused() -> None:
    arrays = trained_arrays(model_config())
    arrays["output.weight"] = arrays["output.weight"][:2]
    with pytest.raises(
        ConfigError, match=r"array 'output.weight' has shape \(2, 5\); expected \(3, 5\)"
    ):
        FFNetModel(model_config(), DC, arrays)


def test_the_package_is_registered_with_its_parts() -> None:
    package = get_package("ffnet")
    assert package is PACKAGE
    assert (package.name, package.kind) == ("ffnet", SessionKind.hfl)
    assert package.workflow is run
    mc = model_config()
    frame = data().assign(y=0)
    executor = package.executor(mc, DC, LocalDataset(train=frame, test=None, batch_size=8))
    assert isinstance(executor, FFNetExecutor)
    exported: Any = package.export(mc, DC, trained_arrays(mc), {"round": 2})
    assert isinstance(exported, FFNetModel)
    assert exported.meta == {"round": 2}
    assert "FFNetModel(task='classification'" in repr(exported)
