"""SplitNN through the real server (in a thread), real ClientRuntime clients (threads) and the
SDK, as the seed walks it: PRL, then VFL train, then VFL predict, on scikit-learn's
breast-cancer data split by columns (two parties) and by rows (each holds ~90% of the
people, so the overlap is partial).

References: the same split network trained centrally on the merged rows (one torch
optimizer over the whole network, the same seed and the same batches) reaches the same test
accuracy within 1 point -- in fact the same losses within 1e-4 -- and the prediction CSV
equals that central network applied to the merged test rows within 1e-5. Nothing the server
stored holds an embedding, a gradient or a weight.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.errors import NotFoundError
from fedsilo.http import ApiClient
from fedsilo.packages.splitnn.config import SplitnnDataConfig, SplitnnModelConfig
from fedsilo.packages.splitnn.model import SplitNetwork, batches, label_loss, task_metrics
from fedsilo.packages.splitnn.parts import PartStore
from fedsilo.training.optimizers import build_optimizer
from fedsilo.wire import SessionStatus

if TYPE_CHECKING:
    from conftest import ScopedTokens, ThreadServer

PASSIVE, ACTIVE = "passive_client", "active_client"
NAMES = (PASSIVE, ACTIVE)
ROUNDS = 4
BATCH = 32
SEED = 23


def silo_tables(tmp_path: Path) -> dict[str, dict[str, pd.DataFrame]]:
    """Breast cancer, standardised; even columns and the target at the active party, odd
    columns at the passive party; each party keeps a random 90% of the train and test
    people, in its own shuffled order."""
    data = load_breast_cancer()
    x = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    rng = np.random.default_rng(7)
    ids = rng.permutation(len(x))
    split = {"train": ids[:455], "test": ids[455:]}
    frames: dict[str, dict[str, pd.DataFrame]] = {PASSIVE: {}, ACTIVE: {}}
    for table, people in split.items():
        for name in NAMES:
            kept = rng.permutation(people)[: int(0.9 * len(people))]
            columns = range(1, 30, 2) if name == PASSIVE else range(0, 30, 2)
            frame = pd.DataFrame({f"x{j}": x[kept, j] for j in columns})
            frame.insert(0, "id", [f"patient-{p:04d}" for p in kept])
            if name == ACTIVE:
                frame["y"] = data.target[kept].astype(np.int64)
            frames[name][table] = frame
            frame.to_csv(tmp_path / f"{name}-{table}.csv", index=False)
    return frames


DATA_CONFIG = {
    PASSIVE: {
        "label_client": False,
        "predictors": [f"x{j}" for j in range(1, 30, 2)],
        "target": None,
    },
    ACTIVE: {"label_client": True, "predictors": [f"x{j}" for j in range(0, 30, 2)], "target": "y"},
}
MODEL_CONFIG: dict[str, Any] = {
    "strategy": {"name": "SplitNN", "params": {}},
    "model": {
        "feature_models": {
            PASSIVE: {"params": {"input_size": 15, "hidden_layer_sizes": [8], "output_size": 4}},
            ACTIVE: {"params": {"input_size": 15, "hidden_layer_sizes": [8], "output_size": 4}},
        },
        "label_model": {"params": {"hidden_layer_sizes": [5], "output_size": 2}},
    },
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.5}},
    "seed": SEED,
}


def run_clients(
    url: str, tokens: dict[str, str], sid: str, jobs: dict[str, dict[str, Any]], state: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def one(name: str) -> None:
        with ApiClient(url, tokens[name]) as api:
            runtime = ClientRuntime(
                api,
                sid,
                name,
                poll_wait=1.0,
                state_dir=state,
                on_event=lambda _: None,
                **jobs[name],
            )
            try:
                results[name] = runtime.run()
            except Exception as exc:  # reported to the test thread
                results[name] = exc

    threads = [threading.Thread(target=one, args=(name,), daemon=True) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.fixture
def tokens(thread_server: ThreadServer, scoped_tokens: ScopedTokens) -> dict[str, str]:
    url, admin = thread_server.url, thread_server.token
    found = {"analyst": scoped_tokens.analyst(url, admin)}
    for name in NAMES:
        found[name] = scoped_tokens.client(url, admin, name)
    return found


def central(
    merged: dict[str, dict[str, np.ndarray]],
) -> tuple[SplitNetwork, list[dict[str, float]]]:
    """The same split network trained in one process on the merged (aligned) rows."""
    model_config = SplitnnModelConfig.model_validate({**MODEL_CONFIG, "prl_session_id": "0" * 10})
    data_config = SplitnnDataConfig.model_validate(DATA_CONFIG)
    network = SplitNetwork(model_config, data_config)
    assert model_config.optimizer is not None
    optimizer = build_optimizer(model_config.optimizer, network.parameters())
    loss_fn = label_loss(model_config.task)
    train, test = merged["train"], merged["test"]
    history = []
    for server_round in range(1, ROUNDS + 1):
        for idx in batches(len(train["y"]), BATCH, SEED, server_round):
            inputs = {name: torch.from_numpy(train[name][idx]) for name in NAMES}
            loss = loss_fn(network(inputs), torch.from_numpy(train["y"][idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            outputs = network({name: torch.from_numpy(test[name]) for name in NAMES}).numpy()
        history.append(task_metrics(model_config.task, outputs, test["y"]))
    return network, history


def merged_rows(
    frames: dict[str, dict[str, pd.DataFrame]], positions: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
    """The aligned rows of both parties side by side (checked against pandas' merge)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for table in ("train", "test"):
        passive = frames[PASSIVE][table].iloc[positions[PASSIVE][table]].reset_index(drop=True)
        active = frames[ACTIVE][table].iloc[positions[ACTIVE][table]].reset_index(drop=True)
        assert passive["id"].tolist() == active["id"].tolist()
        pooled = frames[PASSIVE][table].merge(frames[ACTIVE][table], on="id")
        assert sorted(pooled["id"]) == sorted(active["id"])
        out[table] = {
            PASSIVE: passive[DATA_CONFIG[PASSIVE]["predictors"]].to_numpy(np.float32, copy=True),
            ACTIVE: active[DATA_CONFIG[ACTIVE]["predictors"]].to_numpy(np.float32, copy=True),
            "y": active["y"].to_numpy(np.int64, copy=True),
            "id": active["id"].to_numpy(),
        }
    return out


@pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)
def test_prl_train_predict_equal_the_central_network_and_the_server_holds_no_embedding(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    frames = silo_tables(tmp_path)
    state = tmp_path / "state"
    table = {n: {t: str(tmp_path / f"{n}-{t}.csv") for t in ("train", "test")} for n in NAMES}
    url = thread_server.url
    with fedsilo.connect(url, tokens["analyst"]) as analyst:
        prl = analyst.create_prl_session(
            name="PRL", data_config={"clients": {n: {"id_columns": ["id"]} for n in NAMES}}
        ).start()
        jobs = {n: {"tables": table[n]} for n in NAMES}
        assert run_clients(url, tokens, prl.id, jobs, state) == dict.fromkeys(
            NAMES, SessionStatus.completed
        )
        alignment = prl.alignment()
        positions = {n: {t: alignment.positions(n, t) for t in ("train", "test")} for n in NAMES}
        merged = merged_rows(frames, positions)

        vfl = analyst.create_vfl_session(
            name="VFL train",
            description="split by columns and rows",
            prl_session_id=prl.id,
            vfl_mode="train",
            min_num_clients=2,
            num_rounds=ROUNDS,
            package_name="ffnet",
            data_config=DATA_CONFIG,
            model_config=MODEL_CONFIG,
        ).start()
        assert vfl.refresh().package_name == "splitnn"
        storage = {n: tmp_path / f"storage-{n}" for n in NAMES}
        jobs = {
            n: {
                "tables": table[n],
                "batch_size": BATCH,
                "package_options": {"storage_path": str(storage[n])},
            }
            for n in NAMES
        }
        results = run_clients(url, tokens, vfl.id, jobs, state)
        assert results == dict.fromkeys(NAMES, SessionStatus.completed), (
            results,
            vfl.refresh().failure_reason,
        )
        shape = vfl.metrics().as_dict()
        network, history = central(merged)
        federated = [m["loss"] for m in shape["federated_metrics"]]
        assert len(federated) == ROUNDS
        np.testing.assert_allclose(federated, [h["test_loss"] for h in history], atol=1e-4)
        last = shape["client_metrics"][-1]
        (reported,) = last.values()
        assert reported["test_num_examples"] == len(merged["test"]["y"])
        assert abs(reported["test_accuracy"] - history[-1]["test_accuracy"]) <= 0.01
        assert reported["test_accuracy"] > 0.9  # the network learned the task
        np.testing.assert_allclose(reported["test_roc_auc"], history[-1]["test_roc_auc"], atol=1e-3)

        # Each party holds its own part, as trained centrally; the server none of it.
        parts = {n: PartStore.for_training(storage[n], vfl.id, n).load() for n in NAMES}
        assert parts[PASSIVE]["round"] == ROUNDS and "label_model" not in parts[PASSIVE]
        for name in NAMES:
            for key, value in network.feature_models[name].state_dict().items():
                torch.testing.assert_close(
                    parts[name]["feature_model"][key], value, atol=1e-4, rtol=0
                )
        for key, value in network.label_model.state_dict().items():
            torch.testing.assert_close(parts[ACTIVE]["label_model"][key], value, atol=1e-4, rtol=0)

        predictions = tmp_path / "predictions" / "active.csv"
        predict = analyst.create_vfl_session(
            name="VFL predict",
            prl_session_id=prl.id,
            training_session_id=vfl.id,
            vfl_mode="predict",
            data_config=DATA_CONFIG,
        ).start()
        jobs = {
            PASSIVE: {
                "tables": {"test": table[PASSIVE]["test"]},
                "package_options": {"storage_path": "passive_no_path"},
            },
            ACTIVE: {
                "tables": {"test": table[ACTIVE]["test"]},
                "package_options": {"storage_path": str(predictions)},
            },
        }
        results = run_clients(url, tokens, predict.id, jobs, state)
        assert results == dict.fromkeys(NAMES, SessionStatus.completed), (
            results,
            predict.refresh().failure_reason,
        )
    assert not Path("passive_no_path").exists()
    written = pd.read_csv(predictions)
    test = merged["test"]
    assert written["id"].tolist() == test["id"].tolist()
    with torch.no_grad():
        logits = network({n: torch.from_numpy(test[n]) for n in NAMES})
        expected = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(written[["probability_0", "probability_1"]], expected, atol=1e-5)
    np.testing.assert_array_equal(written["prediction"], expected.argmax(axis=1))

    # The server relayed sealed bytes and kept none: no embedding of a test row (what the
    # passive party sent to predict), no weight of any part, in anything it stored.
    with torch.no_grad():
        embedding = network.feature_models[PASSIVE](torch.from_numpy(test[PASSIVE][:4])).numpy()
    secrets = [embedding.tobytes()[:32]]
    for name in NAMES:
        for value in parts[name]["feature_model"].values():
            secrets.append(value.numpy().tobytes()[:32])
    stored = thread_server.stored()
    assert any(b"round 4" in content for content in stored.values())  # the scan sees logs
    for where, content in stored.items():
        for secret in secrets:
            assert secret not in content, where
    assert thread_server.app_state.relay.held() == (0, 0)


def train_central_rounds(merged: dict[str, dict[str, np.ndarray]], rounds: int) -> list[float]:
    global ROUNDS
    kept, ROUNDS = ROUNDS, rounds
    try:
        return [h["test_loss"] for h in central(merged)[1]]
    finally:
        ROUNDS = kept


@pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)
def test_a_server_restart_mid_training_resumes_from_the_last_completed_round(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    # The shared conftest's helpers, from the module the fixture's class lives in.
    shared = sys.modules[type(thread_server).__module__]
    serve_in_thread, stop_thread_server = shared.serve_in_thread, shared.stop_thread_server

    frames = silo_tables(tmp_path)
    state = tmp_path / "state"
    table = {n: {t: str(tmp_path / f"{n}-{t}.csv") for t in ("train", "test")} for n in NAMES}
    url = thread_server.url
    rounds = 8
    with fedsilo.connect(url, tokens["analyst"]) as analyst:
        prl = analyst.create_prl_session(
            name="PRL", data_config={"clients": {n: {"id_columns": ["id"]} for n in NAMES}}
        ).start()
        run_clients(url, tokens, prl.id, {n: {"tables": table[n]} for n in NAMES}, state)
        alignment = prl.alignment()
        positions = {n: {t: alignment.positions(n, t) for t in ("train", "test")} for n in NAMES}
        vfl = analyst.create_vfl_session(
            name="VFL train",
            prl_session_id=prl.id,
            num_rounds=rounds,
            data_config=DATA_CONFIG,
            model_config=MODEL_CONFIG,
        ).start()
        sid = vfl.id
    storage = {n: tmp_path / f"storage-{n}" for n in NAMES}
    jobs = {
        n: {
            "tables": table[n],
            "batch_size": BATCH,
            "package_options": {"storage_path": str(storage[n])},
        }
        for n in NAMES
    }
    results: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: results.update(run_clients(url, tokens, sid, jobs, state)), daemon=True
    )
    runner.start()
    with fedsilo.connect(url, tokens["analyst"]) as analyst:
        session = analyst.fl_session(sid)
        deadline = time.monotonic() + 60
        while session.refresh().round < 2:
            assert time.monotonic() < deadline, session.refresh()
            time.sleep(0.05)
    stop_thread_server(thread_server)
    restarted = serve_in_thread(thread_server.settings)
    try:
        runner.join(timeout=120)
        assert results == dict.fromkeys(NAMES, SessionStatus.completed), results
        with fedsilo.connect(url, tokens["analyst"]) as analyst:
            session = analyst.fl_session(sid)
            logs = " ".join(line.message for line in session.logs())
            losses = [m["loss"] for m in session.metrics().as_dict()["federated_metrics"]]
        assert "resuming from the checkpoint of round" in logs
        assert len(losses) == rounds
        expected = train_central_rounds(merged_rows(frames, positions), rounds)
        np.testing.assert_allclose(losses, expected, atol=1e-4)
    finally:
        stop_thread_server(restarted)


