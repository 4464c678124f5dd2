"""Restart safety: SIGKILL the server mid-session, start it again on the same data dir; the
session resumes from its last checkpoint and the same client processes finish it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import fedsilo
from fedsilo.data.synth import write_sample_data
from fedsilo.runners.local import start_client, start_server

pytestmark = pytest.mark.e2e

ROUNDS = 12
MODEL_CONFIG: dict[str, Any] = {
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [8], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2}},
    "save_best_model": None,
}
DATA_CONFIG = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


@pytest.mark.slow
def test_session_survives_a_server_sigkill(tmp_path: Path, scoped_tokens: Any) -> None:
    files = write_sample_data(tmp_path / "data")
    data_dir = tmp_path / "server"
    server = start_server(data_dir, log_path=tmp_path / "server1.log")
    port = server.port
    # least privilege, and the scoped tokens must outlive the SIGKILL (they are stored)
    token = scoped_tokens.analyst(server.url, server.admin_token)
    silo_tokens = [
        scoped_tokens.client(server.url, server.admin_token, f"silo{i}") for i in range(2)
    ]
    clients = []
    try:
        with fedsilo.connect(server.url, token) as client:
            session_id = (
                client.create_fl_session(
                    name="restart",
                    description="",
                    min_num_clients=2,
                    num_rounds=ROUNDS,
                    package_name="ffnet",
                    model_config=MODEL_CONFIG,
                    data_config=DATA_CONFIG,
                )
                .start()
                .id
            )
        clients = [
            start_client(
                session_id,
                str(files[f"train_silo{i}.parquet"]),
                str(files["test.parquet"]),
                512,
                f"silo{i}",
                server.url,
                silo_tokens[i],
                log_path=tmp_path / f"client{i}.log",
            )
            for i in range(2)
        ]
        deadline = time.monotonic() + 120
        while session_round_on_disk(data_dir) < 3:
            assert time.monotonic() < deadline, "the session never reached round 3"
            time.sleep(0.05)
        server.kill()  # SIGKILL: no shutdown hooks run
        killed_at_round = session_round_on_disk(data_dir)
        assert 3 <= killed_at_round < ROUNDS

        server = start_server(data_dir, port=port, log_path=tmp_path / "server2.log")
        with fedsilo.connect(server.url, token) as client:
            session = client.fl_session(session_id)
            session.wait(timeout=240, progress=False)
            assert [c.wait(timeout=60) for c in clients] == [0, 0]
            metrics = session.metrics().as_dict()
            logs = session.logs()
        assert len(metrics["federated_metrics"]) == ROUNDS
        assert any("resuming from the checkpoint of round" in line.message for line in logs)
    finally:
        for c in clients:
            c.stop()
        server.stop()


def session_round_on_disk(data_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "fedsilo.db") as conn:
        (value,) = conn.execute("SELECT round FROM sessions").fetchone()
    return int(value)
