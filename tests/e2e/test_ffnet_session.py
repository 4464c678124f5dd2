"""End to end: a real server process, two real client processes, an ffnet session over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import fedsilo
from fedsilo.data.synth import write_sample_data
from fedsilo.runners.local import start_client, start_server

pytestmark = pytest.mark.e2e

MODEL_CONFIG: dict[str, Any] = {
    "experiment_name": "e2e",
    "experiment_description": "two silos, two rounds",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "balance_train_datasets": False,
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
DATA_CONFIG = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


def test_two_clients_train_an_ffnet_over_real_processes(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    files = write_sample_data(tmp_path / "data")
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        # least privilege: the admin token only mints the analyst's and each silo's token
        analyst = scoped_tokens.analyst(server.url, server.admin_token)
        silo_tokens = [
            scoped_tokens.client(server.url, server.admin_token, f"silo{i}") for i in range(2)
        ]
        client = fedsilo.connect(server.url, analyst)
        request.addfinalizer(client.close)
        session = client.create_fl_session(
            name="e2e",
            description="",
            min_num_clients=2,
            num_rounds=2,
            package_name="ffnet",
            model_config=MODEL_CONFIG,
            data_config=DATA_CONFIG,
        ).start()
        clients = [
            start_client(
                session.id,
                str(files[f"train_silo{i}.parquet"]),
                str(files["test.parquet"]),
                256,
                f"silo{i}",
                server.url,
                silo_tokens[i],
                log_path=tmp_path / f"client{i}.log",
            )
            for i in range(2)
        ]
        try:
            session.wait(timeout=240, progress=False)
            codes = [c.wait(timeout=60) for c in clients]
        finally:
            for c in clients:
                c.stop()
        assert codes == [0, 0], [p.read_text()[-2000:] for p in tmp_path.glob("client*.log")]

        metrics = session.metrics().as_dict()
        assert metrics["session_id"] == session.id
        assert len(metrics["federated_metrics"]) == 2
        assert all("loss" in m for m in metrics["federated_metrics"])
        assert len(metrics["client_metrics"]) == 2
        for per_round in metrics["client_metrics"]:
            assert set(per_round) == {"silo0", "silo1"}
            for values in per_round.values():
                assert {"test_loss", "test_accuracy", "test_roc_auc", "test_num_examples"} <= set(
                    values
                )
        assert metrics["latest_global_model_federated_loss"] == pytest.approx(
            metrics["federated_metrics"][-1]["loss"]
        )

        # A constant or broken model sits at the majority rate (~0.5); a trained one is well above.
        test = pd.read_parquet(files["test.parquet"])
        predicted = session.model().predict(test)
        accuracy = float(np.mean(np.asarray(predicted) == test["y"].to_numpy()))
        majority = max(test["y"].mean(), 1 - test["y"].mean())
        assert accuracy > majority + 0.15, (accuracy, majority)
        final = metrics["client_metrics"][-1]["silo0"]["test_accuracy"]
        assert final > majority + 0.15

        # The finished session refuses new clients with a clear reason and a non-zero exit.
        late = start_client(
            session.id,
            str(files["train_silo0.parquet"]),
            str(files["test.parquet"]),
            256,
            "late",
            server.url,
            silo_tokens[0],
            log_path=tmp_path / "late.log",
        )
        assert late.wait(timeout=60) != 0
        assert (
            f"Cannot join session {session.id}: it is completed"
            in (tmp_path / "late.log").read_text()
        )
