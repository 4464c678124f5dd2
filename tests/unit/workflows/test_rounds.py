"""The round loop over in-process clients: streaming aggregation, the strategy's per-round
hooks (Flower's on_fit_config_fn / on_evaluate_config_fn / evaluate_fn), failure policy,
pooled metrics, best-model selection and resuming from a checkpoint.

The clients are small numpy executors: each "trains" by moving the weights halfway to its
own target vector, and evaluates with the squared distance to it, so every expected number
is a closed form.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedsilo.errors import TaskError
from fedsilo.federation import Participant
from fedsilo.runners.inprocess import InProcessContext, SimulationStopped
from fedsilo.strategies import get_strategy
from fedsilo.wire import Arrays
from fedsilo.workflows import PooledMetrics, RoundPlan, Start, ask_initial_arrays, run_rounds

INITIAL = {"w": np.zeros(3, dtype=np.float32)}


class Client:
    """Fits halfway toward ``target``; evaluates the mean squared distance to it."""

    def __init__(self, target: float, rows: int, fail_on: tuple[str, ...] = ()) -> None:
        self.target = np.full(3, target, dtype=np.float32)
        self.rows = rows
        self.fail_on = fail_on
        self.metas: list[tuple[str, dict[str, Any]]] = []

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        self.metas.append((kind, meta))
        if kind in self.fail_on:
            raise RuntimeError(f"{kind} refused")
        if kind == "init":
            return {}, dict(INITIAL)
        w = arrays["w"]
        if kind == "fit":
            loss = float(np.mean((w - self.target) ** 2))
            return {"num_examples": self.rows, "train_loss": loss}, {"w": (w + self.target) / 2}
        loss = float(np.mean((w - self.target) ** 2))
        return {"test_loss": loss, "test_num_examples": self.rows, "evaluated_on": "test"}, {}


def plan(strategy: Any, **kwargs: Any) -> RoundPlan:
    return RoundPlan(strategy=strategy, start=lambda _: Start(dict(INITIAL)), seed=1, **kwargs)


def test_fedavg_rounds_record_exact_pooled_metrics_and_save_the_last_model() -> None:
    clients = {"a": Client(1.0, 10), "b": Client(3.0, 30)}
    ctx = InProcessContext(clients, num_rounds=2)
    result = run_rounds(ctx, plan(get_strategy("FedAvg")))

    # Round 1: a -> 0.5, b -> 1.5; weighted 10:30 -> 1.25. Round 2: a -> 1.125, b -> 2.125.
    np.testing.assert_allclose(result.arrays["w"], np.full(3, 1.875))
    assert result.arrays["w"].dtype == np.float32
    federated, per_client = ctx.rounds[1]
    assert federated["loss"] == pytest.approx((10 * 0.25**2 + 30 * 1.75**2) / 40)
    assert federated["train_loss"] == pytest.approx((10 * 1.0 + 30 * 9.0) / 40)
    assert per_client["a"] == {
        "test_loss": pytest.approx(0.0625),
        "test_num_examples": 10.0,
        "train_loss": 1.0,
    }
    assert result.meta["selected_by"] == "last round" and result.round == 2
    assert ctx.saved is not None and ctx.saved[2] == 2
    assert [kind for kind, _, _ in ctx.asked] == ["fit", "evaluate"] * 2


def test_per_round_hooks_reach_the_clients_and_evaluate_fn_is_recorded() -> None:
    clients = {"a": Client(1.0, 10)}
    seen: list[tuple[int, float, dict[str, Any]]] = []

    def evaluate_fn(server_round: int, arrays: Arrays, config: dict[str, Any]) -> Any:
        seen.append((server_round, float(arrays["w"][0]), config))
        return 0.5 * server_round, {"score": 2.0}

    strategy = get_strategy(
        "FedProx",
        {"proximal_mu": 0.1},
        on_fit_config_fn=lambda server_round: {"lr_scale": 1.0 / server_round},
        on_evaluate_config_fn=lambda server_round: {"batch": 8 * server_round},
        evaluate_fn=evaluate_fn,
    )
    ctx = InProcessContext(clients, num_rounds=2)
    run_rounds(ctx, plan(strategy, fit_meta={"local_epochs": 3}))

    fits = [meta for kind, meta in clients["a"].metas if kind == "fit"]
    assert fits[1] == {
        "round": 2,
        "local_epochs": 3,
        "num_rounds": 2,
        "lr_scale": 0.5,
        "proximal_mu": 0.1,
    }
    evaluates = [meta for kind, meta in clients["a"].metas if kind == "evaluate"]
    assert evaluates == [{"round": 1, "batch": 8}, {"round": 2, "batch": 16}]
    # Flower semantics: evaluate_fn sees the round's new global model and the evaluate config.
    assert seen == [(1, 0.5, {"batch": 8}), (2, 0.75, {"batch": 16})]
    assert ctx.rounds[2][0]["server_loss"] == 1.0
    assert ctx.rounds[2][0]["server_score"] == 2.0


def test_save_best_model_keeps_the_best_round_and_survives_a_restart() -> None:
    # The evaluating client's target is far off, so loss rises after round 1.
    def clients() -> dict[str, Client]:
        return {"a": Client(1.0, 10), "b": Client(-5.0, 1)}

    best = {"save_best_metric": "loss", "save_best_mode": "min"}
    straight = InProcessContext(clients(), num_rounds=3)
    result = run_rounds(straight, plan(get_strategy("FedAvg"), **best))
    losses = {r: federated["loss"] for r, (federated, _) in straight.rounds.items()}
    assert result.round == min(losses, key=losses.__getitem__)
    assert result.meta["selected_by"] == "best loss (min)"
    global_arrays = straight.checkpoints[result.round].arrays
    np.testing.assert_array_equal(result.arrays["w"], global_arrays["global/w"])

    crashed = InProcessContext(clients(), num_rounds=3, stop_after=2)
    with pytest.raises(SimulationStopped):
        run_rounds(crashed, plan(get_strategy("FedAvg"), **best))
    resumed = InProcessContext(clients(), num_rounds=3, checkpoint=crashed.last_checkpoint)
    again = run_rounds(resumed, plan(get_strategy("FedAvg"), **best))
    assert [r for _, r, _ in resumed.asked] == [3, 3]
    assert again.meta == result.meta
    np.testing.assert_array_equal(again.arrays["w"], result.arrays["w"])


def test_a_failed_fit_is_left_out_or_fails_the_round_as_the_strategy_says() -> None:
    clients = {"a": Client(1.0, 10), "b": Client(3.0, 30, fail_on=("fit",))}
    ctx = InProcessContext(clients, num_rounds=1, capture_failures=True)
    result = run_rounds(ctx, plan(get_strategy("FedAvg")))
    np.testing.assert_allclose(result.arrays["w"], np.full(3, 0.5))  # a's model alone
    assert ctx.logs == ["round 1: task 'fit' failed on 1 client(s): b: fit refused"]

    strict = get_strategy("FedAvg", {"accept_failures": False})
    ctx = InProcessContext(clients, num_rounds=1, capture_failures=True)
    with pytest.raises(TaskError, match="round 1: task 'fit' failed and accept_failures is false"):
        run_rounds(ctx, plan(strict))

    needy = get_strategy("FedAvg", {"min_fit_clients": 2})
    ctx = InProcessContext(clients, num_rounds=1, capture_failures=True)
    with pytest.raises(TaskError, match="got 1 successful replies; at least 2 needed"):
        run_rounds(ctx, plan(needy))


def test_a_diverged_client_is_a_failed_task_and_no_model_is_saved() -> None:
    clients = {"a": Client(float("inf"), 10)}
    ctx = InProcessContext(clients, num_rounds=1)
    with pytest.raises(
        TaskError,
        match=r"got 0 successful replies; at least 1 needed \(a: fit reply \(round 1\) "
        r"rejected: array 'w' holds 3 non-finite value\(s\)",
    ):
        run_rounds(ctx, plan(get_strategy("FedAvg")))
    assert ctx.saved is None


def test_the_initial_model_comes_from_one_client_and_is_checked() -> None:
    clients = {"a": Client(1.0, 10), "b": Client(2.0, 10)}
    ctx = InProcessContext(clients, num_rounds=1)
    participants: list[Participant] = ctx.participants()
    arrays = ask_initial_arrays(ctx, participants, INITIAL)
    np.testing.assert_array_equal(arrays["w"], INITIAL["w"])
    assert ctx.asked == [("init", 0, ["a"])]
    with pytest.raises(TaskError, match="does not match the model"):
        ask_initial_arrays(ctx, participants, {"w": np.zeros(4)})


def test_pooled_metrics_are_reduced_by_name() -> None:
    clients = {"a": Client(1.0, 10)}
    ctx = InProcessContext(clients, num_rounds=1)
    pool = PooledMetrics(("loss",))
    strategy = get_strategy("FedAvg", evaluate_metrics_aggregation_fn=pool)
    run_rounds(ctx, plan(strategy))
    assert set(ctx.rounds[1][0]) == {"loss", "train_loss"}
    with pytest.raises(ValueError, match="Unknown federated metric"):
        PooledMetrics(("auc",))
