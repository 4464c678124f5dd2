"""End to end: the seed's PRL -> VFL train -> VFL predict walkthrough with real processes.

A real server process; two silos (the seed's hospital, the active party with the labels and
the even columns, and imaging centre, the passive party with the odd columns), each
holding ~90% of the people, run ``fedsilo client prl``, then ``fedsilo client vfl-train
... --batch-size 1024 --storage-path DIR``, then ``fedsilo client vfl-predict ...
--storage-path FILE --raw-output`` as separate processes (stopped by PID). The analyst uses
the seed's calls as written (``create_vfl_session(..., package_name="ffnet", ...)``).
Checked: the metrics' shape, each party's part at its storage path only, and the active
party's CSV equals the parts assembled into one network applied to the merged test rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import fedsilo
from fedsilo.packages.splitnn.config import SplitnnDataConfig, SplitnnModelConfig
from fedsilo.packages.splitnn.model import SplitNetwork
from fedsilo.packages.splitnn.parts import PartStore
from fedsilo.runners.local import start_server

pytestmark = pytest.mark.e2e

NAMES = ("passive_client", "active_client")
PASSIVE_COLUMNS = ["x1", "x3", "x5", "x7", "x9", "x11", "x13"]
ACTIVE_COLUMNS = ["x0", "x2", "x4", "x6", "x8", "x10", "x12", "x14"]


def silos(tmp_path: Path) -> dict[str, dict[str, Path]]:
    rng = np.random.default_rng(3)
    rows = {"train": 1440, "test": 360}
    paths: dict[str, dict[str, Path]] = {name: {} for name in NAMES}
    start = 0
    for table, n in rows.items():
        people = np.arange(start, start + n)
        start += n
        x = rng.normal(size=(n, 15))
        y = (x[:, 0] + x[:, 1] - x[:, 2] + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
        for name in NAMES:
            kept = rng.permutation(n)[: int(0.9 * n)]
            columns = PASSIVE_COLUMNS if name == "passive_client" else ACTIVE_COLUMNS
            frame = pd.DataFrame({c: x[kept, int(c[1:])] for c in columns})
            frame.insert(0, "id", [f"patient-{p:05d}" for p in people[kept]])
            if name == "active_client":
                frame["y"] = y[kept]
            paths[name][table] = tmp_path / f"{name}_{table}.csv"
            frame.to_csv(paths[name][table], index=False)
    return paths


def client(args: list[str], token: str, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fedsilo", "client", *args, "--poll-wait", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "FEDSILO_TOKEN": token},
        )


def run_all(procs: list[subprocess.Popen[bytes]], session: Any, logs: list[Path]) -> None:
    try:
        deadline = time.monotonic() + 240
        while session.status in ("created", "pending", "running"):
            assert time.monotonic() < deadline, f"session {session.id} did not finish"
            time.sleep(0.2)
        codes = [p.wait(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, 9)
                p.wait()
    assert codes == [0] * len(procs), [log.read_text()[-2000:] for log in logs]


@pytest.mark.slow
def test_the_seed_vfl_walkthrough(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    paths = silos(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        analyst = scoped_tokens.analyst(server.url, server.admin_token)
        tokens = {n: scoped_tokens.client(server.url, server.admin_token, n) for n in NAMES}
        client_api = fedsilo.connect(server.url, analyst)
        request.addfinalizer(client_api.close)

        prl_data_config = {
            "clients": {
                "passive_client": {"id_columns": ["id"]},
                "active_client": {"id_columns": ["id"]},
            }
        }
        prl_session = client_api.create_prl_session(
            name="Testing notebook - PRL",
            description="I am testing PRL session creation through a notebook",
            data_config=prl_data_config,
        ).start()
        logs = [tmp_path / f"prl-{n}.log" for n in NAMES]
        procs = [
            client(
                [
                    "prl",
                    "--session",
                    prl_session.id,
                    "--train-path",
                    str(paths[n]["train"]),
                    "--test-path",
                    str(paths[n]["test"]),
                    "--client-name",
                    n,
                    "--url",
                    server.url,
                ],
                tokens[n],
                log,
                work,
            )
            for n, log in zip(NAMES, logs, strict=True)
        ]
        run_all(procs, prl_session, logs)
        alignment = prl_session.alignment()

        model_config = {
            "strategy": {"name": "SplitNN", "params": {}},
            "model": {
                "feature_models": {
                    "passive_client": {
                        "params": {"input_size": 7, "hidden_layer_sizes": [6], "output_size": 5}
                    },
                    "active_client": {
                        "params": {"input_size": 8, "hidden_layer_sizes": [6], "output_size": 5}
                    },
                },
                "label_model": {"params": {"hidden_layer_sizes": [5], "output_size": 2}},
            },
            "ml_task": {
                "type": "classification",
                "params": {
                    "loss_weights": None,
                },
            },
            "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
            "seed": 23,  # for reproducibility
        }
        data_config = {
            "passive_client": {
                "label_client": False,
                "predictors": ["x1", "x3", "x5", "x7", "x9", "x11", "x13"],
                "target": None,
            },
            "active_client": {
                "label_client": True,
                "predictors": ["x0", "x2", "x4", "x6", "x8", "x10", "x12", "x14"],
                "target": "y",
            },
        }
        vfl_train_session = client_api.create_vfl_session(
            name="Testing notebook - VFL Train",
            description="I am testing VFL Train session creation through a notebook",
            prl_session_id=prl_session.id,
            vfl_mode="train",
            min_num_clients=2,
            num_rounds=5,
            package_name="ffnet",
            data_config=data_config,
            model_config=model_config,
            startup_mode="external",
        ).start()
        storage = {n: tmp_path / f"model_storage_{n}" for n in NAMES}
        logs = [tmp_path / f"train-{n}.log" for n in NAMES]
        procs = [
            client(
                [
                    "vfl-train",
                    "--session",
                    vfl_train_session.id,
                    "--train-path",
                    str(paths[n]["train"]),
                    "--test-path",
                    str(paths[n]["test"]),
                    "--batch-size",
                    "1024",
                    "--storage-path",
                    str(storage[n]),
                    "--client-name",
                    n,
                    "--url",
                    server.url,
                ],
                tokens[n],
                log,
                work,
            )
            for n, log in zip(NAMES, logs, strict=True)
        ]
        run_all(procs, vfl_train_session, logs)
        metrics = vfl_train_session.metrics().as_dict()

        active_predictions_storage_path = tmp_path / "predictions" / "active.csv"
        vfl_predict_session = client_api.create_vfl_session(
            name="Testing notebook - VFL Predict",
            description="I am testing VFL Predict session creation through a notebook",
            prl_session_id=prl_session.id,
            training_session_id=vfl_train_session.id,
            vfl_mode="predict",
            data_config=data_config,
        ).start()
        targets = {
            "active_client": str(active_predictions_storage_path),
            "passive_client": "passive_no_path",
        }
        logs = [tmp_path / f"predict-{n}.log" for n in NAMES]
        procs = [
            client(
                [
                    "vfl-predict",
                    "--session",
                    vfl_predict_session.id,
                    "--dataset-path",
                    str(paths[n]["test"]),
                    "--batch-size",
                    "1024",
                    "--storage-path",
                    targets[n],
                    "--client-name",
                    n,
                    "--url",
                    server.url,
                    "--raw-output",
                ],
                tokens[n],
                log,
                work,
            )
            for n, log in zip(NAMES, logs, strict=True)
        ]
        run_all(procs, vfl_predict_session, logs)

    # The seed's metrics shape: one federated loss per round, the active party's test metrics.
    assert metrics["session_id"] == vfl_train_session.id
    assert len(metrics["federated_metrics"]) == 5 and len(metrics["client_metrics"]) == 5
    shared_test = len(alignment.positions("active_client", "test"))
    for federated, per_client in zip(
        metrics["federated_metrics"], metrics["client_metrics"], strict=True
    ):
        (reported,) = per_client.values()
        assert set(reported) == {"test_loss", "test_accuracy", "test_roc_auc", "test_num_examples"}
        assert reported["test_num_examples"] == shared_test
        assert federated["loss"] == pytest.approx(reported["test_loss"])
    # Ten steps of batch 1024 (the seed's settings) on ~1,170 rows: learning, barely (the
    # seed's own example ends at 0.52 accuracy); the loss goes down.
    losses = [m["loss"] for m in metrics["federated_metrics"]]
    assert losses[-1] < losses[0]

    # Each party's part at its own storage path; the passive party wrote no predictions.
    parts = {n: PartStore.for_training(storage[n], vfl_train_session.id, n).load() for n in NAMES}
    assert not (work / "passive_no_path").exists()
    mc = SplitnnModelConfig.model_validate({**model_config, "prl_session_id": prl_session.id})
    network = SplitNetwork(mc, SplitnnDataConfig.model_validate(data_config))
    for n in NAMES:
        network.feature_models[n].load_state_dict(parts[n]["feature_model"])
    network.label_model.load_state_dict(parts["active_client"]["label_model"])

    frames = {n: pd.read_csv(paths[n]["test"]) for n in NAMES}
    aligned = {
        n: frames[n].iloc[alignment.positions(n, "test")].reset_index(drop=True) for n in NAMES
    }
    merged = frames["passive_client"].merge(frames["active_client"], on="id")
    assert sorted(aligned["active_client"]["id"]) == sorted(merged["id"])
    written = pd.read_csv(active_predictions_storage_path)
    assert written["id"].tolist() == aligned["active_client"]["id"].tolist()
    with torch.no_grad():
        logits = network(
            {
                "passive_client": torch.tensor(
                    aligned["passive_client"][PASSIVE_COLUMNS].to_numpy(np.float32)
                ),
                "active_client": torch.tensor(
                    aligned["active_client"][ACTIVE_COLUMNS].to_numpy(np.float32)
                ),
            }
        ).numpy()
    np.testing.assert_allclose(written[["output_0", "output_1"]], logits, atol=1e-5)
    np.testing.assert_array_equal(written["prediction"], logits.argmax(axis=1))


def central_losses(
    paths: dict[str, dict[str, Path]],
    alignment: Any,
    model_config: dict[str, Any],
    rounds: int,
    batch: int,
) -> list[float]:
    """Test losses of the same split network trained in one process on the aligned rows."""
    from fedsilo.packages.splitnn.model import batches, label_loss, task_metrics
    from fedsilo.training.optimizers import build_optimizer

    data_config = {
        "passive_client": {"label_client": False, "predictors": PASSIVE_COLUMNS, "target": None},
        "active_client": {"label_client": True, "predictors": ACTIVE_COLUMNS, "target": "y"},
    }
    mc = SplitnnModelConfig.model_validate({**model_config, "prl_session_id": "0" * 10})
    network = SplitNetwork(mc, SplitnnDataConfig.model_validate(data_config))
    assert mc.optimizer is not None
    optimizer = build_optimizer(mc.optimizer, network.parameters())
    rows = {}
    for table in ("train", "test"):
        frames = {n: pd.read_csv(paths[n][table]) for n in NAMES}
        aligned = {n: frames[n].iloc[alignment.positions(n, table)] for n in NAMES}
        rows[table] = {
            "passive_client": torch.tensor(
                aligned["passive_client"][PASSIVE_COLUMNS].to_numpy(np.float32)
            ),
            "active_client": torch.tensor(
                aligned["active_client"][ACTIVE_COLUMNS].to_numpy(np.float32)
            ),
            "y": aligned["active_client"]["y"].to_numpy(np.int64).copy(),
        }
    losses = []
    for server_round in range(1, rounds + 1):
        for idx in batches(len(rows["train"]["y"]), batch, mc.seed, server_round):
            index = torch.from_numpy(idx)
            outputs = network({n: rows["train"][n][index] for n in NAMES})
            loss = label_loss(mc.task)(outputs, torch.from_numpy(rows["train"]["y"][idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            outputs = network({n: rows["test"][n] for n in NAMES}).numpy()
        losses.append(task_metrics(mc.task, outputs, rows["test"]["y"])["test_loss"])
    return losses


@pytest.mark.slow
def test_a_passive_client_killed_mid_training_and_restarted_resumes_the_session(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    paths = silos(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    rounds, batch = 12, 64
    model_config: dict[str, Any] = {
        "strategy": {"name": "SplitNN", "params": {}},
        "model": {
            "feature_models": {
                "passive_client": {
                    "params": {"input_size": 7, "hidden_layer_sizes": [6], "output_size": 5}
                },
                "active_client": {
                    "params": {"input_size": 8, "hidden_layer_sizes": [6], "output_size": 5}
                },
            },
            "label_model": {"params": {"hidden_layer_sizes": [5], "output_size": 2}},
        },
        "ml_task": {"type": "classification", "params": {}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1, "momentum": 0.5}},
        "seed": 23,
    }
    data_config = {
        "passive_client": {"label_client": False, "predictors": PASSIVE_COLUMNS, "target": None},
        "active_client": {"label_client": True, "predictors": ACTIVE_COLUMNS, "target": "y"},
    }
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        analyst = scoped_tokens.analyst(server.url, server.admin_token)
        tokens = {n: scoped_tokens.client(server.url, server.admin_token, n) for n in NAMES}
        api = fedsilo.connect(server.url, analyst)
        request.addfinalizer(api.close)
        prl = api.create_prl_session(
            name="PRL", data_config={"clients": {n: {"id_columns": ["id"]} for n in NAMES}}
        ).start()
        logs = [tmp_path / f"prl-{n}.log" for n in NAMES]
        procs = [
            client(
                [
                    "prl",
                    "--session",
                    prl.id,
                    "--train-path",
                    str(paths[n]["train"]),
                    "--test-path",
                    str(paths[n]["test"]),
                    "--client-name",
                    n,
                    "--url",
                    server.url,
                ],
                tokens[n],
                log,
                work,
            )
            for n, log in zip(NAMES, logs, strict=True)
        ]
        run_all(procs, prl, logs)
        vfl = api.create_vfl_session(
            name="VFL", prl_session_id=prl.id, num_rounds=rounds, data_config=data_config,
            model_config=model_config,
        ).start()  # fmt: skip

        def train(name: str, log: Path) -> subprocess.Popen[bytes]:
            return client(
                ["vfl-train", "--session", vfl.id, "--train-path", str(paths[name]["train"]),
                 "--test-path", str(paths[name]["test"]), "--batch-size", str(batch),
                 "--storage-path", str(tmp_path / f"storage-{name}"), "--client-name", name,
                 "--url", server.url],
                tokens[name], log, work,
            )  # fmt: skip

        active = train("active_client", tmp_path / "train-active.log")
        passive = train("passive_client", tmp_path / "train-passive-1.log")
        deadline = time.monotonic() + 120
        while vfl.refresh().round < 3:
            assert time.monotonic() < deadline and passive.poll() is None, vfl.refresh()
            time.sleep(0.02)
        time.sleep(0.03)  # into round 4 (a round takes ~0.1 s on a quiet machine)
        os.kill(passive.pid, 9)
        passive.wait()
        again = train("passive_client", tmp_path / "train-passive-2.log")
        logs = [tmp_path / "train-active.log", tmp_path / "train-passive-2.log"]
        run_all([active, again], vfl, logs)
        losses = [m["loss"] for m in vfl.metrics().as_dict()["federated_metrics"]]
        events = " | ".join(line.message for line in vfl.logs())
        alignment = prl.alignment()
    assert "resending it to every party" in events, events
    assert len(losses) == rounds
    expected = central_losses(paths, alignment, model_config, rounds, batch)
    np.testing.assert_allclose(losses, expected, atol=1e-4)
