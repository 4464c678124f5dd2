"""Strategy spellings the seeds use: names in any case, Flower's newer parameter names."""

from __future__ import annotations

from typing import Any

import pytest

from fedsilo.config import StrategyConfig
from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.strategies import (
    STRATEGIES,
    FedAvg,
    UnweightedAverage,
    canonical_strategy_name,
    get_strategy,
)


@pytest.mark.parametrize(
    ("spelling", "cls"),
    [
        ("fedavg", FedAvg),  # seed 002's fusion_algorithm
        ("iter_avg", UnweightedAverage),  # seed 002's fusion_algorithm
        ("FEDAVG", FedAvg),
        ("ITER_AVG", UnweightedAverage),
        ("FedAvg", FedAvg),  # seed 000's spelling
    ],
)
def test_names_match_case_insensitively(spelling: str, cls: type[Any]) -> None:
    assert type(get_strategy(spelling, {})) is cls
    assert StrategyConfig(name=spelling).name == cls.name


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_registered_name_is_its_own_canonical_spelling(name: str) -> None:
    assert canonical_strategy_name(name) == name
    assert canonical_strategy_name(name.lower()) == name
    assert canonical_strategy_name(name.upper()) == name


def test_names_stay_distinct_case_insensitively() -> None:
    assert len({name.lower() for name in STRATEGIES}) == len(STRATEGIES)


def test_an_unknown_name_is_still_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"Unknown strategy name 'fedmagic'\. Known strategies"):
        get_strategy("fedmagic", {})


def test_the_ffnet_config_takes_seed_002s_spelling() -> None:
    config = {
        "strategy": {"name": "fedavg", "params": {"fraction_evaluate": 0.5}},
        "model": {"params": {"input_size": 2, "hidden_layer_sizes": [3], "output_size": 2}},
        "ml_task": {"type": "classification"},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
    }
    model_config = get_package("ffnet").parse_model_config(config)
    assert model_config.strategy.name == "FedAvg"


@pytest.mark.parametrize(
    ("flower", "seed", "value", "attribute"),
    [
        ("fraction_evaluate", "fraction_eval", 0.25, "fraction_eval"),
        ("min_evaluate_clients", "min_eval_clients", 3, "min_eval_clients"),
    ],
)
def test_flowers_newer_names_are_aliases(
    flower: str, seed: str, value: float, attribute: str
) -> None:
    for name in sorted(STRATEGIES):
        required = {"FedProx": {"proximal_mu": 0.1}, "FedClippedAvg": {"clip_norm": 1.0}}.get(
            name, {}
        )
        by_flower = get_strategy(name, {flower: value, **required})
        by_seed = get_strategy(name, {seed: value, **required})
        assert getattr(by_flower.params, attribute) == value
        assert by_flower.params == by_seed.params


def test_the_evaluate_alias_drives_sampling() -> None:
    strategy = get_strategy("FedAvg", {"fraction_evaluate": 0.5, "min_evaluate_clients": 2})
    assert strategy.num_evaluate_clients(10) == 5
    assert strategy.num_evaluate_clients(3) == 2


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"fraction_eval": 0.5, "fraction_evaluate": 0.5},
            "fraction_eval and fraction_evaluate are the same parameter",
        ),
        (
            {"min_eval_clients": 1, "min_evaluate_clients": 2},
            "min_eval_clients and min_evaluate_clients are the same parameter",
        ),
    ],
)
def test_an_alias_given_with_its_name_is_an_error_naming_both(
    params: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        get_strategy("FedAvg", params)
    assert expected in str(info.value)


def test_a_bad_alias_value_names_the_spelling_used() -> None:
    with pytest.raises(ConfigError) as info:
        get_strategy("FedAvg", {"fraction_evaluate": 2})
    assert "fraction_evaluate: Input should be less than or equal to 1 (got 2)" in str(info.value)


def test_the_config_error_names_the_strategy_path() -> None:
    config = {
        "strategy": {"name": "FedAvg", "params": {"fraction_eval": 1, "fraction_evaluate": 1}},
        "model": {"params": {"input_size": 2, "hidden_layer_sizes": [3], "output_size": 2}},
        "ml_task": {"type": "classification"},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
    }
    with pytest.raises(ConfigError) as info:
        get_package("ffnet").parse_model_config(config)
    assert "strategy.params: fraction_eval and fraction_evaluate are the same parameter" in str(
        info.value
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"min_fit_clients": True}, "min_fit_clients"),
        ({"min_eval_clients": "2"}, "min_eval_clients"),
        ({"min_available_clients": 2.0}, "min_available_clients"),
        ({"accept_failures": "yes"}, "accept_failures"),
        ({"fraction_fit": "0.5"}, "fraction_fit"),
    ],
)
def test_strategy_params_refuse_values_of_another_type(params: dict[str, Any], field: str) -> None:
    # Issue 11: `min_fit_clients: true` was taken as 1; a bool or a string is no count.
    with pytest.raises((ConfigError, ValueError), match=field):
        get_strategy("FedAvg", params)


def test_strategy_params_take_an_int_for_a_fraction() -> None:
    assert get_strategy("FedAvg", {"fraction_fit": 1}).params.fraction_fit == 1.0


def test_a_strategy_built_without_params_takes_their_defaults() -> None:
    # Seed 001's driver shape: FedAvg(evaluate_fn=..., on_fit_config_fn=...), no params.
    def fit_config(server_round: int) -> dict[str, Any]:
        return {"server_round": server_round}

    strategy = FedAvg(on_fit_config_fn=fit_config)
    assert strategy.params == FedAvg.params_type()
    assert strategy.on_fit_config_fn is fit_config
