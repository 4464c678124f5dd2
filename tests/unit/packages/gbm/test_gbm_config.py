"""The gbm configs: the seed's config parses; mistakes are errors naming the field."""

from __future__ import annotations

import pytest

from fedsilo.errors import ConfigError
from fedsilo.federation import get_package

SEED_CONFIG = {
    "strategy": {"name": "HistGradientBoosting", "params": {}},
    "model": {
        "params": {
            "max_depth": 4,
            "learning_rate": 0.05,
            "random_state": 23,
            "max_bins": 128,
            "sketch_relative_accuracy": 0.001,
        }
    },
    "ml_task": {"type": "classification", "params": {}},
    "save_best_model": {"metric": None, "mode": "min"},
}
DATA = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


def test_the_seed_config_parses() -> None:
    mc, dc = get_package("gbm").parse_configs(SEED_CONFIG, DATA)
    assert mc.model.params.max_bins == 128 and mc.model.params.max_leaf_nodes is None
    assert dc.required_columns()[-1] == "y"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"params": {"max_bins": 300}}}, "model.params.max_bins"),
        ({"model": {"params": {"max_depth": 3, "bogus": 1}}}, "bogus"),
        ({"model": {"params": {"max_depth": None}}}, "cannot both be null"),
        ({"model": {"params": {"sketch_relative_accuracy": 0}}}, "sketch_relative_accuracy"),
        ({"strategy": {"name": "FedAvg", "params": {}}}, "strategy.name"),
        ({"save_best_model": {"metric": "r2"}}, "save_best_model.metric must be one of"),
        ({"ml_task": {"type": "multiclass"}}, "ml_task.type"),
    ],
)
def test_mistakes_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_package("gbm").parse_configs({**SEED_CONFIG, **change}, DATA)
