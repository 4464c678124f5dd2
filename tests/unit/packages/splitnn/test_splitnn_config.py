"""splitnn's configs as the seed writes them, their refusals (naming field and value), the
shared batch order and the parts' seeding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.packages.splitnn.model import (
    SplitNetwork,
    batches,
    build_feature_model,
    build_label_model,
)

PACKAGE = get_package("splitnn")
SEED_MODEL: dict[str, Any] = {
    "vfl_mode": "train",
    "prl_session_id": "07d0f8358d",
    "strategy": {"name": "SplitNN", "params": {}},
    "model": {
        "feature_models": {
            "passive_client": {
                "params": {"input_size": 7, "hidden_layer_sizes": [6], "output_size": 5}
            },
            "active_client": {
                "params": {"input_size": 8, "hidden_layer_sizes": [6], "output_size": 5}
            },
        },
        "label_model": {"params": {"hidden_layer_sizes": [5], "output_size": 2}},
    },
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "seed": 23,
}
SEED_DATA: dict[str, Any] = {
    "passive_client": {
        "label_client": False,
        "predictors": ["x1", "x3", "x5", "x7", "x9", "x11", "x13"],
        "target": None,
    },
    "active_client": {
        "label_client": True,
        "predictors": ["x0", "x2", "x4", "x6", "x8", "x10", "x12", "x14"],
        "target": "y",
    },
}


def test_the_seed_configs_parse() -> None:
    model_config, data_config = PACKAGE.parse_configs(SEED_MODEL, SEED_DATA)
    assert data_config.label_client == "active_client"
    assert data_config.featured_clients == ["passive_client", "active_client"]
    assert model_config.strategy is not None and model_config.strategy.name == "SplitNN"
    # 7*6+6 + 6*5+5 + 8*6+6 + 6*5+5 + 10*5+5 + 5*2+2
    assert PACKAGE.parameter_count is not None
    assert PACKAGE.parameter_count(model_config) == 83 + 89 + 55 + 12


def test_a_prediction_config_names_its_training_session_and_nothing_else() -> None:
    predict = {"vfl_mode": "predict", "prl_session_id": "07d0f8358d"}
    model_config, _ = PACKAGE.parse_configs(
        {**predict, "training_session_id": "498beb7e6a"}, SEED_DATA
    )
    assert model_config.model is None
    with pytest.raises(ConfigError, match="needs the training_session_id"):
        PACKAGE.parse_configs(predict, SEED_DATA)
    with pytest.raises(ConfigError, match=r"leave out \['strategy', 'model'"):
        PACKAGE.parse_configs(
            {**SEED_MODEL, **predict, "training_session_id": "498beb7e6a"}, SEED_DATA
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy": {"name": "FedAvg"}}, "strategy 'SplitNN'; got FedAvg"),
        ({"ml_task": None}, r"needs \['ml_task'\]"),
        ({"prl_session_id": "nope"}, "prl_session_id"),
        ({"optimizer": {"name": "SGD", "params": {"lr": -1}}}, "optimizer"),
    ],
)
def test_bad_model_configs_are_refused_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    raw = {k: v for k, v in {**SEED_MODEL, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        PACKAGE.parse_configs(raw, SEED_DATA)


def test_the_network_must_fit_the_columns() -> None:
    wrong = {**SEED_MODEL, "model": {**SEED_MODEL["model"]}}
    wrong["model"]["feature_models"] = {
        **SEED_MODEL["model"]["feature_models"],
        "active_client": {"params": {"input_size": 9, "output_size": 5}},
    }
    with pytest.raises(
        ConfigError, match=r"active_client.params.input_size must equal .* \(8\)\. Got 9"
    ):
        PACKAGE.parse_configs(wrong, SEED_DATA)
    regression = {**SEED_MODEL, "ml_task": {"type": "regression"}}
    with pytest.raises(ConfigError, match=r"output_size must be 1 for regression\. Got 2"):
        PACKAGE.parse_configs(regression, SEED_DATA)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                **SEED_DATA,
                "passive_client": {
                    **SEED_DATA["passive_client"],
                    "label_client": True,
                    "target": "y",
                },
            },
            "exactly one client holds the labels",
        ),
        (
            {**SEED_DATA, "passive_client": {**SEED_DATA["passive_client"], "target": "y"}},
            "only the label client has a target",
        ),
        (
            {**SEED_DATA, "active_client": {**SEED_DATA["active_client"], "target": None}},
            "must name its target",
        ),
        ({"active_client": SEED_DATA["active_client"]}, "at least 2"),
    ],
)
def test_bad_data_configs_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PACKAGE.parse_data_config(data)


def test_every_party_draws_the_same_batches_covering_each_row_once() -> None:
    first = batches(1000, 64, 23, 3)
    again = batches(1000, 64, 23, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert sorted(np.concatenate(first).tolist()) == list(range(1000))
    assert [len(b) for b in first] == [64] * 15 + [40]
    assert not np.array_equal(np.concatenate(first), np.concatenate(batches(1000, 64, 23, 4)))


def test_parts_built_apart_equal_the_central_network() -> None:
    model_config, data_config = PACKAGE.parse_configs(SEED_MODEL, SEED_DATA)
    network = SplitNetwork(model_config, data_config)
    for name in data_config.featured_clients:
        apart = build_feature_model(model_config, name).state_dict()
        for key, value in network.feature_models[name].state_dict().items():
            torch.testing.assert_close(apart[key], value, rtol=0, atol=0)
    label = build_label_model(model_config).state_dict()
    for key, value in network.label_model.state_dict().items():
        torch.testing.assert_close(label[key], value, rtol=0, atol=0)
    passive = network.feature_models["passive_client"].state_dict()["layer0.weight"]
    active = network.feature_models["active_client"].state_dict()["layer0.weight"]
    assert not torch.equal(passive[:, :7], active[:, :7])  # no two parts start alike


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vfl_mode": "fit"}, "'vfl_mode' parameter must be 'train' or 'predict'. Got 'fit'"),
        ({"package_name": "glm"}, "'package_name' parameter of a VFL session must be 'ffnet'"),
        ({"data_config": {}}, "'data_config' parameter must name each client's predictors"),
    ],
)
def test_create_vfl_session_refuses_bad_arguments_before_any_request(
    change: dict[str, Any], message: str
) -> None:
    import fedsilo

    arguments: dict[str, Any] = {
        "name": "VFL",
        "prl_session_id": "07d0f8358d",
        "data_config": SEED_DATA,
        "model_config": SEED_MODEL,
        **change,
    }
    with (
        fedsilo.connect("http://127.0.0.1:9", "fs_unused") as client,  # nothing listens
        pytest.raises(ValueError, match=message),
    ):
        client.create_vfl_session(**arguments)
