"""Replies checked against their task through the real thread server (issue 11, item 4).

The probe package's workflow is the shared round loop (FedAvg, one round) over raw-HTTP
participants: two honest silos move the model to ``global + 1``; each other silo answers its
fit task with one defect. That reply must be one failed task -- recorded on the task, one line
in the session log naming the client, the field and what was expected -- and the session
completes with the honest clients under ``accept_failures``; it fails with a clear reason
when ``min_fit_clients`` can no longer be met, or when failures are not accepted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from fedsilo.federation import SessionContext
from fedsilo.strategies import get_strategy
from fedsilo.workflows import RoundPlan, Start, run_rounds

ROWS = 5
SIZE = 4
#: a value no log line or failure reason may show (the defect replies carry it)
SECRET = 7.125

Fit = Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], dict[str, Any]]]


def honest(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return {"w": arrays["w"] + np.float32(1)}, {"num_examples": ROWS}


def secret_weights() -> np.ndarray:
    return np.full(SIZE, SECRET, dtype=np.float32)


def with_nan() -> np.ndarray:
    w = secret_weights()
    w[1] = np.nan
    return w


#: defect -> (the bad fit reply, what the reason must say)
DEFECTS: dict[str, tuple[Fit, str]] = {
    "missing array": (
        lambda a: ({}, {"num_examples": ROWS}),
        "arrays ['w'] are missing; expected ['w']",
    ),
    "extra array": (
        lambda a: ({"w": secret_weights(), "x": secret_weights()}, {"num_examples": ROWS}),
        "arrays ['x'] are unexpected; expected only ['w']",
    ),
    "wrong shape": (
        lambda a: ({"w": np.full(SIZE + 1, SECRET, np.float32)}, {"num_examples": ROWS}),
        "array 'w' has shape (5,); expected (4,)",
    ),
    "wrong dtype": (
        lambda a: ({"w": secret_weights().astype(np.float64)}, {"num_examples": ROWS}),
        "array 'w' has dtype float64; expected float32",
    ),
    "NaN": (
        lambda a: ({"w": with_nan()}, {"num_examples": ROWS}),
        "array 'w' holds 1 non-finite value(s) (NaN or infinity); expected finite values",
    ),
    "bool count": (
        lambda a: ({"w": secret_weights()}, {"num_examples": True}),
        "meta['num_examples'] is True (a bool); expected an integer in [1, 5] (the "
        "train_rows declared on joining)",
    ),
    "float count 1e9": (
        lambda a: ({"w": secret_weights()}, {"num_examples": 1e9}),
        "meta['num_examples'] is 1e+09 (a float); expected an integer in [1, 5]",
    ),
    "count above declared rows": (
        lambda a: ({"w": secret_weights()}, {"num_examples": ROWS + 1}),
        "meta['num_examples'] is 6; expected an integer in [1, 5]",
    ),
    "count zero": (
        lambda a: ({"w": secret_weights()}, {"num_examples": 0}),
        "meta['num_examples'] is 0; expected an integer in [1, 5]",
    ),
    "count missing": (
        lambda a: ({"w": secret_weights()}, {}),
        "meta['num_examples'] is missing; expected an integer in [1, 5]",
    ),
    "count a string": (
        lambda a: ({"w": secret_weights()}, {"num_examples": "many"}),
        "meta['num_examples'] is a str; expected an integer in [1, 5]",
    ),
}


def answer(silo: Any, helpers: Any, fit: Fit, results: dict[str, Any]) -> None:
    """Answer fit tasks with ``fit``, evaluate tasks honestly, until the session ends."""
    try:
        response = silo.next()
        while response.status_code in (200, 204):
            if response.status_code == 204:
                response = silo.next()
                continue
            task_id, arrays, header = helpers.task_of(response)
            if header.kind == "fit":
                out, meta = fit(arrays)
            else:
                out, meta = {}, {"test_loss": 1.0, "test_num_examples": ROWS}
            response = silo.reply(task_id, out, meta, wait=10)
        results[silo.name] = response.json()["status"]
    except Exception as exc:  # reported to the test thread
        results[silo.name] = exc


def run_session(
    api: httpx.Client,
    silos: Any,
    helpers: Any,
    probe: Any,
    bad: dict[str, Fit],
    **params: Any,
) -> tuple[str, dict[str, Any]]:
    """A one-round FedAvg session over silos ``good-1``, ``good-2`` and one per ``bad`` fit."""

    def workflow(ctx: SessionContext) -> None:
        strategy = get_strategy("FedAvg", params)
        plan = RoundPlan(
            strategy=strategy,
            start=lambda _: Start({"w": np.zeros(SIZE, dtype=np.float32)}),
            seed=0,
        )
        probe.seen["result"] = run_rounds(ctx, plan)

    probe.workflow = workflow
    fits: dict[str, Fit] = {"good-1": honest, "good-2": honest, **bad}
    sid = helpers.create_session(api, package="probe", clients=len(fits))
    members = [silos(sid, name, ROWS) for name in fits]
    for silo in members:
        assert silo.join().status_code == 201
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=answer, args=(s, helpers, fits[s.name], results)) for s in members
    ]
    for thread in threads:
        thread.start()
    assert probe.done.wait(30)
    for thread in threads:
        thread.join(timeout=30)
    return sid, results


def silo_name(defect: str) -> str:
    return "bad-" + defect.replace(" ", "-")


def session_of(api: httpx.Client, sid: str, helpers: Any) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        session: dict[str, Any] = api.get(f"/sessions/{sid}").json()
        return session if session["status"] in {"completed", "failed"} else None

    found: dict[str, Any] = helpers.wait_until(ended, what="the end of the session")
    return found


def logs_of(api: httpx.Client, sid: str) -> list[str]:
    return [line["message"] for line in api.get(f"/sessions/{sid}/logs").json()]


def test_each_defective_reply_is_one_failed_task_and_the_honest_clients_complete_the_round(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    # One session, one silo per defect: eleven failed tasks in one round are eleven failures.
    bad = {silo_name(defect): fit for defect, (fit, _) in DEFECTS.items()}
    sid, results = run_session(api, silos, helpers, probe, bad, min_fit_clients=2)
    session = session_of(api, sid, helpers)
    assert session["status"] == "completed", session
    assert results == dict.fromkeys(["good-1", "good-2", *bad], "completed")
    # The model is the honest clients' mean: no bad reply reached the strategy.
    np.testing.assert_array_equal(probe.seen["result"].arrays["w"], np.ones(SIZE, np.float32))
    store = thread_server.app_state.store
    names = {p.id: p.client_name for p in store.list_participants(sid)}
    failed = {names[t.participant_id]: t for t in store.list_tasks(sid) if t.status == "failed"}
    assert sorted(failed) == sorted(bad)
    logs = logs_of(api, sid)
    for defect, (_, expected) in DEFECTS.items():
        name = silo_name(defect)
        # One failed fit task, with the reason on its record ...
        assert failed[name].kind == "fit"
        assert (failed[name].error or "").startswith(f"fit reply (round 1) rejected: {expected}")
        # ... and one line of the log, at rejection, naming client, field and expectation.
        lines = [line for line in logs if line.startswith(f"client {name!r}: ")]
        assert len(lines) == 1, (defect, logs)
        assert lines[0].startswith(f"client {name!r}: fit reply (round 1) rejected: {expected}")
    # Shapes, dtypes and counts, never array values; no raw Python message.
    for line in logs:
        assert str(SECRET) not in line and "Traceback" not in line and "Error" not in line
    metrics = api.get(f"/sessions/{sid}/metrics").json()
    assert metrics["federated_metrics"][0]["loss"] == pytest.approx(1.0)


def test_too_few_valid_replies_for_min_fit_clients_fail_the_session_with_the_reason(
    api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    bad_fit, _ = DEFECTS["float count 1e9"]
    sid, results = run_session(api, silos, helpers, probe, {"bad": bad_fit}, min_fit_clients=3)
    session = session_of(api, sid, helpers)
    assert session["status"] == "failed"
    assert session["failure_reason"] == (
        "round 1: task 'fit' got 2 successful replies; at least 3 needed (bad: fit reply "
        "(round 1) rejected: meta['num_examples'] is 1e+09 (a float); expected an integer in "
        "[1, 5] (the train_rows declared on joining))"
    )
    assert "result" not in probe.seen
    assert set(results.values()) == {"failed"}


def test_without_accept_failures_one_defective_reply_fails_the_session_naming_it(
    api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    bad_fit, expected = DEFECTS["NaN"]
    sid, _ = run_session(api, silos, helpers, probe, {"bad": bad_fit}, accept_failures=False)
    session = session_of(api, sid, helpers)
    assert session["status"] == "failed"
    reason = session["failure_reason"]
    assert reason.startswith("round 1: task 'fit' failed and accept_failures is false: bad: ")
    assert expected in reason
