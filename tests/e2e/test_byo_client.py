"""End to end, seed 001: a real server process and two real processes running the user's own
scikit-learn client code (examples/byo_sklearn_client.py through
``fedsilo.client.start_client``) in a session of package ``arrays``: rounds run by the
server, then by a driver in this process (``Session.run`` with ``evaluate_fn`` and
``on_fit_config_fn``)."""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import fedsilo
from fedsilo.packages.arrays.client import to_parameters
from fedsilo.runners.local import ClientProcess, start_server
from fedsilo.strategies import FedAvg, FedAvgParams

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "examples" / "byo_sklearn_client.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("byo_sklearn_client_e2e", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_two_byo_sklearn_processes_train_within_a_point_of_central(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    example = load_example()
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        analyst = scoped_tokens.analyst(server.url, server.admin_token)
        silo_token = scoped_tokens.client(server.url, server.admin_token, "silos")
        client = fedsilo.connect(server.url, analyst)
        request.addfinalizer(client.close)
        session = client.create_fl_session(
            name="seed 001",
            min_num_clients=2,
            num_rounds=3,
            package_name="arrays",
            model_config={"strategy": {"name": "FedAvg", "params": {}}},
            data_config={},
        ).start()
        env = {**os.environ, "FEDSILO_TOKEN": silo_token}
        processes = [
            ClientProcess(
                [
                    sys.executable,
                    str(EXAMPLE),
                    "--url",
                    server.url,
                    "--session",
                    session.id,
                    "--silo",
                    str(i),
                    "--num-silos",
                    "2",
                ],
                env,
                tmp_path / f"silo{i}.log",
                session_id=session.id,
                client_name=f"silo{i}",
            )
            for i in range(2)
        ]
        try:
            session.wait(timeout=240, progress=False)
            codes = [p.wait(timeout=60) for p in processes]
        finally:
            for p in processes:
                p.stop()
        assert codes == [0, 0], [p.log_tail() for p in processes]

        metrics = session.metrics().as_dict()
        assert len(metrics["federated_metrics"]) == 3
        for per_round in metrics["client_metrics"]:
            assert set(per_round) == {"silo0", "silo1"}
            assert all({"test_accuracy", "fit_accuracy"} <= set(v) for v in per_round.values())

        silos, (x_test, y_test) = example.split_digits(2)
        trained = example.new_model()
        example.set_parameters(trained, session.model().parameters())
        federated = float(trained.score(x_test, y_test))
        central = example.new_model(max_iter=1000)
        central.warm_start = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            central.fit(np.vstack([s[0] for s in silos]), np.concatenate([s[1] for s in silos]))
        assert abs(federated - float(central.score(x_test, y_test))) <= 0.01


def test_a_driver_in_this_process_runs_seed_001_over_real_clients(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    example = load_example()
    _, (x_test, y_test) = example.split_digits(2)

    def evaluate_fn(server_round: int, arrays: Any, config: dict[str, Any]) -> Any:
        model = example.new_model()
        example.set_parameters(model, to_parameters(arrays))
        accuracy = float(model.score(x_test, y_test))
        return 1.0 - accuracy, {"accuracy": accuracy}

    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        analyst = scoped_tokens.analyst(server.url, server.admin_token)
        silo_token = scoped_tokens.client(server.url, server.admin_token, "silos")
        client = fedsilo.connect(server.url, analyst)
        request.addfinalizer(client.close)
        session = client.create_fl_session(
            name="seed 001 driven",
            min_num_clients=2,
            num_rounds=3,
            package_name="arrays",
            model_config={"driver": True},
            data_config={},
        ).start()
        env = {**os.environ, "FEDSILO_TOKEN": silo_token}
        processes = [
            ClientProcess(
                [
                    sys.executable,
                    str(EXAMPLE),
                    "--url",
                    server.url,
                    "--session",
                    session.id,
                    "--silo",
                    str(i),
                    "--num-silos",
                    "2",
                ],
                env,
                tmp_path / f"driven{i}.log",
                session_id=session.id,
                client_name=f"silo{i}",
            )
            for i in range(2)
        ]
        try:
            strategy = FedAvg(
                FedAvgParams(),
                evaluate_fn=evaluate_fn,
                on_fit_config_fn=lambda server_round: {"max_iter": 100},
            )
            history = session.run(strategy=strategy, num_rounds=3, timeout=120)
            session.wait(timeout=60, progress=False)
            codes = [p.wait(timeout=60) for p in processes]
        finally:
            for p in processes:
                p.stop()
        assert codes == [0, 0], [p.log_tail() for p in processes]
        last = session.metrics().as_dict()["federated_metrics"][-1]
        assert last["server_accuracy"] == history.federated[-1]["server_accuracy"]
        assert abs(last["server_accuracy"] - example.central_accuracy()) <= 0.01
