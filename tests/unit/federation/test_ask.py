"""``ask()`` is sugar over ``send()``: one task per participant, every outcome, a failure policy.

Run over the in-process context (real executors, every task through the wire codec) for the
policy, and over a context whose ``send`` keeps the tasks it was given (futures resolved by
the test) for what ``ask`` hands to ``send``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from fedsilo.errors import TaskError
from fedsilo.federation import AskMixin, Failure, Outcome, Participant, Reply, Task, TaskGroup
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.wire import Arrays, DatasetSummary


class Doubler:
    """Answers ``fit`` with twice the broadcast; fails when told to."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        if self.fails:
            raise RuntimeError("out of memory")
        return {"num_examples": 1, "round": meta.get("round")}, {"w": 2 * arrays["w"]}


def context(*failing: int, n: int = 3) -> InProcessContext:
    clients = {f"client-{i}": Doubler(fails=i in failing) for i in range(n)}
    return InProcessContext(clients, 1, capture_failures=True)


def ask(ctx: InProcessContext, **policy: Any) -> list[Reply]:
    return ctx.ask(ctx.participants(), "fit", {"w": np.ones(2)}, {"lr": 0.1}, round=4, **policy)


def test_every_reply_comes_back_in_send_order() -> None:
    ctx = context()
    replies = ask(ctx)
    assert [r.participant.client_name for r in replies] == ["client-0", "client-1", "client-2"]
    assert all(r.kind == "fit" and r.round == 4 for r in replies)
    np.testing.assert_array_equal(replies[0].arrays["w"], [2.0, 2.0])
    assert ctx.asked == [("fit", 4, ["client-0", "client-1", "client-2"])]
    assert ctx.logs == []


def test_accepted_failures_are_left_out_and_logged() -> None:
    ctx = context(1)
    replies = ask(ctx)
    assert [r.participant.client_name for r in replies] == ["client-0", "client-2"]
    assert ctx.logs == ["round 4: task 'fit' failed on 1 client(s): client-1: out of memory"]


def test_refused_failures_raise_naming_the_client() -> None:
    with pytest.raises(TaskError) as info:
        ask(context(2), accept_failures=False)
    assert str(info.value) == (
        "round 4: task 'fit' failed and accept_failures is false: client-2: out of memory"
    )


def test_too_few_replies_raise_listing_the_failures() -> None:
    with pytest.raises(TaskError) as info:
        ask(context(0, 2), min_replies=2)
    message = str(info.value)
    assert message.startswith("round 4: task 'fit' got 1 successful replies; at least 2 needed")
    assert "client-0: out of memory" in message and "client-2: out of memory" in message
    # By default one reply is enough; none is not.
    assert len(ask(context(0, 1))) == 1
    with pytest.raises(TaskError, match="got 0 successful replies; at least 1 needed"):
        ask(context(0, 1, 2))


def test_asking_nobody_is_an_error() -> None:
    ctx = context()
    with pytest.raises(TaskError, match="round 2: no participant to send task 'evaluate' to"):
        ctx.ask([], "evaluate", round=2)


class KeepingContext(AskMixin):
    """``send`` keeps its tasks and returns futures the test resolves."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[Task], float | None]] = []
        self.futures: list[Future[Outcome]] = []
        self.logs: list[str] = []
        self.script: dict[int, str] = {}  # index -> "reply" | "fail" | "silent"

    def send(self, tasks: Sequence[Task], *, timeout: float | None = None) -> TaskGroup:
        self.sent.append((list(tasks), timeout))
        self.futures = [Future() for _ in tasks]
        for i, task in enumerate(tasks):
            action = self.script.get(i, "reply")
            if action == "reply":
                self.futures[i].set_result(Reply(task.to, {}, {}, kind=task.kind))
            elif action == "fail":
                self.futures[i].set_result(Failure(task.to, task.kind, task.round, "error", "x"))

        def expire(index: int, cause: Any, reason: str) -> bool:
            task = tasks[index]
            self.futures[index].set_result(Failure(task.to, task.kind, task.round, cause, reason))
            return True

        return TaskGroup(tasks, self.futures, expire, default_timeout=timeout)

    def log(self, message: str) -> None:
        self.logs.append(message)


def people(n: int) -> list[Participant]:
    summary = DatasetSummary(train_rows=1, test_rows=0, columns=[])
    return [Participant(id=f"p{i}", client_name=f"c{i}", dataset=summary) for i in range(n)]


def test_ask_sends_one_task_each_sharing_one_payload() -> None:
    ctx = KeepingContext()
    weights = {"w": np.zeros(3)}
    ctx.ask(people(3), "fit", weights, {"lr": 0.5}, round=7, timeout=12.5)
    [(tasks, timeout)] = ctx.sent
    assert timeout == 12.5
    assert [t.to.id for t in tasks] == ["p0", "p1", "p2"]
    assert {(t.kind, t.round) for t in tasks} == {("fit", 7)}
    # One arrays object and one meta object for all: the context encodes and stores it once.
    assert len({id(t.arrays) for t in tasks}) == 1 and len({id(t.meta) for t in tasks}) == 1
    assert tasks[0].meta == {"lr": 0.5} and tasks[0].sealed is None


def test_a_silent_participant_times_out_into_a_failure() -> None:
    ctx = KeepingContext()
    ctx.script = {1: "silent"}
    replies = ctx.ask(people(3), "fit", round=1, timeout=0.02)
    assert [r.participant.id for r in replies] == ["p0", "p2"]
    assert ctx.logs == ["round 1: task 'fit' failed on 1 client(s): c1: no reply within 0.02 s"]
