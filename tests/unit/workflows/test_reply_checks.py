"""The round loop's reply checks through the in-process runner (the same check as the
engine's, :func:`fedsilo.federation.expect.screen`): a fit reply that claims more rows than
its client declared, or sends NaN, is one failed task; the round goes on with the others."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedsilo.errors import TaskError
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.strategies import get_strategy
from fedsilo.wire import Arrays, DatasetSummary
from fedsilo.workflows import RoundPlan, Start, run_rounds


class Client:
    """Moves the weights to ``target``; claims ``num_examples`` rows."""

    def __init__(self, target: float, num_examples: Any = 10) -> None:
        self.target = target
        self.num_examples = num_examples

    def handle(self, kind: str, meta: dict[str, Any], arrays: Arrays) -> Any:
        if kind == "fit":
            w = np.full_like(arrays["w"], self.target)
            return {"num_examples": self.num_examples, "train_loss": 0.5}, {"w": w}
        return {"test_loss": 1.0, "test_num_examples": 10}, {}


def declared(rows: int) -> DatasetSummary:
    return DatasetSummary(train_rows=rows, test_rows=0, columns=[])


def plan(**params: Any) -> RoundPlan:
    return RoundPlan(
        strategy=get_strategy("FedAvg", params),
        start=lambda _: Start({"w": np.zeros(3, dtype=np.float32)}),
        seed=0,
    )


def test_a_count_above_the_declared_rows_is_one_failed_task() -> None:
    executors = {"a": Client(1.0), "b": Client(3.0), "liar": Client(1000.0, 10**9)}
    ctx = InProcessContext(
        executors, num_rounds=2, datasets={name: declared(16_000) for name in executors}
    )
    result = run_rounds(ctx, plan(min_fit_clients=2))
    np.testing.assert_array_equal(result.arrays["w"], np.full(3, 2.0, dtype=np.float32))
    line = (
        "client 'liar': fit reply (round 1) rejected: meta['num_examples'] is 1000000000; "
        "expected an integer in [1, 16000] (the train_rows declared on joining)"
    )
    assert line in ctx.logs
    assert any(
        text.startswith("round 2: task 'fit' failed on 1 client(s): liar: ") for text in ctx.logs
    )
    # the liar's evaluations still count: only its fit reply was refused
    assert set(ctx.rounds[2][1]) == {"a", "b", "liar"}


def test_without_a_declared_summary_counts_are_unbounded_but_must_be_integers() -> None:
    executors = {"a": Client(1.0), "big": Client(3.0, 30), "float": Client(9.0, 1e9)}
    ctx = InProcessContext(executors, num_rounds=1)
    result = run_rounds(ctx, plan())
    # 10 and 30 rows: (1 * 10 + 3 * 30) / 40
    np.testing.assert_allclose(result.arrays["w"], np.full(3, 2.5), rtol=1e-6)
    assert (
        "client 'float': fit reply (round 1) rejected: meta['num_examples'] is 1e+09 (a float); "
        "expected an integer >= 1"
    ) in ctx.logs


def test_nan_weights_fail_the_session_when_too_few_clients_remain() -> None:
    executors = {"a": Client(1.0), "nan": Client(float("nan"))}
    ctx = InProcessContext(executors, num_rounds=1)
    with pytest.raises(TaskError, match=r"got 1 successful replies; at least 2 needed \(nan: "):
        run_rounds(ctx, plan(min_fit_clients=2))
    assert ctx.saved is None  # no NaN model, no "completed" session
