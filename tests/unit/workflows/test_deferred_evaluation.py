"""A round's evaluation carried by the next round's fit (``RoundPlan(fit_evaluates=True)``):
the same records as separate evaluate tasks, one exchange per round, and the separate task
kept where the clients differ or the round is the last."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedsilo.errors import TaskError
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.strategies import get_strategy
from fedsilo.wire import Arrays, DatasetSummary
from fedsilo.workflows import RoundPlan, Start, run_rounds
from fedsilo.workflows.deferred import EVALUATE_KEY, EVALUATION_KEY

INITIAL = {"w": np.zeros(3, dtype=np.float32)}


class Client:
    """Fits halfway toward ``target``; evaluates the mean squared distance to it, and does
    so first in a fit whose meta asks (as ffnet's executor does)."""

    def __init__(self, target: float, rows: int, evaluation: Any = "real") -> None:
        self.target = np.full(3, target, dtype=np.float32)
        self.rows = rows
        self.evaluation = evaluation
        self.kinds: list[str] = []

    def evaluate(self, w: np.ndarray) -> dict[str, Any]:
        loss = float(np.mean((w - self.target) ** 2))
        return {"test_loss": loss, "test_num_examples": self.rows, "evaluated_on": "test"}

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        self.kinds.append(kind)
        w = arrays["w"]
        if kind == "evaluate":
            return self.evaluate(w), {}
        reply: dict[str, Any] = {
            "num_examples": self.rows,
            "train_loss": float(np.mean((w - self.target) ** 2)),
        }
        if EVALUATE_KEY in meta:
            reply[EVALUATION_KEY] = (
                self.evaluate(w) if self.evaluation == "real" else self.evaluation
            )
        return reply, {"w": (w + self.target) / 2}


def run(
    fit_evaluates: bool, strategy: Any = None, num_rounds: int = 3, **clients: Client
) -> tuple[InProcessContext, Any]:
    clients = clients or {"a": Client(1.0, 10), "b": Client(3.0, 30), "c": Client(-2.0, 20)}
    ctx = InProcessContext(clients, num_rounds=num_rounds)
    plan = RoundPlan(
        strategy=strategy or get_strategy("FedAvgM", {"server_momentum": 0.5}),
        start=lambda _: Start(dict(INITIAL)),
        seed=1,
        save_best_metric="loss",
        fit_evaluates=fit_evaluates,
    )
    return ctx, run_rounds(ctx, plan)


def test_folded_evaluations_record_what_separate_evaluate_tasks_record() -> None:
    separate, expected = run(False)
    folded, result = run(True)
    assert [kind for kind, _, _ in folded.asked] == ["fit", "fit", "fit", "evaluate"]
    assert [kind for kind, _, _ in separate.asked] == ["fit", "evaluate"] * 3
    assert folded.rounds == separate.rounds
    np.testing.assert_array_equal(result.arrays["w"], expected.arrays["w"])
    assert result.meta == expected.meta and result.round == expected.round


def test_a_round_whose_evaluators_are_not_the_next_fit_clients_sends_evaluate() -> None:
    # Half the clients evaluate: not the next round's (all) fit clients.
    strategy = get_strategy("FedAvg", {"fraction_evaluate": 0.5, "min_eval_clients": 1})
    ctx, _ = run(True, strategy)
    assert [kind for kind, _, _ in ctx.asked] == ["fit", "evaluate"] * 3


def test_a_client_without_its_evaluation_fails_it_under_the_failure_policy() -> None:
    clients = {"a": Client(1.0, 10), "b": Client(3.0, 30, evaluation=None)}
    with pytest.raises(TaskError, match=r"round 1: task 'evaluate' failed.*'b'.*no 'evaluation'"):
        run(True, get_strategy("FedAvg", {"accept_failures": False}), **clients)
    ctx, _ = run(True, get_strategy("FedAvg"), **clients)
    assert set(ctx.rounds[1][1]) == {"a", "b"}  # b's train_loss; its test metrics missing
    assert "test_loss" not in ctx.rounds[1][1]["b"] and "test_loss" in ctx.rounds[1][1]["a"]


def test_an_evaluation_over_the_declared_rows_is_rejected() -> None:
    claims = {"test_loss": 0.5, "test_num_examples": 999}  # more rows than b declared
    clients = {"a": Client(1.0, 10), "b": Client(3.0, 30, evaluation=claims)}
    ctx = InProcessContext(
        clients,
        num_rounds=2,
        datasets={
            "a": DatasetSummary(train_rows=10, test_rows=10, columns=[]),
            "b": DatasetSummary(train_rows=30, test_rows=5, columns=[]),
        },
    )
    plan = RoundPlan(
        strategy=get_strategy("FedAvg", {"min_eval_clients": 2}),
        start=lambda _: Start(dict(INITIAL)),
        seed=1,
        fit_evaluates=True,
    )
    with pytest.raises(TaskError, match="round 1: task 'evaluate' got 1 successful"):
        run_rounds(ctx, plan)
