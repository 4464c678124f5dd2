"""ffnet sessions with non-default strategies through the real engine and real clients.

The server runs in a thread (``thread_server``); two :class:`ClientRuntime` clients in threads
train on small slices of the tutorial data. The model the server saves must equal the same
rounds replayed in-process with the executors and the strategy called directly, and differ
from what FedAvg gives -- so the strategy (and FedProx's ``proximal_mu``, which reaches the
clients only through the fit task's meta) really took part.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.federation import Checkpoint, Participant, Reply, SessionInfo, get_package
from fedsilo.http import ApiClient
from fedsilo.packages.ffnet import FFNetExecutor, run
from fedsilo.packages.ffnet.model import build_module, module_arrays
from fedsilo.strategies import get_strategy
from fedsilo.wire import Arrays, DatasetSummary, SessionStatus, decode_frame, encode_frame

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
    for rnd in range(1, ROUNDS + 1):
        meta = {"round": rnd, "local_epochs": mc.local_epochs, **strategy.fit_config(rnd)}
        replies = [
            Reply(Participant(name, name, summary), *executor.handle("fit", meta, weights))
            for name, executor in executors.items()
        ]
        weights = strategy.aggregate_fit(rnd, weights, replies)
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


class Crash(Exception):
    """Stands in for the server dying right after a checkpoint."""


class InProcessContext:
    """A SessionContext running tasks on local executors; checkpoints go through the codec."""

    def __init__(
        self,
        executors: Mapping[str, FFNetExecutor],
        checkpoint: Checkpoint | None = None,
        crash_after: int | None = None,
    ) -> None:
        self.executors = executors
        self.session = SessionInfo("0123456789", "t", "ffnet", 2, ROUNDS, {}, {})
        self.participants = [
            Participant(
                id=name,
                client_name=name,
                dataset=DatasetSummary(train_rows=0, test_rows=0, columns=[]),
            )
            for name in executors
        ]
        self.last_checkpoint = checkpoint
        self.crash_after = crash_after
        self.saved: dict[str, np.ndarray] | None = None
        self.fit_rounds: list[int] = []

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
        return list(self.participants)

    def ask(
        self,
        participants: Sequence[Participant],
        kind: str,
        arrays: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> list[Reply]:
        if kind == "fit":
            self.fit_rounds.append(int((meta or {})["round"]))
        return [
            Reply(
                p, *self.executors[p.client_name].handle(kind, dict(meta or {}), dict(arrays or {}))
            )
            for p in participants
        ]

    def record_round(self, rnd: int, federated: Any, per_client: Any) -> None:
        pass

    def checkpoint(self, rnd: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        stored, header = decode_frame(encode_frame(dict(arrays), {"meta": dict(meta)}))
        self.last_checkpoint = Checkpoint(round=rnd, arrays=stored, meta=header["meta"])
        if rnd == self.crash_after:
            raise Crash

    def restore(self) -> Checkpoint | None:
        return self.last_checkpoint

    def save_model(self, arrays: Mapping[str, Any], meta: Mapping[str, Any], round: int) -> None:
        self.saved = {k: np.asarray(v) for k, v in arrays.items()}

    def log(self, message: str) -> None:
        pass


def test_a_resumed_session_continues_the_strategy_state_bit_for_bit(
    silos: dict[str, tuple[str, str]],
) -> None:
    config = model_config({"name": "FedYogi", "params": {"eta": 0.05}})
    package = get_package("ffnet")
    mc, dc = package.parse_configs(config, {"predictors": FEATURES, "target": "y"})

    straight = InProcessContext(executors_for(config, silos))
    run(straight, mc, dc)
    crashed = InProcessContext(executors_for(config, silos), crash_after=2)
    with pytest.raises(Crash):
        run(crashed, mc, dc)
    assert crashed.last_checkpoint is not None
    state = {k for k in crashed.last_checkpoint.arrays if k.startswith("strategy/")}
    assert state == {
        f"strategy/{slot}/{name}" for slot in ("m", "v") for name in expected_names(mc)
    }
    resumed = InProcessContext(executors_for(config, silos), crashed.last_checkpoint)
    run(resumed, mc, dc)

    assert resumed.fit_rounds == [3]  # only the missing round ran
    assert straight.saved is not None and resumed.saved is not None
    for name, value in straight.saved.items():
        np.testing.assert_array_equal(resumed.saved[name], value, err_msg=name)
    # Without its moments the strategy would have continued differently.
    amnesic = Checkpoint(
        round=2,
        arrays={k: v for k, v in crashed.last_checkpoint.arrays.items() if k not in state},
        meta=crashed.last_checkpoint.meta,
    )
    forgetful = InProcessContext(executors_for(config, silos), amnesic)
    run(forgetful, mc, dc)
    assert forgetful.saved is not None
    assert not np.array_equal(forgetful.saved["output.weight"], straight.saved["output.weight"])


def expected_names(mc: Any) -> list[str]:
    return list(module_arrays(build_module(mc)))
