"""ffnet's model_config and data_config: the seed's config parses; mistakes name field and value."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig, check_consistency
from fedsilo.strategies import strategy_names

# The seed tutorial's FFNet model_config, verbatim (Python literals for its JSON).
SEED_CONFIG: dict[str, Any] = {
    "experiment_name": "test_synthetic_tabular",
    "experiment_description": "test_synthetic_tabular",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "balance_train_datasets": False,
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 7},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
DATA_CONFIG = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}
PACKAGE = get_package("ffnet")


def without_dp() -> dict[str, Any]:
    config = copy.deepcopy(SEED_CONFIG)
    del config["differential_privacy_params"]
    return config


def parse(config: dict[str, Any]) -> FFNetModelConfig:
    parsed: FFNetModelConfig = PACKAGE.parse_model_config(config)
    return parsed


def error_of(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse(config)
    return str(info.value)


def test_the_seed_config_without_dp_parses_with_the_documented_defaults() -> None:
    mc = parse(without_dp())
    assert mc.model.params.hidden_layer_sizes == [6, 6, 6]
    assert mc.model.params.hidden_activation == "relu"
    assert mc.optimizer.params.learning_rate == 0.2
    assert mc.save_best_model is not None and mc.save_best_model.resolved_mode() == "min"
    assert (mc.seed, mc.local_epochs, mc.eval_metrics) == (23, 1, None)
    assert mc.reported_metrics() == ("loss", "accuracy", "roc_auc")


def test_dp_set_to_null_is_accepted() -> None:
    config = without_dp() | {"differential_privacy_params": None}
    assert parse(config).differential_privacy_params is None


def test_the_seed_config_with_its_dp_params_parses() -> None:
    # DP-SGD landed (fedsilo.privacy); tests/unit/privacy covers the params in depth.
    privacy = parse(copy.deepcopy(SEED_CONFIG)).differential_privacy_params
    assert privacy is not None
    assert (privacy.epsilon, privacy.max_grad_norm, privacy.delta) == (4, 7, None)


def test_bad_dp_params_name_the_field() -> None:
    config = without_dp() | {"differential_privacy_params": {"epsilon": -1, "max_grad_norm": 7}}
    message = error_of(config)
    assert "differential_privacy_params.epsilon: Input should be greater than 0" in message


def test_the_seeds_long_form_example_fields_are_accepted() -> None:
    config = without_dp() | {"job_type": "training", "ml_task": "classification"}
    config["model"] = {
        "type": "FFNet",
        "params": config["model"]["params"] | {"hidden_activation": "tanh"},
    }
    config["eval_metrics"] = ["accuracy", "loss", "roc_auc"]
    mc = parse(config)
    assert mc.ml_task.type == "classification"
    assert mc.model.params.hidden_activation == "tanh"


def set_path(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            set_path(("learning_rat",), 0.1),
            "learning_rat: Extra inputs are not permitted (got 0.1)",
        ),
        (
            # SGD takes nesterov (any torch.optim parameter); a misspelt one is refused.
            set_path(("optimizer", "params", "nesterof"), True),
            "optimizer.params.nesterof: torch.optim.SGD takes no parameter 'nesterof'; the "
            "parameters of SGD are: learning_rate (or lr), momentum, dampening, weight_decay, "
            "nesterov (got true)",
        ),
        (
            set_path(("model", "params", "hidden_activation"), "swish"),
            "model.params.hidden_activation: Input should be 'relu', 'tanh'",
        ),
        (
            set_path(("ml_task", "type"), "ranking"),
            "ml_task.type: Input should be 'classification'",
        ),
        (
            set_path(("optimizer", "params", "learning_rate"), -0.5),
            "optimizer.params.learning_rate: Input should be greater than or equal to 0 (got -0.5)",
        ),
        (
            set_path(("optimizer", "name"), "Adamm"),
            "optimizer.name: unknown optimizer; expected a torch.optim optimizer: Adadelta, "
            "Adafactor, Adagrad, Adam, Adamax, AdamW, ASGD, LBFGS, NAdam, RAdam, RMSprop, Rprop, "
            'SGD (got "Adamm")',
        ),
        (
            set_path(("strategy", "name"), "FedMagic"),
            # The registry grows (robust strategies): the message lists whatever it holds.
            "strategy.name: unknown strategy; known strategies: "
            f'{", ".join(strategy_names())} (got "FedMagic")',
        ),
        (
            set_path(("strategy", "params"), {"fraction_fit": 2}),
            "strategy.params.fraction_fit: Input should be less than or equal to 1 (got 2)",
        ),
        (
            set_path(("local_epochs",), 0),
            "local_epochs: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            set_path(("model", "params", "output_size"), 1),
            "model.params.output_size: classification needs output_size >= 2",
        ),
        (
            set_path(("ml_task", "params", "loss_weights"), [1.0, 2.0, 3.0]),
            "ml_task.params.loss_weights: loss_weights needs one weight per class (output_size=2)"
            ", got 3 (got [1.0, 2.0, 3.0])",
        ),
        (
            set_path(("save_best_model", "metric"), "r2"),
            "save_best_model.metric: save_best_model.metric must be one of the reported metrics "
            'loss, accuracy, roc_auc for classification (got "r2")',
        ),
        (set_path(("eval_metrics",), ["accuracy", "f1"]), "eval_metrics.1: classification reports"),
    ],
)
def test_mistakes_name_the_field_path_and_the_value(
    edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    config = without_dp()
    edit(config)
    message = error_of(config)
    assert message.startswith("model_config is invalid: ")
    assert expected in message


def test_regression_rules() -> None:
    config = without_dp() | {"ml_task": {"type": "regression", "params": {}}}
    config["model"]["params"]["output_size"] = 1
    config["save_best_model"] = {"metric": "r2"}
    mc = parse(config)
    assert mc.save_best_model is not None and mc.save_best_model.resolved_mode() == "max"
    assert mc.reported_metrics() == ("loss", "r2")

    balanced = config | {"balance_train_datasets": True}
    assert "balance_train_datasets: balance_train_datasets undersamples classes" in error_of(
        balanced
    )
    weighted = config | {"ml_task": {"type": "regression", "params": {"loss_weights": [1.0]}}}
    assert "loss_weights apply to classification only" in error_of(weighted)


def test_save_best_model_null_metric_keeps_the_last_round() -> None:
    config = without_dp() | {"save_best_model": {"metric": None, "mode": "min"}}
    assert parse(config).save_best_model.metric is None  # type: ignore[union-attr]
    assert parse(without_dp() | {"save_best_model": None}).save_best_model is None


# -------------------------------------------------------------------- data_config


def test_data_config_lists_its_columns() -> None:
    dc = PACKAGE.parse_data_config(DATA_CONFIG)
    assert isinstance(dc, FFNetDataConfig)
    assert dc.required_columns() == [*DATA_CONFIG["predictors"], "y"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"predictors": [], "target": "y"}, "predictors: List should have at least 1 item"),
        ({"predictors": ["x0", "x0"], "target": "y"}, "predictors must be unique; repeated: x0"),
        ({"predictors": ["x 0"], "target": "y"}, "predictors.0: String should match pattern"),
        ({"predictors": ["x0"], "target": "0y"}, "target: String should match pattern"),
        (
            {"predictors": ["x0", "y"], "target": "y"},
            'target: the target cannot also be a predictor (got "y")',
        ),
        (
            {"predictors": ["x0"], "target": "y", "weights": "w"},
            "weights: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_data_configs_name_the_field(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        PACKAGE.parse_data_config(raw)
    assert expected in str(info.value)


def test_input_size_must_match_the_number_of_predictors() -> None:
    mc = parse(without_dp())
    dc = FFNetDataConfig(predictors=["x0", "x1"], target="y")
    with pytest.raises(ConfigError) as info:
        check_consistency(mc, dc)
    message = str(info.value)
    assert "model.params.input_size must equal the number of data_config predictors (2)" in message
    assert "Got 15." in message
    check_consistency(mc, PACKAGE.parse_data_config(DATA_CONFIG))


def test_regression_needs_a_single_output_for_its_single_target() -> None:
    config = without_dp() | {
        "ml_task": {"type": "regression", "params": {}},
        "save_best_model": None,
    }
    mc = parse(config)  # output_size 2 is a valid model on its own
    with pytest.raises(ConfigError, match=r"output_size must be 1 for regression.*Got 2"):
        check_consistency(mc, PACKAGE.parse_data_config(DATA_CONFIG))


def test_the_json_schema_exports() -> None:
    schema = FFNetModelConfig.model_json_schema()
    assert "differential_privacy_params" in schema["properties"]
    assert schema["additionalProperties"] is False
