"""The driver API (seed 001's server): ``Session.run`` runs FedAvg with ``evaluate_fn`` and
``on_fit_config_fn`` in the test process against a real server in a thread and two
``start_client`` clients; the server only relays. The server-side evaluation on the test set
only the driver holds must be within 1 point of the same model trained on the pooled rows."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import fedsilo
import fedsilo.client
from fedsilo.errors import ConfigError
from fedsilo.packages.arrays.client import to_parameters
from fedsilo.strategies import FedAvg, FedAvgParams
from fedsilo.wire import SessionStatus

EXAMPLE = Path(__file__).parents[4] / "examples" / "byo_sklearn_client.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("byo_sklearn_client_driver", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_seed_001_driver_reaches_the_central_accuracy(
    thread_server: Any, scoped_tokens: Any
) -> None:
    example = load_example()
    silos, (x_test, y_test) = example.split_digits(2)
    analyst = scoped_tokens.analyst(thread_server.url, thread_server.token)
    silo_token = scoped_tokens.client(thread_server.url, thread_server.token, "silo")
    seen: list[dict[str, Any]] = []

    class Recording(example.LogisticRegressionClient):  # type: ignore[misc,name-defined]
        def fit(self, parameters: Any, config: dict[str, Any]) -> Any:
            seen.append(dict(config))
            return super().fit(parameters, config)

    def evaluate_fn(server_round: int, arrays: Any, config: dict[str, Any]) -> Any:
        model = example.new_model()
        example.set_parameters(model, to_parameters(arrays))
        return 1.0 - model.score(x_test, y_test), {"accuracy": model.score(x_test, y_test)}

    client = fedsilo.connect(thread_server.url, analyst)
    try:
        session = client.create_fl_session(
            name="driven",
            min_num_clients=2,
            num_rounds=3,
            package_name="arrays",
            model_config={"driver": True},
            data_config={},
        )
        undriven = client.create_fl_session(
            name="undriven",
            min_num_clients=2,
            num_rounds=3,
            package_name="arrays",
            model_config={},
            data_config={},
        )
        with pytest.raises(ConfigError, match="driver"):
            undriven.run(FedAvg(FedAvgParams()), num_rounds=1)
        session.start()
        results: dict[str, Any] = {}

        def one(i: int) -> None:
            results[f"silo{i}"] = fedsilo.client.start_client(
                thread_server.url,
                silo_token,
                session.id,
                client=Recording(*silos[i]),
                client_name=f"silo{i}",
                poll_wait=5,
                on_event=lambda _: None,
            )

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(2)]
        for thread in threads:
            thread.start()
        strategy = FedAvg(
            FedAvgParams(),
            evaluate_fn=evaluate_fn,
            on_fit_config_fn=lambda server_round: {"max_iter": 100, "fit_round": server_round},
        )
        history = session.run(strategy=strategy, num_rounds=3, timeout=60)
        session.wait(timeout=60, progress=False)
        for thread in threads:
            thread.join(timeout=30)
        assert results == {"silo0": SessionStatus.completed, "silo1": SessionStatus.completed}

        assert sorted(c["fit_round"] for c in seen) == [1, 1, 2, 2, 3, 3]
        assert all(c["max_iter"] == 100 and c["num_rounds"] == 3 for c in seen)
        metrics = session.metrics().as_dict()
        assert len(metrics["federated_metrics"]) == 3
        last = metrics["federated_metrics"][-1]
        assert last["server_accuracy"] == pytest.approx(history.federated[-1]["server_accuracy"])
        assert {"accuracy", "loss", "server_loss"} <= set(last)
        assert all(
            {"test_accuracy", "fit_accuracy"} <= set(m)
            for per_round in metrics["client_metrics"]
            for m in per_round.values()
        )
        assert abs(last["server_accuracy"] - example.central_accuracy()) <= 0.01
        model = session.model()
        for name, array in history.arrays.items():
            np.testing.assert_array_equal(model.arrays()[name], array)
    finally:
        client.close()
