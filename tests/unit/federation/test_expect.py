"""ReplySpec and screen (fedsilo.federation.expect): one reason per defect, naming the field,
what was expected and what came, never array values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedsilo.errors import TaskError
from fedsilo.federation import Failure, Participant, Reply, Task
from fedsilo.federation.expect import (
    CHECKS,
    ArraySpec,
    Count,
    Problem,
    ReplySpec,
    check_reply,
    screen,
)
from fedsilo.runners.inprocess import InProcessContext
from fedsilo.wire import DatasetSummary

DECLARED = DatasetSummary(train_rows=100, test_rows=20, columns=[])
PERSON = Participant(id="p1", client_name="silo", dataset=DECLARED)
WEIGHTS = {"w": np.zeros((2, 3), dtype=np.float32), "n": np.zeros(1, dtype=np.int64)}
FIT = ReplySpec.like(WEIGHTS, counts={"num_examples": Count("train_rows")})


def reply(arrays: dict[str, np.ndarray] | None = None, **meta: Any) -> Reply:
    return Reply(PERSON, {"num_examples": 100, **meta}, dict(WEIGHTS) if arrays is None else arrays)


def test_like_keeps_shapes_and_dtype_names_only() -> None:
    assert FIT.arrays == {"w": ArraySpec((2, 3), "float32"), "n": ArraySpec((1,), "int64")}
    assert check_reply(FIT, reply(), DECLARED) is None


@pytest.mark.parametrize(
    ("arrays", "meta", "reason"),
    [
        ({"w": WEIGHTS["w"]}, {}, "arrays ['n'] are missing; expected ['n', 'w']"),
        (
            {"w": np.zeros((3, 2), np.float32), "n": WEIGHTS["n"]},
            {},
            "shape (3, 2); expected (2, 3)",
        ),
        ({"w": np.zeros((2, 3)), "n": WEIGHTS["n"]}, {}, "dtype float64; expected float32"),
        (
            {"w": np.full((2, 3), np.inf, np.float32), "n": WEIGHTS["n"]},
            {},
            "array 'w' holds 6 non-finite value(s) (NaN or infinity)",
        ),
        (None, {"num_examples": False}, "meta['num_examples'] is False (a bool)"),
        (None, {"num_examples": 50.0}, "meta['num_examples'] is 50 (a float)"),
        (None, {"num_examples": float("nan")}, "meta['num_examples'] is nan (a float)"),
        (None, {"num_examples": 101}, "is 101; expected an integer in [1, 100] (the train_rows"),
        (None, {"num_examples": -1}, "is -1; expected an integer in [1, 100]"),
        (None, {"num_examples": [1, 2]}, "meta['num_examples'] is a list; expected"),
    ],
)
def test_each_defect_has_one_reason(arrays: Any, meta: dict[str, Any], reason: str) -> None:
    problem = check_reply(FIT, reply(arrays, **meta), DECLARED)
    assert problem is not None and reason in problem.message and problem.check in CHECKS


def test_evaluation_counts_are_bounded_by_the_rows_a_client_can_evaluate_on() -> None:
    spec = ReplySpec(arrays={}, counts={"test_num_examples": Count("evaluation_rows", 0, False)})
    ok = Reply(PERSON, {"test_num_examples": 0}, {})
    assert check_reply(spec, ok, DECLARED) is None
    assert check_reply(spec, Reply(PERSON, {}, {}), DECLARED) is None  # optional
    # no test rows declared: the client evaluates on its 100 training rows
    train_only = DatasetSummary(train_rows=100, test_rows=0, columns=[])
    assert check_reply(spec, Reply(PERSON, {"test_num_examples": 100}, {}), train_only) is None
    too_many = check_reply(spec, Reply(PERSON, {"test_num_examples": 101}, {}), DECLARED)
    assert too_many is not None and "expected an integer in [0, 100]" in too_many.message
    extra = check_reply(spec, Reply(PERSON, {}, {"x": np.zeros(1)}), DECLARED)
    assert extra == Problem("unexpected_array", "arrays ['x'] are unexpected; expected only []")


def test_screen_turns_a_defective_reply_into_a_malformed_failure() -> None:
    task = Task(to=PERSON, kind="fit", round=4, expect=FIT)
    bad = reply(num_examples=10**9)
    outcome = screen(task, bad, DECLARED)
    assert isinstance(outcome, Failure)
    assert (outcome.cause, outcome.kind, outcome.round) == ("malformed", "fit", 4)
    assert outcome.check == "count"
    assert outcome.reason.startswith("fit reply (round 4) rejected: meta['num_examples'] is ")
    good = reply()
    assert screen(task, good, DECLARED) is good
    assert screen(Task(to=PERSON, kind="fit"), bad, DECLARED) is bad  # no expectation
    failure = Failure(PERSON, "fit", 4, "timeout", "late")
    assert screen(task, failure, DECLARED) is failure


def test_the_reason_never_shows_array_values() -> None:
    w = np.full((2, 3), 123.456, dtype=np.float32)
    w[0, 0] = np.nan
    problem = check_reply(FIT, reply({"w": w, "n": WEIGHTS["n"]}), DECLARED)
    assert problem is not None and "123" not in problem.message


def test_a_large_honest_reply_is_checked_in_one_pass() -> None:
    big = {"w": np.ones(1_000_003, dtype=np.float32)}
    spec = ReplySpec.like(big)
    assert check_reply(spec, Reply(PERSON, {}, big), DECLARED) is None
    big["w"][-1] = np.nan  # in the last, partial chunk
    assert check_reply(spec, Reply(PERSON, {}, big), DECLARED) == Problem(
        "non_finite",
        "array 'w' holds 1 non-finite value(s) (NaN or infinity); expected finite values",
    )


def test_ask_takes_an_expectation_for_packages_with_their_own_loop() -> None:
    class Stats:
        def __init__(self, value: float) -> None:
            self.value = value

        def handle(self, kind: str, meta: dict[str, Any], arrays: Any) -> Any:
            return {}, {"sums": np.full(3, self.value)}

    ctx = InProcessContext({"a": Stats(1.0), "b": Stats(float("nan")), "c": Stats(2.0)}, 1)
    replies = ctx.ask(ctx.participants(), "sums", round=2, expect=ReplySpec(finite=True))
    assert [r.participant.client_name for r in replies] == ["a", "c"]
    assert ctx.logs[0] == (
        "client 'b': sums reply (round 2) rejected: array 'sums' holds 3 non-finite value(s) "
        "(NaN or infinity); expected finite values"
    )
    with pytest.raises(TaskError, match="accept_failures is false: b: sums reply"):
        ctx.ask(ctx.participants(), "sums", round=3, expect=ReplySpec(), accept_failures=False)
