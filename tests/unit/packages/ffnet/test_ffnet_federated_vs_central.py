"""Federated ffnet against the same network trained on pooled data, and the server workflow.

The first test is a numerical check of the package (executors and FedAvg called directly, no
engine): on the tutorial data, 5 FedAvg rounds over two IID silos must land within 0.02
accuracy of 5 centralized epochs, and well above what a broken model reaches. The others run
the server workflow against an in-process context that passes every message through the
wire codec, as the engine does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import r2_score

from fedsilo.data.dataset import LocalDataset
from fedsilo.data.synth import FEATURES, make_frames
from fedsilo.federation import Participant, Reply, get_package
from fedsilo.packages.ffnet import FFNetExecutor, FFNetModel, evaluate, run, train_central
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig
from fedsilo.packages.ffnet.model import build_module, module_arrays
from fedsilo.packages.ffnet.server import model_template
from fedsilo.runners.inprocess import InProcessContext, SimulationStopped
from fedsilo.strategies import get_strategy
from fedsilo.wire import (
    DatasetSummary,
)

torch.set_num_threads(1)

# The seed tutorial's config, without differential_privacy_params (not supported yet).
TUTORIAL: dict[str, Any] = {
    "experiment_name": "test_synthetic_tabular",
    "experiment_description": "test_synthetic_tabular",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "balance_train_datasets": False,
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
PACKAGE = get_package("ffnet")
MC: FFNetModelConfig = PACKAGE.parse_model_config(TUTORIAL)
DC: FFNetDataConfig = PACKAGE.parse_data_config({"predictors": FEATURES, "target": "y"})
SUMMARY = DatasetSummary(train_rows=0, test_rows=0, columns=[])


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return make_frames(seed=0)


def test_federated_accuracy_is_within_two_points_of_central(
    frames: dict[str, pd.DataFrame],
) -> None:
    rounds, batch_size = 5, 1024
    silos = [
        FFNetExecutor(MC, DC, LocalDataset(frames[f"train_silo{i}"], frames["test"], batch_size))
        for i in range(2)
    ]
    people = [Participant(id=f"p{i}", client_name=f"silo{i}", dataset=SUMMARY) for i in range(2)]
    strategy = get_strategy("FedAvg", {})
    weights = module_arrays(build_module(MC))
    for server_round in range(1, rounds + 1):
        replies = [
            Reply(p, *silo.handle("fit", {"round": server_round}, weights))
            for p, silo in zip(people, silos, strict=True)
        ]
        weights = strategy.aggregate_fit(server_round, weights, replies)

    federated = evaluate(FFNetModel(MC, DC, weights, {}), frames["test"])
    central = evaluate(
        train_central(MC, DC, frames["train_centralized"], rounds, batch_size), frames["test"]
    )

    # The clients' own evaluate reports the same numbers as the baseline's evaluate.
    client_view = silos[0].handle("evaluate", {"round": rounds}, weights)[0]
    for key, value in federated.items():
        assert client_view[key] == pytest.approx(value, abs=1e-12)
    rate = frames["test"]["y"].mean()
    majority = max(rate, 1 - rate)
    assert majority < 0.52
    # A constant or broken model sits at the majority rate. Measured: accuracy federated 0.815,
    # central 0.825; loss 0.432 and 0.394. FedAvg over two silos makes half the sequential
    # SGD steps of central training, so it trails slightly (see fedsilo.data.synth).
    assert federated["test_accuracy"] > 0.75
    assert abs(federated["test_accuracy"] - central["test_accuracy"]) <= 0.02, (federated, central)
    assert federated["test_loss"] < 0.5


# --------------------------------------------------------------------- workflow


def small_silos(
    frames: dict[str, pd.DataFrame], mc: FFNetModelConfig, dc: FFNetDataConfig
) -> dict[str, FFNetExecutor]:
    # Unequal test sets, so weighting by test_num_examples is visible.
    train, test = frames["train_silo0"], frames["test"]
    return {
        "north": FFNetExecutor(mc, dc, LocalDataset(train.iloc[:3000], test.iloc[:1500], 256)),
        "south": FFNetExecutor(
            mc, dc, LocalDataset(train.iloc[3000:5000], test.iloc[1500:2000], 256)
        ),
    }


def test_workflow_records_weighted_metrics_and_saves_the_best_round(
    frames: dict[str, pd.DataFrame],
) -> None:
    ctx = InProcessContext(small_silos(frames, MC, DC), num_rounds=3)
    run(ctx, MC, DC)

    # The server builds no network: one client answers "init" with the seeded model.
    assert ctx.asked[0] == ("init", 0, ["north"])
    # Rounds 1 and 2 are evaluated by the next round's fit (fedsilo.workflows.deferred).
    assert [kind for kind, _, _ in ctx.asked[1:]] == ["fit", "fit", "fit", "evaluate"]
    assert sorted(ctx.rounds) == [1, 2, 3]
    for federated, per_client in ctx.rounds.values():
        assert set(per_client) == {"north", "south"}
        assert set(federated) == {"loss", "accuracy", "roc_auc_client_mean", "train_loss"}
        north, south = per_client["north"], per_client["south"]
        assert (north["test_num_examples"], south["test_num_examples"]) == (1500, 500)
        assert federated["loss"] == pytest.approx(
            (1500 * north["test_loss"] + 500 * south["test_loss"]) / 2000
        )
        assert federated["accuracy"] == pytest.approx(
            (1500 * north["test_accuracy"] + 500 * south["test_accuracy"]) / 2000
        )
        assert {"test_loss", "test_accuracy", "test_roc_auc", "train_loss"} <= set(north)

    assert ctx.saved is not None
    arrays, meta, server_round = ctx.saved
    losses = {r: federated["loss"] for r, (federated, _) in ctx.rounds.items()}
    best = min(losses, key=losses.__getitem__)
    assert server_round == meta["round"] == best
    assert meta["federated_loss"] == pytest.approx(losses[best])
    assert meta["selected_by"] == "best loss (min)"
    best_global = {
        k.removeprefix("global/"): v
        for k, v in ctx.checkpoints[best].arrays.items()
        if k.startswith("global/")
    }
    assert set(arrays) == set(best_global)
    for name, value in arrays.items():
        np.testing.assert_array_equal(value, best_global[name])


def test_without_save_best_model_the_last_round_is_saved(frames: dict[str, pd.DataFrame]) -> None:
    mc = PACKAGE.parse_model_config(TUTORIAL | {"save_best_model": None})
    ctx = InProcessContext(small_silos(frames, mc, DC), num_rounds=2)
    run(ctx, mc, DC)
    assert ctx.saved is not None
    assert ctx.saved[2] == 2
    assert ctx.saved[1]["selected_by"] == "last round"


def test_a_resumed_session_ends_with_the_same_model(frames: dict[str, pd.DataFrame]) -> None:
    straight = InProcessContext(small_silos(frames, MC, DC), num_rounds=3)
    run(straight, MC, DC)

    crashed = InProcessContext(small_silos(frames, MC, DC), num_rounds=3, stop_after=2)
    with pytest.raises(SimulationStopped):
        run(crashed, MC, DC)
    assert crashed.saved is None
    resumed = InProcessContext(
        small_silos(frames, MC, DC), num_rounds=3, checkpoint=crashed.last_checkpoint
    )
    run(resumed, MC, DC)

    assert [server_round for _, server_round, _ in resumed.asked] == [
        3,
        3,
    ]  # only the missing round ran
    assert straight.saved is not None and resumed.saved is not None
    assert resumed.saved[1:] == straight.saved[1:]
    for name, value in straight.saved[0].items():
        np.testing.assert_array_equal(resumed.saved[0][name], value)


def test_regression_r2_is_pooled_exactly(frames: dict[str, pd.DataFrame]) -> None:
    raw = TUTORIAL | {
        "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6], "output_size": 1}},
        "ml_task": {"type": "regression", "params": {}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.01}},
        "save_best_model": {"metric": "r2"},
    }
    mc = PACKAGE.parse_model_config(raw)
    # A continuous target: the score behind the labels, shifted per silo so the means differ.
    data = {
        name: frame.assign(y=frame["x0"] + frame["x10"] * frame["x11"])
        for name, frame in frames.items()
    }
    tests = [data["test"].iloc[:700], data["test"].iloc[700:1000].assign(y=lambda f: f["y"] + 2.0)]
    executors = {
        "north": FFNetExecutor(
            mc, DC, LocalDataset(data["train_silo0"].iloc[:2000], tests[0], 128)
        ),
        "south": FFNetExecutor(
            mc, DC, LocalDataset(data["train_silo1"].iloc[:2000], tests[1], 128)
        ),
    }
    ctx = InProcessContext(executors, num_rounds=2)
    run(ctx, mc, DC)

    federated, _ = ctx.rounds[2]
    weights = {
        k.removeprefix("global/"): v
        for k, v in ctx.checkpoints[2].arrays.items()
        if k.startswith("global/")
    }
    pooled = pd.concat(tests)
    predicted = FFNetModel(mc, DC, weights).predict(pooled).astype(np.float64)
    truth = pooled["y"].to_numpy(dtype=np.float32).astype(np.float64)
    assert federated["r2"] == pytest.approx(r2_score(truth, predicted), abs=1e-9)
    assert federated["loss"] == pytest.approx(np.mean((truth - predicted) ** 2), abs=1e-6)


def test_the_server_template_is_the_network_layout() -> None:
    template = model_template(MC)
    built = module_arrays(build_module(MC))
    assert {k: (v.shape, v.dtype) for k, v in template.items()} == {
        k: (v.shape, v.dtype) for k, v in built.items()
    }


def test_initial_parameters_replace_the_init_task(frames: dict[str, pd.DataFrame]) -> None:
    given = {k: np.full(v.shape, 0.01).tolist() for k, v in model_template(MC).items()}
    config = TUTORIAL | {"strategy": {"name": "FedAvg", "params": {"initial_parameters": given}}}
    mc = PACKAGE.parse_model_config(config)
    executors = small_silos(frames, mc, DC)
    ctx = InProcessContext(executors, num_rounds=1)
    run(ctx, mc, DC)
    assert [kind for kind, _, _ in ctx.asked] == ["fit", "evaluate"]
    # The clients trained from the given weights: a fit from them reproduces round 1.
    start = {k: np.asarray(v, dtype=np.float32) for k, v in given.items()}
    meta = {"round": 1, "local_epochs": mc.local_epochs, "num_rounds": 1}
    again = small_silos(frames, mc, DC)
    replies = [
        Reply(p, *again[p.client_name].handle("fit", meta, start)) for p in ctx.participants()
    ]
    expected = get_strategy("FedAvg").aggregate_fit(1, start, replies)
    assert ctx.saved is not None
    for name, value in expected.items():
        np.testing.assert_allclose(ctx.saved[0][name], value, rtol=0, atol=1e-6, err_msg=name)
