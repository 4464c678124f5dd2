"""ffnet under differential privacy: the client's bookkeeping, and a real session end to end.

The end-to-end test runs the seed tutorial's FFNet model_config *with* its
``differential_privacy_params`` through the real server (``thread_server``) and two real
:class:`ClientRuntime` clients in threads, as tests/unit/server/test_engine.py does.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from fedsilo.client.runtime import ClientRuntime
from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import get_package
from fedsilo.http import ApiClient
from fedsilo.packages.ffnet import FFNetExecutor
from fedsilo.packages.ffnet.model import build_module, module_arrays
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.wire import SessionStatus, decode_frame

torch.set_num_threads(1)

# The seed's FFNet tutorial model_config, verbatim, DP params included.
SEED_FFNET: dict[str, Any] = {
    "experiment_name": "test_synthetic_tabular",
    "experiment_description": "test_synthetic_tabular",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "balance_train_datasets": False,
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 7},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
DATA_CONFIG = {"predictors": FEATURES, "target": "y"}
PACKAGE = get_package("ffnet")
ROWS = 1000


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    frames = make_frames(seed=0)
    return {
        "silo0": frames["train_silo0"].iloc[:ROWS],
        "silo1": frames["train_silo1"].iloc[: ROWS + 500],
        "test": frames["test"].iloc[:1000],
    }


def executor(
    frames: dict[str, pd.DataFrame], config: dict[str, Any] | None = None, test: bool = True
) -> FFNetExecutor:
    mc, dc = PACKAGE.parse_configs(config or SEED_FFNET, DATA_CONFIG)
    return FFNetExecutor(
        mc, dc, LocalDataset(frames["silo0"], frames["test"] if test else None, batch_size=100)
    )


def test_each_round_reports_its_spending_and_never_the_training_loss(
    frames: dict[str, pd.DataFrame],
) -> None:
    silo = executor(frames)
    weights = module_arrays(build_module(silo.model_config))
    spent = []
    for server_round in (1, 2, 3):
        reply, weights = silo.handle("fit", {"round": server_round, "num_rounds": 3}, weights)
        assert "train_loss" not in reply
        assert reply["num_examples"] == ROWS and reply["delta"] == 1e-5
        assert reply["epsilon_budget"] == 4
        spent.append(reply["epsilon_spent"])
    assert spent[0] < spent[1] < spent[2] <= 4.0
    assert spent[2] >= 0.95 * 4.0


def fit_round(
    ctx: InProcessContext, server_round: int, weights: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Ask the one participant of ``ctx`` for a private ``fit`` of ``server_round``."""
    meta = {"round": server_round, "num_rounds": 2}
    (reply,) = ctx.ask(ctx.joined, "fit", weights, meta, round=server_round)
    return dict(reply.meta), dict(reply.arrays)


def test_a_repeated_round_is_answered_with_the_same_release(
    frames: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    # Through the client's own mod chain (release-once outermost), as a real client runs it.
    silo = executor(frames)
    ctx = InProcessContext({"silo0": silo}, 2, state_dir=tmp_path)
    start = module_arrays(build_module(silo.model_config))
    first_meta, first = fit_round(ctx, 1, start)
    # A server that restarted re-asks round 1 with the same weights: the same bytes again,
    # and the executor (whose DP-SGD noise is fresh each time) does not run.
    again_meta, again = fit_round(ctx, 1, start)
    assert again_meta == first_meta
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])
    assert ctx.replayed == [("silo0", "fit", 1)]
    assert ctx.tasks["fit"] == 2

    # The client restarted too (a fresh executor, the same state dir): still the same reply.
    restarted = InProcessContext({"silo0": executor(frames)}, 2, state_dir=tmp_path)
    restarted_meta, restarted_arrays = fit_round(restarted, 1, start)
    assert restarted_meta == first_meta and restarted.replayed == [("silo0", "fit", 1)]
    for name in first:
        np.testing.assert_array_equal(restarted_arrays[name], first[name])

    # A different question for a released round would be a second release: refused.
    other = {k: v + 1.0 for k, v in start.items()}
    with pytest.raises(TaskError, match="Round 1 was released before"):
        fit_round(ctx, 1, other)
    fit_round(ctx, 2, first)
    with pytest.raises(TaskError, match=r"Round 1 was released before \(this client is at round 2"):
        fit_round(ctx, 1, start)  # the store keeps the last fit reply: round 2's
    assert ctx.replayed == [("silo0", "fit", 1)]


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"round": 1}, "must carry 'num_rounds'"),
        ({"round": 3, "num_rounds": 2}, r"trains rounds 1\.\.2 only"),
        ({"round": 0, "num_rounds": 2}, "'round' must be an integer >= 1"),
        ({"round": 1, "num_rounds": 2, "local_epochs": 2}, "local_epochs = 1 epoch"),
    ],
)
def test_tasks_outside_the_plan_are_refused(
    frames: dict[str, pd.DataFrame], meta: dict[str, Any], message: str
) -> None:
    silo = executor(frames)
    with pytest.raises(TaskError, match=message):
        silo.handle("fit", meta, module_arrays(build_module(silo.model_config)))


