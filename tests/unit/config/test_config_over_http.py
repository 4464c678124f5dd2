"""The config spellings the seeds allow, sent as a user would: POST /sessions on a real server.

The server validates model configs at session creation without torch; a refused one is a 422
whose ``detail`` names the field, never a 5xx.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

# The seed's FFNet tutorial config, with the spellings of seed 002 and of newer Flower.
SEED_002_STYLE: dict[str, Any] = {
    "experiment_name": "test_synthetic_tabular",
    "experiment_description": "test_synthetic_tabular",
    "strategy": {"name": "fedavg", "params": {"fraction_evaluate": 1.0}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "balance_train_datasets": False,
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "optim.Adadelta", "params": {"lr": 1}},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
DATA_CONFIG = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


@pytest.fixture
def api(thread_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=thread_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {thread_server.token}"},
        timeout=60,
    ) as client:
        yield client


def create(api: httpx.Client, model_config: dict[str, Any]) -> httpx.Response:
    body = {
        "name": "t",
        "description": "d",
        "package_name": "ffnet",
        "min_num_clients": 2,
        "num_rounds": 2,
        "model_config": model_config,
        "data_config": DATA_CONFIG,
    }
    return api.post("/sessions", json=body)


def test_seed_002_spellings_create_a_session(api: httpx.Client) -> None:
    response = create(api, SEED_002_STYLE)
    assert response.status_code == 201, response.text


def test_an_unknown_optimizer_parameter_is_a_422_naming_it(api: httpx.Client) -> None:
    config = copy.deepcopy(SEED_002_STYLE)
    config["optimizer"] = {"name": "Adam", "params": {"lr": 0.01, "momentum": 0.9}}
    response = create(api, config)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "optimizer.params.momentum: torch.optim.Adam takes no parameter 'momentum'" in detail
    assert "the parameters of Adam are: learning_rate (or lr), betas" in detail


def test_both_spellings_of_a_strategy_parameter_are_a_422_naming_both(api: httpx.Client) -> None:
    config = copy.deepcopy(SEED_002_STYLE)
    config["strategy"]["params"] = {"min_eval_clients": 1, "min_evaluate_clients": 2}
    response = create(api, config)
    assert response.status_code == 422
    assert (
        "min_eval_clients and min_evaluate_clients are the same parameter"
        in (response.json()["detail"])
    )
