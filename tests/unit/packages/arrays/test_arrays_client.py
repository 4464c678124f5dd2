"""The arrays executor adapting a user's client: list or dict parameters, reply meta keys,
dtype casts, and errors naming what the user's code returned."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, TaskError
from fedsilo.packages.arrays import PACKAGE
from fedsilo.packages.arrays.client import ArraysExecutor, from_parameters, to_parameters


class Options:
    """The one part of ExecutorContext the arrays executor reads."""

    def __init__(self, client: Any) -> None:
        self.package_options = {"client": client}


class Doubler:
    """Returns its parameters doubled, as a list or a dict like it was given."""

    def __init__(self, shape: tuple[int, ...] = (2,)) -> None:
        self.shape = shape
        self.configs: list[dict[str, Any]] = []

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return [np.ones(self.shape, dtype=np.float32), np.zeros(1, dtype=np.float32)]

    def fit(self, parameters: Any, config: dict[str, Any]) -> tuple[Any, int, dict[str, Any]]:
        self.configs.append(config)
        if isinstance(parameters, dict):
            return {k: v * 2 for k, v in parameters.items()}, 7, {"train_loss": 0.5, "acc": 1}
        return [np.asarray(p, dtype=np.float64) * 2 for p in parameters], 7, {"acc": 0.25}

    def evaluate(
        self, parameters: Any, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        return 1.5, 3, {"accuracy": 0.75}


def executor(client: Any) -> ArraysExecutor:
    model_config, data_config = PACKAGE.parse_configs({}, {})
    dataset = LocalDataset(pd.DataFrame(), None, 1)
    return ArraysExecutor(model_config, data_config, dataset, Options(client))  # type: ignore[arg-type]


def test_lists_travel_as_numbered_arrays_and_come_back_as_lists() -> None:
    arrays = from_parameters([np.zeros(2), np.ones((1, 3))], "get_parameters")
    assert list(arrays) == ["0", "1"]
    back = to_parameters({**arrays, "10": np.zeros(1)})
    assert isinstance(back, list) and [a.shape for a in back] == [(2,), (1, 3), (1,)]
    assert isinstance(to_parameters({"w": np.zeros(1)}), dict)


def test_fit_casts_to_the_global_dtypes_and_names_its_metrics() -> None:
    client = Doubler()
    run = executor(client)
    _, initial = run.handle("init", {}, {})
    assert {k: v.dtype for k, v in initial.items()} == {"0": np.float32, "1": np.float32}
    meta, arrays = run.handle("fit", {"round": 1, "max_iter": 5}, initial)
    assert meta == {"num_examples": 7, "fit_acc": 0.25}
    assert arrays["0"].dtype == np.float32
    np.testing.assert_array_equal(arrays["0"], [2.0, 2.0])
    assert client.configs == [{"round": 1, "max_iter": 5}]
    meta, arrays = run.handle("fit", {}, {"w": np.ones(2)})  # a dict model
    assert meta == {"num_examples": 7, "train_loss": 0.5, "fit_acc": 1.0}
    meta, arrays = run.handle("evaluate", {"round": 1}, initial)
    assert meta == {"test_loss": 1.5, "test_num_examples": 3, "test_accuracy": 0.75}
    assert arrays == {}


class Fixed(Doubler):
    """Returns its own layout whatever it was sent."""

    def fit(self, parameters: Any, config: dict[str, Any]) -> tuple[Any, int, dict[str, Any]]:
        return self.get_parameters(config), 1, {}


def test_what_the_users_code_returns_wrongly_is_named() -> None:
    run = executor(Fixed())
    with pytest.raises(
        TaskError, match=r"parameter '0' of shape \(2,\); the global model's is \(3,\)"
    ):
        run.handle("fit", {}, {"0": np.ones(3), "1": np.ones(1)})
    with pytest.raises(TaskError, match=r"fit returned parameters \['0', '1'\]"):
        run.handle("fit", {}, {"0": np.ones(2), "1": np.ones(1), "2": np.ones(1)})
    with pytest.raises(TaskError, match="got 'predict'"):
        run.handle("predict", {}, {})
    with pytest.raises(TaskError, match="list of numpy arrays or a dict"):
        from_parameters(3.0, "get_parameters")


def test_without_a_client_or_reference_columns_the_package_says_how_to_join() -> None:
    model_config, data_config = PACKAGE.parse_configs({}, {})
    with pytest.raises(ConfigError, match=r"fedsilo\.client\.start_client"):
        ArraysExecutor(model_config, data_config, LocalDataset(pd.DataFrame(), None, 1))
    with pytest.raises(ConfigError, match="predictors and target go together"):
        PACKAGE.parse_configs({}, {"predictors": ["a"]})
