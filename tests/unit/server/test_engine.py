"""The session engine through real HTTP: task delivery, failure policy, cancel, join rules.

Uses the diagnostic ``echo`` package so these tests exercise the platform, not a model.
Clients are the real :class:`ClientRuntime` in threads (a process each in tests/e2e).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from fedsilo.client.runtime import ClientRuntime
from fedsilo.http import ApiClient
from fedsilo.server.tables import TaskRow
from fedsilo.wire import (
    DatasetSummary,
    ReplyEnvelope,
    SessionStatus,
    TaskEnvelope,
    decode_frame,
    encode_frame,
)

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def api(thread_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=thread_server.url + "/api/v1",
        headers={"Authorization": f"Bearer {thread_server.token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def table(tmp_path: Path) -> str:
    path = tmp_path / "silo.csv"
    pd.DataFrame({"a": np.arange(5.0), "b": np.ones(5)}).to_csv(path, index=False)
    return str(path)


def echo_session(api: httpx.Client, clients: int = 2, rounds: int = 3, **config: Any) -> str:
    body = {
        "name": "echo",
        "package_name": "echo",
        "min_num_clients": clients,
        "num_rounds": rounds,
        "model_config": {"payload_size": 4, **config},
        "data_config": {"columns": ["a"]},
    }
    response = api.post("/sessions", json=body)
    assert response.status_code == 201, response.text
    sid: str = response.json()["id"]
    assert api.post(f"/sessions/{sid}/start").json()["status"] == "pending"
    return sid


def run_client(server: Any, sid: str, name: str, path: str, results: dict[str, Any]) -> None:
    api = ApiClient(server.url, server.token)
    runtime = ClientRuntime(api, sid, name, path, None, 8, poll_wait=5, on_event=lambda _: None)
    try:
        results[name] = runtime.run()
    except Exception as exc:  # reported to the test thread
        results[name] = exc
    finally:
        api.close()


def start_clients(
    server: Any, sid: str, names: list[str], path: str
) -> tuple[list[threading.Thread], dict[str, Any]]:
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=run_client, args=(server, sid, n, path, results), daemon=True)
        for n in names
    ]
    for thread in threads:
        thread.start()
    return threads, results


def wait_status(
    api: httpx.Client, sid: str, statuses: set[str], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session: dict[str, Any] = api.get(f"/sessions/{sid}").json()
        if session["status"] in statuses:
            return session
        time.sleep(0.05)
    raise AssertionError(f"session {sid} never reached {statuses}")


def raw_join(api: httpx.Client, sid: str, name: str) -> str:
    summary = DatasetSummary(train_rows=3, test_rows=0, columns=[{"name": "a", "dtype": "float64"}])
    response = api.post(
        f"/sessions/{sid}/participants",
        json={"client_name": name, "dataset": summary.model_dump()},
    )
    assert response.status_code == 201, response.text
    pid: str = response.json()["id"]
    return pid


def raw_next(api: httpx.Client, sid: str, pid: str) -> tuple[dict[str, np.ndarray], TaskEnvelope]:
    response = api.get(f"/sessions/{sid}/participants/{pid}/tasks/next", params={"wait": 10})
    assert response.status_code == 200, response.text
    arrays, header = decode_frame(response.content)
    return arrays, TaskEnvelope.model_validate(header)


def test_a_session_runs_to_completion_with_real_clients(
    thread_server: Any, api: httpx.Client, table: str
) -> None:
    sid = echo_session(api, rounds=4)
    threads, results = start_clients(thread_server, sid, ["silo-a", "silo-b"], table)
    for thread in threads:
        thread.join(timeout=60)
    assert results == {"silo-a": SessionStatus.completed, "silo-b": SessionStatus.completed}

    session = api.get(f"/sessions/{sid}").json()
    assert (session["status"], session["round"]) == ("completed", 4)
    metrics = api.get(f"/sessions/{sid}/metrics").json()
    assert metrics["session_id"] == sid
    assert len(metrics["federated_metrics"]) == 4
    assert all(m["replies"] == 2.0 for m in metrics["federated_metrics"])
    assert [set(r) for r in metrics["client_metrics"]] == [{"silo-a", "silo-b"}] * 4
    assert metrics["client_metrics"][0]["silo-a"]["num_examples"] == 5.0
    # echo adds 1 per round to the average of identical echoes: 4 rounds -> all fours
    arrays, header = decode_frame(api.get(f"/sessions/{sid}/model").content)
    np.testing.assert_array_equal(arrays["x"], np.full(4, 4.0, dtype=np.float32))
    assert header["package_name"] == "echo" and header["round"] == 4
    # every task of the session is on record as answered, with its reply's meta
    with thread_server.app_state.db.session() as s:
        tasks = s.scalars(select(TaskRow).where(TaskRow.session_id == sid)).all()
        assert len(tasks) == 8
        assert {t.status for t in tasks} == {"done"}
        assert all(t.reply_meta == {"num_examples": 5} and t.replied_at for t in tasks)


def test_a_lost_delivery_is_sent_again_on_the_next_poll(api: httpx.Client) -> None:
    sid = echo_session(api, clients=1, rounds=1)
    pid = raw_join(api, sid, "only")
    _, first = raw_next(api, sid, pid)
    _, again = raw_next(api, sid, pid)
    assert again.id == first.id


def test_malformed_reply_fails_the_task_and_the_session_follows_its_policy(
    thread_server: Any, api: httpx.Client, table: str
) -> None:
    # accept_failures with min_replies=1: the round goes on with the good client
    sid = echo_session(api, clients=2, rounds=1, accept_failures=True, min_replies=1)
    bad = raw_join(api, sid, "broken")
    threads, results = start_clients(thread_server, sid, ["good"], table)
    _, task = raw_next(api, sid, bad)
    response = api.post(
        f"/sessions/{sid}/participants/{bad}/tasks/{task.id}/reply",
        content=b"\x00not a frame at all",
        headers=OCTET,
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Malformed reply:")
    for thread in threads:
        thread.join(timeout=30)
    assert results["good"] == SessionStatus.completed
    assert api.get(f"/sessions/{sid}/metrics").json()["federated_metrics"][0]["replies"] == 1.0
    # a second reply to the failed task is refused as no longer awaited
    again = api.post(
        f"/sessions/{sid}/participants/{bad}/tasks/{task.id}/reply",
        content=encode_frame({}, ReplyEnvelope()),
        headers=OCTET,
    )
    assert again.status_code == 409
    assert again.json()["detail"] == f"Task {task.id} is no longer awaited (it is failed)."


def test_without_accept_failures_a_bad_reply_fails_the_session_and_the_server_lives(
    thread_server: Any, api: httpx.Client
) -> None:
    sid = echo_session(api, clients=1, rounds=3, accept_failures=False)
    pid = raw_join(api, sid, "broken")
    _, task = raw_next(api, sid, pid)
    header_only = encode_frame({}, {"status": "maybe"})  # valid frame, invalid envelope
    response = api.post(
        f"/sessions/{sid}/participants/{pid}/tasks/{task.id}/reply",
        content=header_only,
        headers=OCTET,
    )
    assert response.status_code == 422
    session = wait_status(api, sid, {"failed"})
    assert "accept_failures is false" in session["failure_reason"]
    assert "broken" in session["failure_reason"]
    ended = api.get(f"/sessions/{sid}/participants/{pid}/tasks/next", params={"wait": 1})
    assert ended.status_code == 410
    assert ended.json()["status"] == "failed"
    assert httpx.get(thread_server.url + "/healthz").status_code == 200


def test_a_client_error_reply_is_reported_in_the_failure_reason(api: httpx.Client) -> None:
    sid = echo_session(api, clients=1, rounds=1, accept_failures=True, min_replies=1)
    pid = raw_join(api, sid, "sad")
    _, task = raw_next(api, sid, pid)
    reply = encode_frame({}, ReplyEnvelope(status="error", error="out of memory"))
    response = api.post(
        f"/sessions/{sid}/participants/{pid}/tasks/{task.id}/reply", content=reply, headers=OCTET
    )
    assert response.status_code == 200
    session = wait_status(api, sid, {"failed"})
    assert "out of memory" in session["failure_reason"]


def test_joining_an_ended_session_is_refused(api: httpx.Client) -> None:
    sid = echo_session(api, clients=1, rounds=1)
    api.post(f"/sessions/{sid}/cancel")
    summary = {"train_rows": 1, "test_rows": 0, "columns": [{"name": "a", "dtype": "float64"}]}
    response = api.post(
        f"/sessions/{sid}/participants", json={"client_name": "late", "dataset": summary}
    )
    assert response.status_code == 409
    assert response.json()["detail"] == f"Cannot join session {sid}: it is canceled."


def test_joining_without_the_required_columns_is_refused(api: httpx.Client) -> None:
    sid = echo_session(api, clients=1, rounds=1)
    summary = {"train_rows": 1, "test_rows": 0, "columns": [{"name": "b", "dtype": "float64"}]}
    response = api.post(
        f"/sessions/{sid}/participants", json={"client_name": "x", "dataset": summary}
    )
    assert response.status_code == 422
    assert "missing required column(s) ['a']" in response.json()["detail"]


def test_cancel_wakes_waiting_clients_with_410(api: httpx.Client) -> None:
    sid = echo_session(api, clients=2, rounds=1)  # one client: the session stays pending
    pid = raw_join(api, sid, "waiting")
    outcome: dict[str, Any] = {}

    def poll() -> None:
        began = time.monotonic()
        response = api.get(f"/sessions/{sid}/participants/{pid}/tasks/next", params={"wait": 20})
        outcome["status"], outcome["elapsed"] = response.status_code, time.monotonic() - began
        outcome["body"] = response.json()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    assert api.post(f"/sessions/{sid}/cancel").json()["status"] == "canceled"
    thread.join(timeout=10)
    assert outcome["status"] == 410
    assert outcome["body"]["status"] == "canceled"
    assert outcome["elapsed"] < 10  # woken by the cancel, not by the 20 s wait running out
