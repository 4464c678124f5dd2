"""ffnet sessions with non-default strategies through the real engine and real clients.

The server runs in a thread (``thread_server``); two :class:`ClientRuntime` clients in threads
train on small slices of the tutorial data. The model the server saves must equal the same
rounds replayed in-process with the executors and the strategy called directly, and differ
from what FedAvg gives -- so the strategy (and FedProx's ``proximal_mu``, which reaches the
clients only through the fit task's meta) really took part.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.federation import Checkpoint, Participant, Reply, get_package
from fedsilo.http import ApiClient
from fedsilo.packages.ffnet import FFNetExecutor, run
from fedsilo.packages.ffnet.model import build_module, module_arrays
from fedsilo.runners.inprocess import InProcessContext, SimulationStopped
from fedsilo.strategies import get_strategy
from fedsilo.wire import Arrays, DatasetSummary, SessionStatus

torch.set_num_threads(1)
ROUNDS, BATCH = 3, 64
CLIENTS = ["silo-a", "silo-b"]


def model_config(strategy: dict[str, Any]) -> dict[str, Any]:
    return {
        "strategy": strategy,
        "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6], "output_size": 2}},
        "ml_task": {"type": "classification"},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
        "seed": 5,
    }


@pytest.fixture(scope="module")
def silos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Per client: train and test parquet paths (600 / 200 rows, unequal train sizes)."""
    frames = make_frames(seed=1)
    folder = tmp_path_factory.mktemp("silos")
    paths = {}
    for i, (name, rows) in enumerate(zip(CLIENTS, (600, 250), strict=True)):
        train = folder / f"{name}-train.parquet"
        test = folder / f"{name}-test.parquet"
        frames[f"train_silo{i}"].iloc[:rows].to_parquet(train)
        frames["test"].iloc[200 * i : 200 * (i + 1)].to_parquet(test)
        paths[name] = (str(train), str(test))
    return paths


def run_client(
    server: Any, sid: str, name: str, paths: tuple[str, str], out: dict[str, Any]
) -> None:
    api = ApiClient(server.url, server.token)
    runtime = ClientRuntime(api, sid, name, *paths, BATCH, poll_wait=5, on_event=lambda _: None)
    try:
        out[name] = runtime.run()
    except Exception as exc:  # reported to the test thread
        out[name] = exc
    finally:
        api.close()


def executors_for(
    config: dict[str, Any], silos: dict[str, tuple[str, str]]
) -> dict[str, FFNetExecutor]:
    package = get_package("ffnet")
    mc, dc = package.parse_configs(config, {"predictors": FEATURES, "target": "y"})
    return {
        name: FFNetExecutor(
            mc, dc, LocalDataset(pd.read_parquet(train), pd.read_parquet(test), BATCH)
        )
        for name, (train, test) in silos.items()
    }


