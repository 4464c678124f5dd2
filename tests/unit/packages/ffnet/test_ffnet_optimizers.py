"""ffnet trains with the optimizer its model_config names: torch's own loop, step for step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.packages.ffnet.client import FFNetExecutor
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig
from fedsilo.packages.ffnet.model import build_module, module_arrays
from fedsilo.training import shuffle_seed

torch.set_num_threads(1)

PREDICTORS = ["a", "b", "c"]
DC = FFNetDataConfig(predictors=PREDICTORS, target="y")


def model_config(optimizer: dict[str, Any]) -> FFNetModelConfig:
    return FFNetModelConfig.model_validate(
        {
            "model": {"params": {"input_size": 3, "hidden_layer_sizes": [5], "output_size": 2}},
            "ml_task": {"type": "classification", "params": {"loss_weights": None}},
            "optimizer": optimizer,
            "seed": 7,
        }
    )


def frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    data = pd.DataFrame(rng.standard_normal((n, 3)), columns=PREDICTORS)
    data["y"] = (data["a"] - data["b"] > 0).astype(np.int64)
    return data


@pytest.mark.parametrize(
    ("optimizer", "torch_class", "arguments"),
    [
        # seed 002: optimizer = 'optim.Adadelta', lr = 1
        ({"name": "optim.Adadelta", "params": {"lr": 1}}, torch.optim.Adadelta, {"lr": 1.0}),
        (
            {"name": "Adam", "params": {"learning_rate": 0.01, "weight_decay": 0.001}},
            torch.optim.Adam,
            {"lr": 0.01, "weight_decay": 0.001},
        ),
    ],
)
def test_fit_runs_the_named_optimizer(
    optimizer: dict[str, Any], torch_class: type[torch.optim.Optimizer], arguments: dict[str, Any]
) -> None:
    mc = model_config(optimizer)
    train = frame(100)
    start = module_arrays(build_module(mc))
    executor = FFNetExecutor(mc, DC, LocalDataset(train=train, test=None, batch_size=32))
    _, trained = executor.handle("fit", {"round": 1, "local_epochs": 2}, start)

    reference = build_module(mc)
    reference.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in start.items()})
    x = torch.tensor(train[PREDICTORS].to_numpy(), dtype=torch.float32)
    y = torch.tensor(train["y"].to_numpy())
    step = torch_class(reference.parameters(), **arguments)
    generator = torch.Generator().manual_seed(shuffle_seed(7, 1))
    for _ in range(2):
        for rows in torch.split(torch.randperm(100, generator=generator), 32):
            step.zero_grad()
            torch.autograd.backward(torch.nn.CrossEntropyLoss()(reference(x[rows]), y[rows]))
            step.step()
    for key, value in module_arrays(reference).items():
        np.testing.assert_array_equal(trained[key], value, err_msg=key)


def test_lbfgs_with_dp_is_refused_at_config_time() -> None:
    config = {
        "model": {"params": {"input_size": 3, "hidden_layer_sizes": [5], "output_size": 2}},
        "ml_task": {"type": "classification"},
        "optimizer": {"name": "LBFGS", "params": {"lr": 1}},
        "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 7},
    }
    with pytest.raises(ConfigError) as info:
        get_package("ffnet").parse_model_config(config)
    assert "optimizer.name: LBFGS evaluates the gradient many times per step" in str(info.value)
