"""The exported GLM: torch module, predictions with and without offsets, refusals, the SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from fedsilo.errors import ConfigError, DataError, FedsiloError
from fedsilo.packages.glm import GLMModel
from fedsilo.packages.glm.local_sgd import Exp
from fedsilo.sdk.model import Model
from fedsilo.wire import ModelMeta

PREDICTORS = ["x0", "x1", "x2", "x3"]
DATA = {"predictors": PREDICTORS, "target": "y"}


@pytest.mark.parametrize(
    ("task", "link_type"),
    [("logistic", torch.nn.Sigmoid), ("poisson", Exp), ("normal", torch.nn.Identity)],
)
def test_as_pytorch_computes_the_mean(
    task: str,
    link_type: type,
    silos: Callable[..., list[pd.DataFrame]],
    run_federated: Any,
    config: Any,
) -> None:
    frames = silos(task)
    fit = run_federated(config(task), DATA, frames)
    module = fit.model.as_pytorch()
    assert isinstance(module.inverse_link, link_type)
    assert not module.training
    pooled = pd.concat(frames)
    with torch.no_grad():
        out = module(torch.tensor(pooled[PREDICTORS].to_numpy()))
    assert out.dtype == torch.float64 and out.shape == (len(pooled), 1)
    np.testing.assert_allclose(out[:, 0].numpy(), fit.model.predict_mean(pooled), rtol=1e-12)
    single = fit.model.as_pytorch(dtype=torch.float32)
    with torch.no_grad():
        approx = single(torch.tensor(pooled[PREDICTORS].to_numpy(dtype=np.float32)))
    np.testing.assert_allclose(approx[:, 0].numpy(), out[:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_offsets_in_predictions(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos("poisson")
    fit = run_federated(config("poisson"), {**DATA, "exposure": "expo", "offset": "off"}, frames)
    pooled = pd.concat(frames)
    rate = fit.model.predict(pooled, with_offset=False)
    counts = fit.model.predict(pooled)
    np.testing.assert_allclose(counts, rate * pooled["expo"] * np.exp(pooled["off"]), rtol=1e-12)
    # The scikit-learn estimator has no offset: it predicts the rate (offset 0, exposure 1).
    np.testing.assert_allclose(fit.model.as_sklearn().predict(pooled[PREDICTORS]), rate, rtol=1e-12)
    with pytest.raises(DataError, match="missing required column\\(s\\) 'expo'"):
        fit.model.predict(pooled.drop(columns=["expo"]))
    bad = pooled.head(3).assign(expo=[1.0, 0.0, -1.0])
    with pytest.raises(DataError, match="exposure column 'expo' has 2 value\\(s\\) <= 0"):
        fit.model.predict(bad)


def test_refusals(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos("gamma")
    penalized = run_federated(config("gamma", alpha=0.01), DATA, frames)
    with pytest.raises(ConfigError, match=r"summary\(\) needs an unpenalized fit.*alpha=0.01"):
        penalized.model.summary()
    with pytest.raises(ConfigError, match="predict_proba needs a logistic model"):
        penalized.model.predict_proba(frames[0])
    with pytest.raises(ConfigError, match="confidence must be in \\(0, 1\\)"):
        run_federated(config("gamma"), DATA, frames).model.summary(confidence=1.5)
    mc = penalized.model.model_config
    with pytest.raises(ConfigError, match="needs array 'beta' of shape \\(5,\\)"):
        GLMModel(mc, penalized.model.data_config, {"beta": np.zeros(3)}, {})
    no_fisher = GLMModel(
        mc.model_copy(
            update={
                "ml_task": mc.ml_task.model_copy(
                    update={"params": mc.ml_task.params.model_copy(update={"alpha": 0.0})}
                )
            }
        ),
        penalized.model.data_config,
        {"beta": np.zeros(5)},
        {"solver": "sgd"},
    )
    with pytest.raises(ConfigError, match=r"Fisher information of a 'newton' fit.*'sgd'"):
        no_fisher.summary()


def test_the_sdk_model_delegates_summary_and_sklearn(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos("logistic")
    fit = run_federated(config("logistic"), DATA, frames)
    assert fit.ctx.saved is not None
    arrays, meta, server_round = fit.ctx.saved
    model = Model(
        arrays,
        ModelMeta(
            session_id="0123456789",
            package_name="glm",
            round=server_round,
            model_config=config("logistic"),
            data_config=DATA,
            meta=meta,
        ),
    )
    model = Model.from_frame(model.frame)  # as downloaded
    pd.testing.assert_frame_equal(model.summary(), fit.model.summary())
    pooled = pd.concat(frames)
    np.testing.assert_array_equal(
        model.as_sklearn().predict(pooled[PREDICTORS]), model.predict(pooled)
    )

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
    with pytest.raises(FedsiloError, match="'echo' package has no coefficient summary"):
        echo.summary()