def test_the_round_count_cannot_change_mid_session(frames: dict[str, pd.DataFrame]) -> None:
    silo = executor(frames)
    weights = module_arrays(build_module(silo.model_config))
    silo.handle("fit", {"round": 1, "num_rounds": 2}, weights)
    with pytest.raises(TaskError, match="planned for 2 rounds; this task announces 1"):
        silo.handle("fit", {"round": 2, "num_rounds": 1}, weights)


def test_a_delta_too_large_for_the_silo_is_refused_before_joining(
    frames: dict[str, pd.DataFrame],
) -> None:
    config = copy.deepcopy(SEED_FFNET)
    config["differential_privacy_params"]["delta"] = 0.01  # > 1 / 1000 rows
    with pytest.raises(ConfigError, match=r"'delta'.*1000 training rows"):
        executor(frames, config)


def test_without_a_test_set_a_private_client_reports_no_metrics(
    frames: dict[str, pd.DataFrame],
) -> None:
    silo = executor(frames, test=False)
    metrics, arrays = silo.handle(
        "evaluate", {"round": 1}, module_arrays(build_module(silo.model_config))
    )
    assert metrics == {"test_num_examples": 0, "evaluated_on": "none"}
    assert arrays == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"balance_train_datasets": True},
            "balance_train_datasets cannot be combined with differential_privacy_params",
        ),
        (
            {
                "differential_privacy_params": {
                    "epsilon": 1,
                    "max_grad_norm": 7,
                    "max_hessian_norm": 2,
                }
            },
            "differential_privacy_params.max_hessian_norm: max_hessian_norm applies to the "
            "glm newton solver only",
        ),
    ],
)
def test_dp_combinations_ffnet_cannot_honour_are_refused(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        PACKAGE.parse_model_config(SEED_FFNET | change)


# ---------------------------------------------------------------- end to end


@pytest.fixture
def api(thread_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=thread_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {thread_server.token}"},
        timeout=30,
    ) as client:
        yield client


def run_client(
    server: Any, sid: str, name: str, train: str, test: str, results: dict[str, Any]
) -> None:
    api = ApiClient(server.url, server.token)
    runtime = ClientRuntime(api, sid, name, train, test, 100, poll_wait=5, on_event=lambda _: None)
    try:
        results[name] = runtime.run()
    except Exception as exc:  # reported to the test thread
        results[name] = exc
    finally:
        api.close()


def test_the_seed_ffnet_config_with_dp_runs_a_session_end_to_end(
    thread_server: Any, api: httpx.Client, frames: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    paths = {}
    for name, frame in frames.items():
        paths[name] = str(tmp_path / f"{name}.csv")
        frame.to_csv(paths[name], index=False)
    body = {
        "name": "dp",
        "package_name": "ffnet",
        "min_num_clients": 2,
        "num_rounds": 3,
        "model_config": SEED_FFNET,
        "data_config": DATA_CONFIG,
    }
    response = api.post("/sessions", json=body)
    assert response.status_code == 201, response.text
    sid = response.json()["id"]
    assert api.post(f"/sessions/{sid}/start").status_code == 200
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(
            target=run_client,
            args=(thread_server, sid, name, paths[name], paths["test"], results),
            daemon=True,
        )
        for name in ("silo0", "silo1")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {"silo0": SessionStatus.completed, "silo1": SessionStatus.completed}

    metrics = api.get(f"/sessions/{sid}/metrics").json()
    per_round = [
        {name: m["epsilon_spent"] for name, m in round_metrics.items()}
        for round_metrics in metrics["client_metrics"]
    ]
    assert len(per_round) == 3
    for name in ("silo0", "silo1"):
        spent = [r[name] for r in per_round]
        assert spent[0] < spent[1] < spent[2] <= 4.0
    # Unequal silos (1000 and 1500 rows) sample at different rates: each spends its own.
    assert per_round[-1]["silo0"] != per_round[-1]["silo1"]
    assert all("train_loss" not in m for r in metrics["client_metrics"] for m in r.values())
    assert metrics["federated_metrics"][-1]["accuracy"] > 0.65  # majority is ~0.5

    _, header = decode_frame(api.get(f"/sessions/{sid}/model").content)
    privacy = header["meta"]["privacy"]
    assert privacy["epsilon"] == 4 and privacy["max_grad_norm"] == 7
    assert privacy["epsilon_spent"] == per_round[-1]