@pytest.mark.parametrize("server_settings", ["sqlite"], indirect=True)
def test_a_party_bringing_another_table_than_it_linked_fails_the_session_naming_it(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    frames = silo_tables(tmp_path)
    state = tmp_path / "state"
    table = {n: {t: str(tmp_path / f"{n}-{t}.csv") for t in ("train", "test")} for n in NAMES}
    url = thread_server.url
    with fedsilo.connect(url, tokens["analyst"]) as analyst:
        prl = analyst.create_prl_session(
            name="PRL", data_config={"clients": {n: {"id_columns": ["id"]} for n in NAMES}}
        ).start()
        run_clients(url, tokens, prl.id, {n: {"tables": table[n]} for n in NAMES}, state)
        reordered = tmp_path / "active-train-reordered.csv"
        frames[ACTIVE]["train"].iloc[::-1].to_csv(reordered, index=False)
        vfl = analyst.create_vfl_session(
            name="VFL", prl_session_id=prl.id, data_config=DATA_CONFIG, model_config=MODEL_CONFIG
        ).start()
        jobs = {
            PASSIVE: {"tables": table[PASSIVE]},
            ACTIVE: {"tables": {"train": str(reordered), "test": table[ACTIVE]["test"]}},
        }
        results = run_clients(url, tokens, vfl.id, jobs, state)
        assert results == dict.fromkeys(NAMES, SessionStatus.failed)
        reason = vfl.refresh().failure_reason or ""
        assert "client 'active_client' refused" in reason
        assert "differ from those linked in the PRL session" in reason
        # A session naming a PRL session that does not exist (or that its creator may not
        # read) is refused when it is created, naming the field.
        with pytest.raises(NotFoundError, match="prl_session_id: session 0123456789 not found"):
            analyst.create_vfl_session(
                name="VFL", prl_session_id="0123456789", data_config=DATA_CONFIG,
                model_config=MODEL_CONFIG,
            )  # fmt: skip
