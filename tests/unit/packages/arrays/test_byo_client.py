"""Bring-your-own client code through the real engine: the server in a thread, two
``fedsilo.client.start_client`` clients in threads running the seed 001 scikit-learn
LogisticRegression (examples/byo_sklearn_client.py), the SDK outside. The federated model
must classify the held-out digits within 1 point of the same model trained on the pooled rows.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

import fedsilo
import fedsilo.client
from fedsilo.errors import ConfigError
from fedsilo.wire import SessionStatus

EXAMPLE = Path(__file__).parents[4] / "examples" / "byo_sklearn_client.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("byo_sklearn_client", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def central_accuracy(example: ModuleType) -> float:
    silos, (x_test, y_test) = example.split_digits(2)
    x = np.vstack([s[0] for s in silos])
    y = np.concatenate([s[1] for s in silos])
    model = example.new_model(max_iter=1000)
    model.warm_start = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    return float(model.score(x_test, y_test))


def run_clients(server: Any, sid: str, example: ModuleType, token: str) -> dict[str, Any]:
    silos, _ = example.split_digits(2)
    results: dict[str, Any] = {}

    def one(i: int) -> None:
        x_train, y_train, x_val, y_val = silos[i]
        try:
            results[f"silo{i}"] = fedsilo.client.start_client(
                server.url,
                token,
                sid,
                client=example.LogisticRegressionClient(x_train, y_train, x_val, y_val),
                client_name=f"silo{i}",
                num_examples=len(x_train),
                num_test_examples=len(x_val),
                poll_wait=5,
                on_event=lambda _: None,
            )
        except Exception as exc:  # reported to the test thread
            results[f"silo{i}"] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    return {"threads": threads, "results": results}


@pytest.mark.parametrize("strategy", ["FedAvg", "iter_avg"])
def test_seed_001_sklearn_clients_match_the_central_model(
    thread_server: Any, scoped_tokens: Any, strategy: str
) -> None:
    example = load_example()
    analyst = scoped_tokens.analyst(thread_server.url, thread_server.token)
    silo_token = scoped_tokens.client(thread_server.url, thread_server.token, "silo")
    client = fedsilo.connect(thread_server.url, analyst)
    try:
        session = client.create_fl_session(
            name="byo",
            min_num_clients=2,
            num_rounds=3,
            package_name="arrays",
            model_config={"strategy": {"name": strategy, "params": {}}},
            data_config={},
        ).start()
        running = run_clients(thread_server, session.id, example, silo_token)
        session.wait(timeout=120, progress=False)
        for thread in running["threads"]:
            thread.join(timeout=30)
        assert running["results"] == {"silo0": SessionStatus.completed, "silo1": "completed"}

        metrics = session.metrics().as_dict()
        assert len(metrics["federated_metrics"]) == 3
        for per_round in metrics["client_metrics"]:
            assert set(per_round) == {"silo0", "silo1"}
            for values in per_round.values():
                # evaluate's loss and metrics, and fit's own metrics, per client and round
                assert {"test_loss", "test_accuracy", "test_num_examples", "fit_accuracy"} <= set(
                    values
                )
        federated = metrics["federated_metrics"][-1]
        last = metrics["client_metrics"][-1]
        weights = [last[s]["test_num_examples"] for s in ("silo0", "silo1")]
        expected = np.average(
            [last[s]["test_accuracy"] for s in ("silo0", "silo1")], weights=weights
        )
        assert federated["accuracy"] == pytest.approx(expected, rel=1e-12)

        model = session.model()
        arrays = model.arrays()
        assert sorted(arrays) == ["0", "1"]
        assert arrays["0"].shape == (10, 64) and arrays["1"].shape == (10,)
        coef, intercept = model.parameters()
        headers = {"Authorization": f"Bearer {analyst}"}
        with httpx.Client(base_url=thread_server.url + "/api/v1", headers=headers) as http:
            as_json = http.get(f"/sessions/{session.id}/model", params={"format": "json"})
            unknown = http.get(f"/sessions/{session.id}/model", params={"format": "xml"})
        assert as_json.status_code == 200, as_json.text
        body = as_json.json()
        assert body["dtypes"] == {"0": "float64", "1": "float64"}
        assert body["shapes"] == {"0": [10, 64], "1": [10]}
        np.testing.assert_array_equal(np.asarray(body["global_model"]["0"]), coef)
        assert body["round"] == model.round and body["package_name"] == "arrays"
        assert unknown.status_code == 422
        trained = example.new_model()
        example.set_parameters(trained, [coef, intercept])
        _, (x_test, y_test) = example.split_digits(2)
        federated_accuracy = float(trained.score(x_test, y_test))
        assert abs(federated_accuracy - central_accuracy(example)) <= 0.01
    finally:
        client.close()


def test_a_client_without_fit_is_refused_before_joining(thread_server: Any) -> None:
    class NoFit:
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return [np.zeros(2)]

        def evaluate(self, parameters: Any, config: dict[str, Any]) -> tuple[float, int, dict]:
            return 0.0, 1, {}

    with pytest.raises(ConfigError, match="lacks fit"):
        fedsilo.client.start_client(
            thread_server.url, thread_server.token, "0123456789", client=NoFit(), client_name="a"
        )


def test_a_session_of_another_package_is_refused_naming_arrays(thread_server: Any) -> None:
    example = load_example()
    client = fedsilo.connect(thread_server.url, thread_server.token)
    try:
        session = client.create_fl_session(
            name="echo",
            min_num_clients=1,
            num_rounds=1,
            package_name="echo",
            model_config={},
            data_config={},
        )
        silos, _ = example.split_digits(2)
        with pytest.raises(ConfigError, match="package 'arrays'"):
            fedsilo.client.start_client(
                thread_server.url,
                thread_server.token,
                session.id,
                client=example.LogisticRegressionClient(*silos[0]),
                client_name="silo0",
            )
    finally:
        client.close()
