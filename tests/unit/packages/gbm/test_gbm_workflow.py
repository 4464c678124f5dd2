"""The gbm workflow: per-tree metrics, save_best_model, resume after a crash, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, r2_score

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import DataError, TaskError
from fedsilo.federation import get_package
from fedsilo.packages.gbm import GBMExecutor

COLUMNS = ["a", "b"]


def frames(task: str = "classification", seed: int = 0) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = []
    for n in (300, 500, 200):
        x = rng.normal(size=(n, 2))
        frame = pd.DataFrame(x, columns=COLUMNS)
        eta = np.sin(2 * x[:, 0]) + x[:, 1]
        target = (
            rng.random(n) < 1 / (1 + np.exp(-eta))
            if task == "classification"
            else eta + rng.normal(0, 0.3, n)
        )
        frame["y"] = np.asarray(target, dtype=float)
        out.append(frame)
    return out


def test_every_tree_records_exact_pooled_metrics(gbm_run: Any, gbm_cfg: Any) -> None:
    train, test = frames(), frames(seed=1)
    fed = gbm_run(
        gbm_cfg(max_depth=2),
        {"predictors": COLUMNS, "target": "y"},
        train,
        num_rounds=5,
        tests=test,
    )
    assert sorted(fed.ctx.rounds) == [1, 2, 3, 4, 5]
    federated, per_client = fed.ctx.rounds[5]
    pooled = pd.concat(test)
    proba = fed.model.as_sklearn().predict_proba(pooled)[:, 1]
    # loss and accuracy are test-row-weighted means: exactly the pooled values
    assert federated["loss"] == pytest.approx(log_loss(pooled["y"], proba), rel=1e-9)
    assert federated["accuracy"] == pytest.approx(np.mean((proba > 0.5) == pooled["y"]), rel=1e-12)
    assert set(per_client) == {"silo0", "silo1", "silo2"}
    assert per_client["silo1"]["test_num_examples"] == 500
    assert 0.5 < federated["roc_auc_client_mean"] <= 1
    losses = [fed.ctx.rounds[r][0]["train_loss"] for r in range(1, 6)]
    assert losses == sorted(losses, reverse=True)  # boosting lowers the training loss
    assert fed.ctx.saved is not None and fed.ctx.saved[1]["trees"] == 5


def test_regression_reports_pooled_r2(gbm_run: Any, gbm_cfg: Any) -> None:
    train, test = frames("regression"), frames("regression", seed=1)
    fed = gbm_run(
        gbm_cfg("regression", max_depth=2),
        {"predictors": COLUMNS, "target": "y"},
        train,
        num_rounds=4,
        tests=test,
    )
    pooled = pd.concat(test)
    assert fed.ctx.rounds[4][0]["r2"] == pytest.approx(
        r2_score(pooled["y"], fed.model.predict(pooled)), rel=1e-9
    )


def test_save_best_model_keeps_the_best_prefix_of_trees(gbm_run: Any, gbm_cfg: Any) -> None:
    # A huge learning rate overshoots, so the test loss is best early and then rises.
    config = gbm_cfg(max_depth=3, learning_rate=1.0, min_samples_leaf=5)
    config["save_best_model"] = {"metric": "loss", "mode": "min"}
    fed = gbm_run(
        config,
        {"predictors": COLUMNS, "target": "y"},
        frames(),
        num_rounds=12,
        tests=frames(seed=1),
    )
    losses = {r: fed.ctx.rounds[r][0]["loss"] for r in fed.ctx.rounds}
    best = min(losses, key=losses.__getitem__)
    assert best < 12
    assert fed.ctx.saved is not None
    _, meta, server_round = fed.ctx.saved
    assert server_round == best and meta["trees"] == best and meta["trees_grown"] == 12
    assert fed.model.as_sklearn().n_iter_ == best
    assert meta["federated_loss"] == pytest.approx(losses[best])


def test_a_resumed_session_equals_an_uninterrupted_one(
    gbm_run: Any, gbm_cfg: Any, gbm_context: Any, gbm_crash: Any
) -> None:
    config, data = gbm_cfg(max_depth=2), {"predictors": COLUMNS, "target": "y"}
    whole = gbm_run(config, data, frames(), num_rounds=6)
    mc, dc = get_package("gbm").parse_configs(config, data)

    def executors() -> dict[str, GBMExecutor]:
        return {
            f"silo{i}": GBMExecutor(mc, dc, LocalDataset(f, None, 64))
            for i, f in enumerate(frames())
        }

    ctx = gbm_context(executors(), 6, stop_after=3)
    with pytest.raises(gbm_crash):
        get_package("gbm").workflow(ctx, mc, dc)
    # a new server process: fresh clients, the last checkpoint
    resumed = gbm_run(
        config, data, frames(), ctx=gbm_context(executors(), 6, checkpoint=ctx.last_checkpoint)
    )
    x = pd.concat(frames())
    np.testing.assert_array_equal(
        resumed.model.as_sklearn().decision_function(x),
        whole.model.as_sklearn().decision_function(x),
    )


def test_one_class_only_is_a_clear_error(gbm_run: Any, gbm_cfg: Any) -> None:
    data = [f.assign(y=1.0) for f in frames()]
    with pytest.raises(TaskError, match="needs rows of both classes"):
        gbm_run(gbm_cfg(), {"predictors": COLUMNS, "target": "y"}, data, num_rounds=2)


def test_client_refuses_bad_data_and_unknown_tasks(gbm_cfg: Any) -> None:
    mc, dc = get_package("gbm").parse_configs(gbm_cfg(), {"predictors": COLUMNS, "target": "y"})
    with pytest.raises(DataError, match="must hold 0 and 1"):
        GBMExecutor(mc, dc, LocalDataset(frames()[0].assign(y=2.0), None, 8))
    with pytest.raises(DataError, match="'b'"):
        GBMExecutor(mc, dc, LocalDataset(frames()[0].drop(columns=["b"]), None, 8))
    executor = GBMExecutor(mc, dc, LocalDataset(frames()[0], None, 8))
    with pytest.raises(TaskError, match="before the 'bin' task"):
        executor.handle("histograms", {}, {})
    with pytest.raises(TaskError, match="does not handle task kind 'fit'"):
        executor.handle("sketch", {"relative_accuracy": 0.01}, {}) and executor.handle(
            "fit", {}, {}
        )


def test_malformed_histogram_replies_fail_the_session(
    gbm_run: Any, gbm_cfg: Any, gbm_context: Any
) -> None:
    mc, dc = get_package("gbm").parse_configs(gbm_cfg(), {"predictors": COLUMNS, "target": "y"})

    class Truncating(GBMExecutor):
        def handle(self, kind: str, meta: dict[str, Any], arrays: Any) -> Any:
            reply, out = super().handle(kind, meta, arrays)
            if kind == "histograms":
                out = {"histograms": out["histograms"][:, :1]}
            return reply, out

    executors = {
        "good": GBMExecutor(mc, dc, LocalDataset(frames()[0], None, 8)),
        "bad": Truncating(mc, dc, LocalDataset(frames()[1], None, 8)),
    }
    with pytest.raises(TaskError, match="client 'bad' must carry array 'histograms' of shape"):
        get_package("gbm").workflow(gbm_context(executors, 2), mc, dc)
