"""TaskGroup over futures resolved by hand: arrival order, wait, timeouts, cancel, failures.

Every context (the engine, the in-process runner) hands the group one future per task and an
``expire`` callback; here the test resolves the futures itself, in the order it chooses, and
``expire`` plays the context's part (withdraw the task, resolve its future with a Failure, or
report that the reply won the race).
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from concurrent.futures import Future

import numpy as np
import pytest

from fedsilo.errors import TaskError
from fedsilo.federation import Failure, FailureCause, Outcome, Participant, Reply, Task, TaskGroup
from fedsilo.wire import DatasetSummary

SUMMARY = DatasetSummary(train_rows=1, test_rows=0, columns=[])


class _Anything:
    def __eq__(self, other: object) -> bool:
        return True


ANY = _Anything()


def participant(i: int) -> Participant:
    return Participant(id=f"p{i}", client_name=f"client-{i}", dataset=SUMMARY)


def reply(i: int, value: float = 0.0) -> Reply:
    return Reply(participant(i), {"num_examples": 1}, {"w": np.full(2, value)}, kind="fit", round=3)


def failure(i: int, cause: FailureCause = "error", reason: str = "boom") -> Failure:
    return Failure(participant(i), "fit", 3, cause, reason)


class Harness:
    """``n`` tasks, their futures, and an ``expire`` that records its calls."""

    def __init__(self, n: int, *, reply_wins: set[int] | None = None) -> None:
        self.tasks = [Task(to=participant(i), kind="fit", round=3) for i in range(n)]
        self.futures: list[Future[Outcome]] = [Future() for _ in range(n)]
        self.expired: list[tuple[int, FailureCause, str]] = []
        self.reply_wins = reply_wins or set()

    def expire(self, index: int, cause: FailureCause, reason: str) -> bool:
        self.expired.append((index, cause, reason))
        if index in self.reply_wins:
            self.futures[index].set_result(reply(index, 9.0))
            return False
        self.futures[index].set_result(Failure(participant(index), "fit", 3, cause, reason))
        return True

    def group(self, default_timeout: float | None = None) -> TaskGroup:
        return TaskGroup(self.tasks, self.futures, self.expire, default_timeout)


def test_a_group_needs_one_future_per_task() -> None:
    h = Harness(2)
    with pytest.raises(ValueError, match="one future per task"):
        TaskGroup(h.tasks, h.futures[:1], h.expire)


def test_replies_come_out_in_arrival_order_not_send_order() -> None:
    h = Harness(3)
    group = h.group()
    assert len(group) == 3 and group.outstanding == 3
    stream = group.as_completed()
    h.futures[2].set_result(reply(2))
    assert next(stream).participant.id == "p2"
    h.futures[0].set_result(reply(0))
    assert next(stream).participant.id == "p0"
    assert group.outstanding == 1 and group.num_replies == 2
    h.futures[1].set_result(reply(1))
    assert next(stream).participant.id == "p1"
    assert list(stream) == []
    assert group.outstanding == 0 and group.num_replies == 3 and group.failures == []
    assert h.expired == []


def test_as_completed_blocks_until_a_reply_arrives() -> None:
    h = Harness(1)
    timer = threading.Timer(0.05, lambda: h.futures[0].set_result(reply(0)))
    began = time.monotonic()
    timer.start()
    try:
        got = list(h.group().as_completed(timeout=5))
    finally:
        timer.cancel()
    assert [r.participant.id for r in got] == ["p0"]
    assert 0.04 <= time.monotonic() - began < 2


def test_failures_are_collected_not_yielded_and_outcomes_yields_both() -> None:
    h = Harness(3)
    h.futures[1].set_result(failure(1, reason="disk full"))
    h.futures[0].set_result(reply(0))
    h.futures[2].set_result(reply(2))
    group = h.group()
    assert sorted(r.participant.id for r in group.as_completed()) == ["p0", "p2"]
    assert group.failures == [failure(1, reason="disk full")]
    assert str(group.failures[0]) == "client-1: disk full"

    h = Harness(2)
    h.futures[0].set_result(failure(0, "malformed", "bad frame"))
    h.futures[1].set_result(reply(1))
    group = h.group()
    outcomes = list(group.outcomes())
    assert sorted(type(o).__name__ for o in outcomes) == ["Failure", "Reply"]
    assert group.num_replies == 1 and [f.cause for f in group.failures] == ["malformed"]


def test_wait_returns_after_min_replies_and_leaves_the_rest_in_flight() -> None:
    h = Harness(3)
    h.futures[1].set_result(reply(1))
    h.futures[2].set_result(reply(2))
    group = h.group()
    first = group.wait(min_replies=2, timeout=5)
    assert sorted(r.participant.id for r in first) == ["p1", "p2"]
    assert group.outstanding == 1 and h.expired == []  # the third is not given up on
    h.futures[0].set_result(reply(0))
    assert [r.participant.id for r in group.as_completed()] == ["p0"]


def test_wait_defaults_to_every_task_and_zero_returns_at_once() -> None:
    h = Harness(2)
    assert h.group().wait(min_replies=0) == []
    for i in range(2):
        h.futures[i].set_result(reply(i))
    assert len(h.group().wait()) == 2


def test_wait_raises_listing_every_failure_when_too_few_can_come() -> None:
    h = Harness(3)
    h.futures[0].set_result(reply(0))
    h.futures[1].set_result(failure(1, reason="out of memory"))
    h.futures[2].set_result(failure(2, "timeout", "no reply within 1 s"))
    with pytest.raises(TaskError) as info:
        h.group().wait(min_replies=2)
    message = str(info.value)
    assert message.startswith("task 'fit' got 1 successful replies; at least 2 needed")
    assert "client-1: out of memory" in message and "client-2: no reply within 1 s" in message


def test_a_timeout_expires_every_unanswered_task_once() -> None:
    h = Harness(3)
    h.futures[1].set_result(reply(1))
    group = h.group()
    got = list(group.as_completed(timeout=0.05))
    assert [r.participant.id for r in got] == ["p1"]
    assert sorted(h.expired) == [(0, "timeout", "no reply within 0.05 s"), (2, "timeout", ANY)]
    assert {f.participant.id for f in group.failures} == {"p0", "p2"}
    assert all(f.cause == "timeout" for f in group.failures) and group.outstanding == 0


def test_the_default_timeout_is_the_contexts() -> None:
    h = Harness(1)
    with pytest.raises(TaskError, match=r"no reply within 0\.03 s"):
        h.group(default_timeout=0.03).wait()
    assert h.expired == [(0, "timeout", "no reply within 0.03 s")]


def test_a_reply_that_wins_the_race_with_the_timeout_is_a_reply() -> None:
    h = Harness(2, reply_wins={0})
    group = h.group()
    got = list(group.as_completed(timeout=0.02))
    assert [(r.participant.id, float(r.arrays["w"][0])) for r in got] == [("p0", 9.0)]
    assert [f.participant.id for f in group.failures] == ["p1"]


def test_cancel_withdraws_only_what_is_outstanding() -> None:
    h = Harness(3)
    h.futures[0].set_result(reply(0))
    group = h.group()
    assert [r.participant.id for r in group.wait(min_replies=1)] == ["p0"]
    h.futures[2].set_result(reply(2))  # arrived, never consumed
    group.cancel("enough replies")
    assert h.expired == [(1, "canceled", "enough replies")]
    assert [(f.participant.id, f.cause, f.reason) for f in group.failures] == [
        ("p1", "canceled", "enough replies")
    ]
    assert group.outstanding == 0 and group.num_replies == 1
    assert list(group.as_completed()) == []
    group.cancel()  # nothing left: a no-op
    assert len(h.expired) == 1


def test_a_streamed_reply_is_released_once_handed_out() -> None:
    h = Harness(3)
    futures = h.futures
    group = TaskGroup(h.tasks, futures, h.expire)
    h.futures = []  # the context's futures: only the group holds them now
    stream = group.as_completed()
    alive: list[weakref.ref[np.ndarray]] = []
    for i in range(3):
        futures[i].set_result(reply(i, float(i)))
        future = futures[i]
        futures[i] = Future()  # drop the test's own reference
        del future
        got = next(stream)
        assert all(ref() is None for ref in alive), f"a handed-out reply is kept (reply {i})"
        alive.append(weakref.ref(got.arrays["w"]))
        del got
    assert list(stream) == []
    assert all(ref() is None for ref in alive)


def test_replies_that_arrived_together_are_released_one_by_one() -> None:
    h = Harness(3)
    for i in range(3):
        h.futures[i].set_result(reply(i, float(i)))
    group = TaskGroup(h.tasks, h.futures, h.expire)
    h.futures = []
    alive: list[weakref.ref[np.ndarray]] = []
    for got in group.as_completed():
        assert all(ref() is None for ref in alive), "a handed-out reply is kept"
        alive.append(weakref.ref(got.arrays["w"]))
        del got
    gc.collect()
    assert all(ref() is None for ref in alive)