def replay(config: dict[str, Any], silos: dict[str, tuple[str, str]]) -> Arrays:
    """The session's rounds in-process: executors and strategy called directly."""
    package = get_package("ffnet")
    mc = package.parse_model_config(config)
    executors = executors_for(config, silos)
    strategy = get_strategy(mc.strategy.name, mc.strategy.params)
    weights = strategy.initial_arrays(module_arrays(build_module(mc)))
    summary = DatasetSummary(train_rows=0, test_rows=0, columns=[])
    for server_round in range(1, ROUNDS + 1):
        meta = {
            "round": server_round,
            "local_epochs": mc.local_epochs,
            **strategy.fit_config(server_round),
        }
        replies = [
            Reply(Participant(name, name, summary), *executor.handle("fit", meta, weights))
            for name, executor in executors.items()
        ]
        weights = strategy.aggregate_fit(server_round, weights, replies)
    return weights


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "FedAdam", "params": {"eta": 0.05}},
        {"name": "FedProx", "params": {"proximal_mu": 2.0}},
    ],
    ids=["FedAdam", "FedProx"],
)
def test_an_ffnet_session_trains_with_the_strategy_end_to_end(
    thread_server: Any, silos: dict[str, tuple[str, str]], strategy: dict[str, Any]
) -> None:
    config = model_config(strategy)
    with fedsilo.connect(thread_server.url, thread_server.token) as client:
        session = client.create_fl_session(
            name=f"{strategy['name']} session",
            min_num_clients=2,
            num_rounds=ROUNDS,
            package_name="ffnet",
            model_config=config,
            data_config={"predictors": FEATURES, "target": "y"},
        ).start()
        results: dict[str, Any] = {}
        threads = [
            threading.Thread(
                target=run_client,
                args=(thread_server, session.id, name, silos[name], results),
                daemon=True,
            )
            for name in CLIENTS
        ]
        for thread in threads:
            thread.start()
        session.wait(timeout=120, progress=False)
        for thread in threads:
            thread.join(timeout=30)
        assert results == dict.fromkeys(CLIENTS, SessionStatus.completed)

        metrics = session.metrics().as_dict()
        assert len(metrics["federated_metrics"]) == ROUNDS
        assert all(set(CLIENTS) == set(r) for r in metrics["client_metrics"])
        assert 0.0 < metrics["federated_metrics"][-1]["loss"] < 0.75
        served = session.model().arrays

    expected = replay(config, silos)
    fedavg = replay(model_config({"name": "FedAvg", "params": {}}), silos)
    assert sorted(served) == sorted(expected)
    gap_to_fedavg = 0.0
    for key in expected:
        # Float32 weights; only the order of the float64 sums may differ from the replay.
        np.testing.assert_allclose(served[key], expected[key], rtol=0, atol=1e-5, err_msg=key)
        gap_to_fedavg = max(gap_to_fedavg, float(np.abs(served[key] - fedavg[key]).max()))
    assert gap_to_fedavg > 1e-3


# ------------------------------------------------------------------ resume


def fit_rounds(ctx: InProcessContext) -> list[int]:
    return [server_round for kind, server_round, _ in ctx.asked if kind == "fit"]


def test_a_resumed_session_continues_the_strategy_state_bit_for_bit(
    silos: dict[str, tuple[str, str]],
) -> None:
    config = model_config({"name": "FedYogi", "params": {"eta": 0.05}})
    package = get_package("ffnet")
    mc, dc = package.parse_configs(config, {"predictors": FEATURES, "target": "y"})

    straight = InProcessContext(executors_for(config, silos), ROUNDS)
    run(straight, mc, dc)
    crashed = InProcessContext(executors_for(config, silos), ROUNDS, stop_after=2)
    with pytest.raises(SimulationStopped):
        run(crashed, mc, dc)
    assert crashed.last_checkpoint is not None
    state = {k for k in crashed.last_checkpoint.arrays if k.startswith("strategy/")}
    assert state == {
        f"strategy/{slot}/{name}" for slot in ("m", "v") for name in expected_names(mc)
    }
    resumed = InProcessContext(
        executors_for(config, silos), ROUNDS, checkpoint=crashed.last_checkpoint
    )
    run(resumed, mc, dc)

    assert fit_rounds(resumed) == [3]  # only the missing round ran
    assert straight.saved is not None and resumed.saved is not None
    for name, value in straight.saved[0].items():
        np.testing.assert_array_equal(resumed.saved[0][name], value, err_msg=name)
    # Without its moments the strategy would have continued differently.
    amnesic = Checkpoint(
        round=2,
        arrays={k: v for k, v in crashed.last_checkpoint.arrays.items() if k not in state},
        meta=crashed.last_checkpoint.meta,
    )
    forgetful = InProcessContext(executors_for(config, silos), ROUNDS, checkpoint=amnesic)
    run(forgetful, mc, dc)
    assert forgetful.saved is not None
    assert not np.array_equal(
        forgetful.saved[0]["output.weight"], straight.saved[0]["output.weight"]
    )


def expected_names(mc: Any) -> list[str]:
    return list(module_arrays(build_module(mc)))
