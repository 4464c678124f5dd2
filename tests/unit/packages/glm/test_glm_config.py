"""glm configs: the seed's tutorial config parses; every error names its field and value."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.packages.glm import GLMModelConfig

PACKAGE = get_package("glm")
PREDICTORS = [f"x{i}" for i in range(15)]
DATA = {"predictors": PREDICTORS, "target": "y"}

# The seed documentation's GLM tutorial model_config, as written.
SEED_TUTORIAL: dict[str, Any] = {
    "experiment_name": "test_synthetic_tabular",
    "experiment_description": "test_synthetic_tabular",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "output_activation": "sigmoid"}},
    "balance_train_datasets": False,
    "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.9}},
    "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 7},
}


def tutorial(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(SEED_TUTORIAL)
    del config["differential_privacy_params"]  # wired by the privacy work
    config.update(changes)
    return config


def error_of(model_config: dict[str, Any], data_config: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        PACKAGE.parse_configs(model_config, data_config or DATA)
    return str(info.value)


def test_the_seed_tutorial_config_parses_with_newton_by_default() -> None:
    mc, dc = PACKAGE.parse_configs(tutorial(), DATA)
    assert isinstance(mc, GLMModelConfig)
    assert mc.solver == "newton"
    assert mc.tol == 1e-10
    assert str(mc.family()) == "logistic family (logit link)"
    assert dc.required_columns() == [*PREDICTORS, "y"]
    sgd = PACKAGE.parse_model_config(tutorial(solver="sgd"))
    assert sgd.optimizer is not None and sgd.optimizer.params.learning_rate == 0.05


def test_the_seed_tutorial_dp_params_parse() -> None:
    # DP landed (fedsilo.privacy; tests/unit/privacy/test_privacy_glm.py runs it).
    privacy = PACKAGE.parse_model_config(copy.deepcopy(SEED_TUTORIAL)).differential_privacy_params
    assert privacy is not None and (privacy.epsilon, privacy.max_grad_norm) == (4, 7)
    message = error_of(SEED_TUTORIAL | {"differential_privacy_params": {"epsilon": 0}})
    assert "differential_privacy_params.epsilon" in message


@pytest.mark.parametrize(
    ("task", "activation", "expected"),
    [
        ("logistic", None, "logit"),
        ("normal", None, "identity"),
        ("normal", "exp", "log"),
        ("poisson", None, "log"),
        ("gamma", "exp", "log"),
        ("inverseGaussian", None, "log"),
    ],
)
def test_links(task: str, activation: str | None, expected: str) -> None:
    params: dict[str, Any] = {"input_size": 15}
    if activation is not None:
        params["output_activation"] = activation
    mc = PACKAGE.parse_model_config(
        tutorial(
            model={"params": params}, ml_task={"type": task, "params": {"alpha": 0, "l1_ratio": 0}}
        )
    )
    assert mc.family().link == expected


@pytest.mark.parametrize(
    ("task", "activation"),
    [
        ("poisson", "sigmoid"),
        ("poisson", "identity"),
        ("gamma", "identity"),
        ("logistic", "exp"),
        ("normal", "sigmoid"),
        ("inverseGaussian", "sigmoid"),
    ],
)
def test_senseless_links_are_refused_naming_the_field(task: str, activation: str) -> None:
    message = error_of(
        tutorial(
            model={"params": {"input_size": 15, "output_activation": activation}},
            ml_task={"type": task, "params": {"alpha": 0, "l1_ratio": 0}},
        )
    )
    assert "model.params.output_activation" in message
    assert f"{activation!r} makes no sense for ml_task.type {task!r}" in message
    assert f'(got "{activation}")' in message


def test_tanh_is_explained() -> None:
    message = error_of(tutorial(model={"params": {"input_size": 15, "output_activation": "tanh"}}))
    assert "model.params.output_activation: tanh is not the inverse of a link" in message
    assert '(got "tanh")' in message


@pytest.mark.parametrize(
    ("params", "field", "shown"),
    [
        ({"alpha": -0.1, "l1_ratio": 0}, "ml_task.params.alpha", "-0.1"),
        ({"alpha": 0.1, "l1_ratio": 1.5}, "ml_task.params.l1_ratio", "1.5"),
        ({"alpha": 0.1, "l1_ratio": -0.5}, "ml_task.params.l1_ratio", "-0.5"),
        ({"l1_ratio": 0}, "ml_task.params.alpha: Field required", '{"l1_ratio": 0}'),
        ({"alpha": 0}, "ml_task.params.l1_ratio: Field required", '{"alpha": 0}'),
        ({"alpha": 0, "l1_ratio": 0, "lambda": 1}, "ml_task.params.lambda", "1"),
        ({"alpha": 0, "l1_ratio": 0, "power": 1.5}, "ml_task.params.power", "1.5"),
    ],
)
def test_penalty_errors_name_field_and_value(
    params: dict[str, Any], field: str, shown: str
) -> None:
    message = error_of(tutorial(ml_task={"type": "logistic", "params": params}))
    assert field in message
    assert f"(got {shown})" in message


def test_tweedie_needs_a_power_of_at_least_one() -> None:
    base = {"alpha": 0, "l1_ratio": 0}
    model = {"params": {"input_size": 15}}
    assert "ml_task.params.power: tweedie needs a variance power" in error_of(
        tutorial(model=model, ml_task={"type": "tweedie", "params": base})
    )
    message = error_of(
        tutorial(model=model, ml_task={"type": "tweedie", "params": {**base, "power": 0.5}})
    )
    assert "ml_task.params.power" in message and "(got 0.5)" in message
    mc = PACKAGE.parse_model_config(
        tutorial(model=model, ml_task={"type": "tweedie", "params": {**base, "power": 1.5}})
    )
    assert str(mc.family()) == "tweedie family (log link, power=1.5)"


@pytest.mark.parametrize(
    ("change", "field", "shown"),
    [
        ({"solvr": "newton"}, "solvr", '"newton"'),
        ({"solver": "lbfgs"}, "solver", '"lbfgs"'),
        ({"tol": 0}, "tol", "0"),
        ({"balance_train_datasets": True}, "balance_train_datasets", "true"),
        ({"eval_metrics": ["r2"]}, "eval_metrics.0", '"r2"'),
        (
            {"ml_task": {"type": "binomial", "params": {"alpha": 0, "l1_ratio": 0}}},
            "ml_task.type",
            '"binomial"',
        ),
        ({"model": {"params": {"input_size": 0}}}, "model.params.input_size", "0"),
        ({"model": {"params": {"input_size": 15, "layers": 2}}}, "model.params.layers", "2"),
    ],
)
def test_model_config_errors_name_field_and_value(
    change: dict[str, Any], field: str, shown: str
) -> None:
    message = error_of(tutorial(**change))
    assert message.startswith("model_config is invalid: ")
    assert f"{field}:" in message
    assert f"(got {shown})" in message


def test_sgd_needs_an_optimizer() -> None:
    config = tutorial(solver="sgd")
    del config["optimizer"]
    assert "optimizer: the sgd solver needs an optimizer" in error_of(config)


@pytest.mark.parametrize(
    ("data_config", "field", "shown"),
    [
        ({"predictors": PREDICTORS, "target": "x0"}, "target", '"x0"'),
        ({"predictors": PREDICTORS, "target": "y", "offset": "y"}, "offset", '"y"'),
        ({"predictors": PREDICTORS, "target": "y", "exposure": "x1"}, "exposure", '"x1"'),
        (
            {"predictors": PREDICTORS, "target": "y", "sample_weight": "bad name"},
            "sample_weight",
            '"bad name"',
        ),
        ({"predictors": ["a", "a"], "target": "y"}, "predictors", '["a", "a"]'),
        ({"predictors": PREDICTORS, "target": "y", "weights": "w"}, "weights", '"w"'),
    ],
)
def test_data_config_errors_name_field_and_value(
    data_config: dict[str, Any], field: str, shown: str
) -> None:
    message = error_of(tutorial(), data_config)
    assert message.startswith("data_config is invalid: ")
    assert f"{field}:" in message
    assert f"(got {shown})" in message


def test_cross_checks_between_the_configs() -> None:
    message = error_of(tutorial(model={"params": {"input_size": 3}}))
    assert "input_size must equal the number of data_config predictors (15). Got 3." in message
    message = error_of(tutorial(), {**DATA, "exposure": "e"})
    assert "exposure ('e') multiplies the mean, which needs the log link" in message
    poisson = tutorial(ml_task={"type": "poisson", "params": {"alpha": 0, "l1_ratio": 0}})
    poisson["model"] = {"params": {"input_size": 15}}
    _, dc = PACKAGE.parse_configs(
        poisson, {**DATA, "exposure": "e", "sample_weight": "w", "offset": "o"}
    )
    assert dc.required_columns() == [*PREDICTORS, "y", "o", "e", "w"]


def test_json_schema_carries_the_seed_constraints() -> None:
    schema = PACKAGE.model_config_type.model_json_schema()
    defs = schema["$defs"]
    task = defs["MLTask"]["properties"]["type"]
    assert task["enum"] == ["logistic", "normal", "poisson", "gamma", "inverseGaussian", "tweedie"]
    params = defs["MLTaskParams"]
    assert sorted(params["required"]) == ["alpha", "l1_ratio"]
    assert params["properties"]["alpha"]["minimum"] == 0.0
    assert params["properties"]["l1_ratio"]["minimum"] == 0.0
    assert params["properties"]["l1_ratio"]["maximum"] == 1.0
    assert params["additionalProperties"] is False
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"model", "ml_task"}
    data = PACKAGE.data_config_type.model_json_schema()
    assert set(data["properties"]) == {
        "predictors",
        "target",
        "offset",
        "exposure",
        "sample_weight",
    }
