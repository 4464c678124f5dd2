"""The session engine through real HTTP: task delivery, failure policy, cancel, join rules.

Uses the diagnostic ``echo`` package so these tests exercise the platform, not a model.
Participants are raw httpx clients (tests/unit/server/conftest.py), one thread each.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import numpy as np

from fedsilo.wire import ReplyEnvelope, decode_frame, encode_frame


def echo_loop(silo: Any, helpers: Any, results: dict[str, Any]) -> None:
    """Answer every echo task with its own arrays, in one exchange per task (reply?wait)."""
    try:
        response = silo.next()
        while response.status_code in (200, 204):
            if response.status_code == 204:
                response = silo.next()
                continue
            task_id, arrays, _ = helpers.task_of(response)
            response = silo.reply(task_id, arrays, {"num_examples": silo.rows}, wait=10)
        results[silo.name] = response.json()["status"]
    except Exception as exc:  # reported to the test thread
        results[silo.name] = exc


def run_silos(silos: list[Any], helpers: Any) -> tuple[list[threading.Thread], dict[str, Any]]:
    results: dict[str, Any] = {}
    threads = [threading.Thread(target=echo_loop, args=(s, helpers, results)) for s in silos]
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


def test_a_session_runs_to_completion_with_one_exchange_per_round(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, rounds=4, payload_size=4)
    members = [silos(sid, "silo-a", rows=5), silos(sid, "silo-b", rows=5)]
    for silo in members:
        assert silo.join().status_code == 201
    threads, results = run_silos(members, helpers)
    for thread in threads:
        thread.join(timeout=60)
    assert results == {"silo-a": "completed", "silo-b": "completed"}

    session = api.get(f"/sessions/{sid}").json()
    assert (session["status"], session["round"]) == ("completed", 4)
    metrics = api.get(f"/sessions/{sid}/metrics").json()
    assert len(metrics["federated_metrics"]) == 4
    assert all(m["replies"] == 2.0 for m in metrics["federated_metrics"])
    assert [set(r) for r in metrics["client_metrics"]] == [{"silo-a", "silo-b"}] * 4
    assert metrics["client_metrics"][0]["silo-a"]["num_examples"] == 5.0
    # echo adds 1 per round to the average of identical echoes: 4 rounds -> all fours
    arrays, header = decode_frame(api.get(f"/sessions/{sid}/model").content)
    np.testing.assert_array_equal(arrays["x"], np.full(4, 4.0, dtype=np.float32))
    assert header["package_name"] == "echo" and header["round"] == 4
    # every task of the session is on record as answered, with its reply's meta
    store = thread_server.app_state.store
    tasks = store.list_tasks(sid)
    assert len(tasks) == 8
    assert {t.status for t in tasks} == {"done"}
    assert all(t.reply_meta == {"num_examples": 5} and t.replied_at for t in tasks)
    assert all(t.delivered_at is not None for t in tasks)
    assert [r.round for r in store.list_rounds(sid)] == [1, 2, 3, 4]


def test_a_lost_delivery_is_sent_again_on_the_next_poll(
    api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=1, payload_size=3)
    silo = silos(sid, "only")
    silo.join()
    first, arrays, header = helpers.task_of(silo.next())
    again, arrays_again, _ = helpers.task_of(silo.next())
    assert again == first
    assert header.kind == "echo" and header.round == 1 and header.sealed_from is None
    np.testing.assert_array_equal(arrays["x"], arrays_again["x"])


def test_a_reply_without_wait_is_acknowledged(api: httpx.Client, silos: Any, helpers: Any) -> None:
    sid = helpers.create_session(api, clients=1, rounds=2, payload_size=2)
    silo = silos(sid, "only")
    silo.join()
    task_id, arrays, _ = helpers.task_of(silo.next())
    response = silo.reply(task_id, arrays, {"num_examples": 3})
    assert response.json() == {"task_id": task_id, "accepted": True}
    # with wait, the reply's answer is the next task (round 2), as tasks/next would give it
    task_id, arrays, header = helpers.task_of(silo.next())
    assert header.round == 2
    ended = silo.reply(task_id, arrays, {"num_examples": 3}, wait=5)
    assert ended.status_code == 410
    assert ended.json()["status"] == "completed"


def test_reply_with_wait_answers_204_when_no_task_comes(
    api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=2, payload_size=2)
    fast, slow = silos(sid, "fast"), silos(sid, "slow")
    fast.join(), slow.join()
    task_id, arrays, _ = helpers.task_of(fast.next())
    response = fast.reply(task_id, arrays, {"num_examples": 3}, wait=0.2)
    assert response.status_code == 204  # the round waits for "slow"


def test_malformed_reply_fails_the_task_and_the_session_follows_its_policy(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any
) -> None:
    # accept_failures with min_replies=1: the round goes on with the good client
    sid = helpers.create_session(
        api, clients=2, payload_size=4, accept_failures=True, min_replies=1
    )
    bad, good = silos(sid, "broken"), silos(sid, "good")
    bad.join(), good.join()
    threads, results = run_silos([good], helpers)
    task_id, _, _ = helpers.task_of(bad.next())
    response = bad.reply(task_id, body=b"\x00not a frame at all")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Malformed reply:")
    for thread in threads:
        thread.join(timeout=30)
    assert results["good"] == "completed"
    assert api.get(f"/sessions/{sid}/metrics").json()["federated_metrics"][0]["replies"] == 1.0
    # a second reply to the failed task is refused as no longer awaited
    again = bad.reply(task_id, body=encode_frame({}, ReplyEnvelope()))
    assert again.status_code == 409
    assert again.json()["detail"] == f"Task {task_id} is no longer awaited (it is failed)."
    # a task the server has no record of is not awaited either (its record may have been lost
    # with a killed server: the client drops the reply and polls on)
    unknown = bad.reply("0123456789abcdef", body=encode_frame({}, ReplyEnvelope()))
    assert unknown.status_code == 409
    assert unknown.json()["detail"] == (
        "Task 0123456789abcdef is not awaited: this server has no record of it (unknown, or "
        "sent just before the server stopped)."
    )
    # another participant's task is not found for this one
    tasks = thread_server.app_state.store.list_tasks(sid)
    other = next(t.id for t in tasks if t.participant_id == good.id)
    assert bad.reply(other, body=encode_frame({}, ReplyEnvelope())).status_code == 404


def test_without_accept_failures_a_bad_reply_fails_the_session_and_the_server_lives(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=1, rounds=3, payload_size=4, accept_failures=False)
    silo = silos(sid, "broken")
    silo.join()
    task_id, _, _ = helpers.task_of(silo.next())
    header_only = encode_frame({}, {"status": "maybe"})  # valid frame, invalid envelope
    response = silo.reply(task_id, body=header_only)
    assert response.status_code == 422
    session = wait_status(api, sid, {"failed"})
    assert "accept_failures is false" in session["failure_reason"]
    assert "broken" in session["failure_reason"]
    ended = silo.next(wait=1)
    assert ended.status_code == 410
    assert ended.json()["status"] == "failed"
    assert httpx.get(thread_server.url + "/healthz").status_code == 200


def test_a_client_error_reply_is_reported_in_the_failure_reason(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(
        api, clients=1, payload_size=4, accept_failures=True, min_replies=1
    )
    silo = silos(sid, "sad")
    silo.join()
    task_id, _, _ = helpers.task_of(silo.next())
    response = silo.reply(task_id, meta={"where": "fit"}, status="error", error="out of memory")
    assert response.status_code == 200
    session = wait_status(api, sid, {"failed"})
    assert "out of memory" in session["failure_reason"]
    task = thread_server.app_state.store.get_task(task_id)
    assert (task.status, task.reply_meta) == ("failed", {"where": "fit"})


def test_joining_an_ended_session_is_refused(api: httpx.Client, silos: Any, helpers: Any) -> None:
    sid = helpers.create_session(api, clients=1)
    api.post(f"/sessions/{sid}/cancel")
    response = silos(sid, "late").join()
    assert response.status_code == 409
    assert response.json()["detail"] == f"Cannot join session {sid}: it is canceled."


def test_joining_without_the_required_columns_is_refused(
    api: httpx.Client, silos: Any, helpers: Any
) -> None:
    sid = helpers.create_session(api, clients=1)
    dataset = {"train_rows": 1, "test_rows": 0, "columns": [{"name": "b", "dtype": "float64"}]}
    response = silos(sid, "x").join(dataset=dataset)
    assert response.status_code == 422
    assert "missing required column(s) ['a']" in response.json()["detail"]


def test_cancel_wakes_waiting_clients_with_410(api: httpx.Client, silos: Any, helpers: Any) -> None:
    sid = helpers.create_session(api, clients=2)  # one client: the session stays pending
    silo = silos(sid, "waiting")
    silo.join()
    outcome: dict[str, Any] = {}

    def poll() -> None:
        began = time.monotonic()
        response = silo.next(wait=20)
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
