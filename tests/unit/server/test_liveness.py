"""Liveness and an unwritable store, through the real thread server (issue 11, items 2, 3).

Liveness: raw-HTTP participants (``RawSilo``) against the probe package, with a grace period
of :data:`GRACE` seconds and a task timeout of a minute: a participant that stops polling is
offline within grace + one sweep, its outstanding task fails then (not at the timeout), the
next round does not ask it, and a rejoin makes it live again; a participant that heartbeats
while it works on a task longer than the grace stays live.

Store: the server's data dir on a small tmpfs (mounted for the test; skipped where mounting
is not allowed), filled with a file until the disk is full -- a real full disk, no stand-in
for the store. A session whose checkpoint cannot be written is not failed: ``/healthz``
answers 503 with the reason; once space returns the session resumes from its last checkpoint
and completes; if space does not return within ``store_retry_timeout`` the engine gives up
(``serve`` then exits non-zero). API writes that meet the full disk answer 503 with a stable
``detail``, never a bare 500.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedsilo.client.connection import Connection, TaskFrame
from fedsilo.client.keys import KeyPair
from fedsilo.federation import Failure, Outcome, Reply, SessionContext, Task
from fedsilo.http import ApiClient
from fedsilo.server.engine.health import STORE_UNAVAILABLE_DETAIL
from fedsilo.server.engine.liveness import LivenessSweep
from fedsilo.server.settings import Settings
from fedsilo.strategies import get_strategy
from fedsilo.wire import (
    HEARTBEAT_HEADER,
    DatasetSummary,
    ParticipantJoin,
    ReplyEnvelope,
    SessionEnded,
    encode_frame,
)
from fedsilo.workflows import RoundPlan, Start, run_rounds

#: the grace period of these tests (seconds); the sweep runs every GRACE / 4
GRACE = 2.0
SWEEP = GRACE / 4
#: slack for a loaded machine (2 cores shared by several test runs)
SLACK = 3.0


@pytest.fixture
def short_grace() -> float:
    """Requested by the tests about liveness: the server then runs with a grace of GRACE s
    (the others keep the default 30 s, so a loaded machine's slow poll is no death)."""
    return GRACE


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip() or made.returncode}")
    try:
        yield mount
    finally:
        with contextlib.suppress(FileNotFoundError):
            (mount / "filler").unlink()
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def server_settings(
    request: pytest.FixtureRequest, server_settings: Settings, tmp_path: Path
) -> Settings:
    """The shared settings, with a short grace for the liveness tests; a store test puts the
    data dir on its tmpfs (SQLite only: the memory store writes no file, PostgreSQL's disk is
    elsewhere)."""
    update: dict[str, Any] = {}
    if "short_grace" in request.fixturenames:
        update["participant_grace"] = GRACE
    if "tmpfs_dir" in request.fixturenames:
        if server_settings.db_url is not None:
            pytest.skip("the full-disk tests are about the SQLite file under the data dir")
        update["data_dir"] = request.getfixturevalue("tmpfs_dir") / "server"
        update["store_retry_timeout"] = 3.0
    return server_settings.model_copy(update=update)


def logs_of(api: httpx.Client, sid: str) -> list[str]:
    return [line["message"] for line in api.get(f"/sessions/{sid}/logs").json()]


def timed(group: Any) -> list[tuple[Outcome, float]]:
    """A group's outcomes, each with the monotonic time it came out."""
    return [(outcome, time.monotonic()) for outcome in group.outcomes()]


def serve_tasks(silo: Any, helpers: Any, stop: threading.Event) -> None:
    """Answer every task with an empty ok reply until the session ends or ``stop``."""
    while not stop.is_set():
        response = silo.next(wait=0.5)
        if response.status_code == 410:
            return
        if response.status_code == 200:
            task_id, _, _ = helpers.task_of(response)
            silo.reply(task_id, {}, {"num_examples": 1})


# ------------------------------------------------------------------------- liveness


def test_a_silent_participant_is_offline_within_grace_its_task_fails_and_it_is_skipped(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any, short_grace: float
) -> None:
    rejoined = threading.Event()

    def workflow(ctx: SessionContext) -> None:
        clients = ctx.wait_for_clients(2)
        for server_round in (1, 2):
            group = ctx.send([Task(to=p, kind="fit", round=server_round) for p in clients])
            probe.seen[server_round] = (time.monotonic(), timed(group))
        assert rejoined.wait(20)
        group = ctx.send([Task(to=p, kind="fit", round=3) for p in clients])
        probe.seen[3] = (time.monotonic(), timed(group))

    probe.workflow = workflow
    sid = helpers.create_session(api, package="probe", clients=2)
    alive, silent = silos(sid, "alive"), silos(sid, "silent")
    assert alive.join().status_code == 201 and silent.join().status_code == 201
    stop = threading.Event()
    server = threading.Thread(target=serve_tasks, args=(alive, helpers, stop))
    server.start()
    try:
        # The silent silo takes its round-1 task, then neither polls nor replies.
        first = silent.next(wait=10)
        task_id, _, header = helpers.task_of(first)
        went_quiet = time.monotonic()
        assert header.round == 1
        assert float(first.headers[HEARTBEAT_HEADER]) == pytest.approx(GRACE / 3)
        helpers.wait_until(lambda: 2 in probe.seen, what="round 2")

        sent, outcomes = probe.seen[1]
        failed = [(o, at) for o, at in outcomes if isinstance(o, Failure)]
        assert [o.participant.client_name for o, _ in failed] == ["silent"]
        failure, failed_at = failed[0]
        assert failure.cause == "offline"
        assert failure.reason.startswith("client 'silent' offline: no poll for ")
        # Noticed within grace + one sweep of its last poll, not at the one-minute timeout.
        assert GRACE <= failed_at - went_quiet <= GRACE + SWEEP + SLACK
        # Round 2 does not ask it: its task fails at once, the alive silo's completes.
        sent, outcomes = probe.seen[2]
        by_name = {o.participant.client_name: (o, at) for o, at in outcomes}
        skipped, skipped_at = by_name["silent"]
        assert isinstance(skipped, Failure) and skipped.cause == "offline"
        assert skipped_at - sent < 0.5
        assert isinstance(by_name["alive"][0], Reply)
        # Its round-1 task is recorded failed, with the reason.
        store = thread_server.app_state.store
        record = helpers.wait_until(
            lambda: (r := store.get_task(task_id)) is not None and r.status == "failed" and r,
            what="the failed task's record",
        )
        assert record.error.startswith("client 'silent' offline"), record

        # Persisted: the participant list says since when it is offline.
        listed = {p["client_name"]: p for p in api.get(f"/sessions/{sid}/participants").json()}
        assert listed["silent"]["offline_at"] is not None and listed["alive"]["offline_at"] is None

        # A rejoin makes it live: round 3 reaches it (its first task since round 1).
        assert silent.join(credential=silent.credential).status_code == 201
        back = "client 'silent' is back online; its next tasks reach it"
        helpers.wait_until(lambda: back in logs_of(api, sid), what="the log of its return")
        listed = {p["client_name"]: p for p in api.get(f"/sessions/{sid}/participants").json()}
        assert listed["silent"]["offline_at"] is None
        rejoined.set()
        task_id, _, header = helpers.task_of(silent.next(wait=10))
        assert header.round == 3
        assert silent.reply(task_id, {}, {}).status_code == 200
        assert probe.done.wait(20)
        _, outcomes = probe.seen[3]
        assert all(isinstance(o, Reply) for o, _ in outcomes), outcomes
    finally:
        stop.set()
        server.join(timeout=10)
    logs = logs_of(api, sid)
    offline = [line for line in logs if line.startswith("client 'silent' offline")]
    assert len(offline) == 1, logs
    assert offline[0].endswith("; its 1 outstanding task failed"), offline


def test_a_client_that_hangs_up_a_long_poll_is_silent_from_then_not_from_the_end_of_its_wait(
    api: httpx.Client, silos: Any, helpers: Any, probe: Any, short_grace: float
) -> None:
    finish = threading.Event()
    probe.workflow = lambda ctx: (ctx.wait_for_clients(1), finish.wait(30))
    sid = helpers.create_session(api, package="probe", clients=1)
    silo = silos(sid, "gone")
    assert silo.join().status_code == 201
    # A 30 s long-poll the client drops after 0.3 s, as a killed process's kernel would.
    with pytest.raises(httpx.ReadTimeout):
        silo.http.get(f"{silo.tasks}/next", params={"wait": 30}, headers=silo.headers, timeout=0.3)
    hung_up = time.monotonic()
    line = helpers.wait_until(
        lambda: next((m for m in logs_of(api, sid) if m.startswith("client 'gone' offline")), None),
        timeout=10,
        what="the offline line",
    )
    assert time.monotonic() - hung_up <= GRACE + SWEEP + SLACK
    assert line.endswith("; no outstanding task"), line
    finish.set()


def test_the_sweep_writes_last_seen_of_the_participants_heard_and_no_poll_writes_it(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    finish = threading.Event()
    probe.workflow = lambda ctx: (ctx.wait_for_clients(2), finish.wait(30))
    sid = helpers.create_session(api, package="probe", clients=2)
    polling, quiet = silos(sid, "polling"), silos(sid, "quiet")
    assert polling.join().status_code == 201 and quiet.join().status_code == 201
    store = thread_server.app_state.store
    joined = {p.client_name: p.last_seen_at for p in store.list_participants(sid)}
    since = time.monotonic()
    assert polling.next(wait=0).status_code == 204
    # the poll itself wrote nothing: the round's path does not touch the database
    assert {p.client_name: p.last_seen_at for p in store.list_participants(sid)} == joined
    LivenessSweep(thread_server.app_state.engine).write_seen(since=since)
    seen = {p.client_name: p.last_seen_at for p in store.list_participants(sid)}
    assert seen["polling"] > joined["polling"] and seen["quiet"] == joined["quiet"]
    finish.set()


def test_a_client_that_heartbeats_through_a_long_task_stays_live(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any, short_grace: float
) -> None:
    def workflow(ctx: SessionContext) -> None:
        clients = ctx.wait_for_clients(1)
        probe.seen["outcomes"] = list(ctx.send([Task(to=clients[0], kind="fit")]).outcomes())

    probe.workflow = workflow
    sid = helpers.create_session(api, package="probe", clients=1)
    slow = silos(sid, "slow")
    assert slow.join().status_code == 201
    response = slow.next(wait=10)
    task_id, _, _ = helpers.task_of(response)
    interval = float(response.headers[HEARTBEAT_HEADER])
    # Three grace periods of "training", heartbeating as the frame's header asks.
    beat = f"/sessions/{sid}/participants/{slow.id}/heartbeat"
    until = time.monotonic() + 3 * GRACE
    while time.monotonic() < until:
        assert slow.http.post(beat, headers=slow.headers).status_code == 204
        time.sleep(interval)
    assert slow.reply(task_id, {}, {"num_examples": 1}).status_code == 200
    assert probe.done.wait(10)
    assert [type(o) for o in probe.seen["outcomes"]] == [Reply]
    assert not [line for line in logs_of(api, sid) if "offline" in line]


def test_the_client_connection_heartbeats_while_it_works_on_a_long_task(
    thread_server: Any, api: httpx.Client, helpers: Any, probe: Any, short_grace: float
) -> None:
    """fedsilo.client's own Connection (not RawSilo): a task held three grace periods in
    ``connection.working`` is answered, and the participant never goes offline."""

    def workflow(ctx: SessionContext) -> None:
        clients = ctx.wait_for_clients(1)
        probe.seen["outcomes"] = list(ctx.send([Task(to=clients[0], kind="fit")]).outcomes())

    probe.workflow = workflow
    sid = helpers.create_session(api, package="probe", clients=1)
    lines: list[str] = []
    with ApiClient(thread_server.url, thread_server.token) as http:
        connection = Connection(http, sid, poll_wait=5, reconnect_timeout=10, emit=lines.append)
        summary = DatasetSummary(
            train_rows=3, test_rows=0, columns=[{"name": "a", "dtype": "float64"}]
        )
        body = ParticipantJoin(
            client_name="patient", dataset=summary, public_key=KeyPair.generate().public_text
        )
        connection.join(body, None)
        delivery = connection.next_task()
        assert isinstance(delivery, TaskFrame)
        assert delivery.heartbeat == pytest.approx(GRACE / 3)
        with connection.working(delivery):
            time.sleep(3 * GRACE)  # a long local fit
            frame = encode_frame({}, ReplyEnvelope(meta={"num_examples": 1}))
            ended = connection.reply(delivery.task_id, frame)
        assert isinstance(ended, SessionEnded) and ended.status == "completed", ended
    assert [type(o) for o in probe.seen["outcomes"]] == [Reply]
    assert not [line for line in logs_of(api, sid) if "offline" in line]
    assert lines == []


def test_a_heartbeat_needs_the_participant_credential_and_says_when_the_session_ended(
    api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    finish = threading.Event()
    probe.workflow = lambda ctx: (ctx.wait_for_clients(1), finish.wait(10))
    sid = helpers.create_session(api, package="probe", clients=1)
    silo = silos(sid, "one")
    assert silo.join().status_code == 201
    beat = f"/sessions/{sid}/participants/{silo.id}/heartbeat"
    assert silo.http.post(beat).status_code == 403
    assert silo.http.post(beat, headers=silo.headers).status_code == 204
    finish.set()
    assert probe.done.wait(10)
    helpers.wait_until(lambda: api.get(f"/sessions/{sid}").json()["status"] == "completed")
    ended = silo.http.post(beat, headers=silo.headers)
    assert ended.status_code == 410 and ended.json()["status"] == "completed"


def test_the_round_loop_goes_on_without_a_dead_client_when_min_fit_clients_allows(
    api: httpx.Client, silos: Any, helpers: Any, probe: Any, short_grace: float
) -> None:
    def workflow(ctx: SessionContext) -> None:
        strategy = get_strategy(
            "FedAvg", {"min_fit_clients": 2, "min_eval_clients": 2, "accept_failures": True}
        )
        start = Start({"w": np.zeros(2, dtype=np.float32)})
        probe.seen["result"] = run_rounds(ctx, RoundPlan(strategy, lambda _: start, seed=0))

    probe.workflow = workflow
    sid = helpers.create_session(api, package="probe", clients=3, rounds=3)
    members = [silos(sid, name) for name in ("a", "b", "dies")]
    for silo in members:
        assert silo.join().status_code == 201
    stop = threading.Event()

    def fit_and_evaluate(silo: Any, rounds: int | None) -> None:
        answered = 0
        while not stop.is_set():
            response = silo.next(wait=0.5)
            if response.status_code == 410:
                return
            if response.status_code != 200:
                continue
            task_id, arrays, header = helpers.task_of(response)
            if header.kind == "fit" and rounds is not None and header.round > rounds:
                return  # dies holding its round-2 fit task
            if header.kind == "fit":
                silo.reply(task_id, {"w": arrays["w"] + 1}, {"num_examples": silo.rows})
            else:
                silo.reply(task_id, {}, {"test_loss": 1.0, "test_num_examples": silo.rows})
            answered += 1

    threads = [
        threading.Thread(target=fit_and_evaluate, args=(silo, 1 if silo.name == "dies" else None))
        for silo in members
    ]
    for thread in threads:
        thread.start()
    try:
        assert probe.done.wait(30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    session = api.get(f"/sessions/{sid}").json()
    assert session["status"] == "completed", session
    np.testing.assert_array_equal(probe.seen["result"].arrays["w"], np.full(2, 3, np.float32))
    logs = logs_of(api, sid)
    assert [line for line in logs if line.startswith("client 'dies' offline")], logs
    # Round 3 fails its tasks to the dead client at once, and says so.
    assert any(line.startswith("round 3: task 'fit' failed on 1 client(s): dies:") for line in logs)


def test_a_session_sets_its_own_task_timeout_bounded_and_finite(
    api: httpx.Client, silos: Any, helpers: Any, probe: Any
) -> None:
    def workflow(ctx: SessionContext) -> None:
        clients = ctx.wait_for_clients(1)
        started = time.monotonic()
        probe.seen["outcomes"] = list(ctx.send([Task(to=clients[0], kind="fit")]).outcomes())
        probe.seen["waited"] = time.monotonic() - started

    probe.workflow = workflow
    body = {
        "name": "quick",
        "package_name": "probe",
        "min_num_clients": 1,
        "num_rounds": 1,
        "model_config": {},
        "data_config": {},
    }
    for bad in (float("inf"), 0, -1, True, "60", 7 * 86_400 + 1):
        refused = api.post(
            "/sessions",
            content=json.dumps({**body, "task_timeout": bad}),  # Infinity as JSON allows it
            headers={"Content-Type": "application/json"},
        )
        assert refused.status_code == 422, (bad, refused.text)
        assert "task_timeout" in refused.json()["detail"], refused.text
    made = api.post("/sessions", json={**body, "task_timeout": 0.5})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    assert api.get(f"/sessions/{sid}").json()["task_timeout"] == 0.5
    assert api.post(f"/sessions/{sid}/start").status_code == 200
    slow = silos(sid, "slow")
    assert slow.join().status_code == 201
    response = slow.next(wait=10)
    helpers.task_of(response)
    # Live (it heartbeats) but it never answers: the session's 0.5 s, not the server's 60 s.
    beat = f"/sessions/{sid}/participants/{slow.id}/heartbeat"
    while not probe.done.is_set():
        slow.http.post(beat, headers=slow.headers)
        probe.done.wait(0.1)
    (outcome,) = probe.seen["outcomes"]
    assert isinstance(outcome, Failure) and outcome.cause == "timeout", outcome
    assert outcome.reason == "no reply within 0.5 s"
    assert probe.seen["waited"] < 5


# ---------------------------------------------------------------------------- store


def fill(mount: Path) -> None:
    """Write a file until the tmpfs is full (unbuffered: nothing is left to flush)."""
    size = 1 << 16
    with (mount / "filler").open("wb", buffering=0) as handle:
        while size:
            try:
                handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                size //= 2


def checkpointing_workflow(probe: Any, rounds: int, pace: threading.Event) -> Any:
    """One fit task and one checkpoint a round, from the last checkpoint on; each round
    after the first waits for ``pace``."""

    def workflow(ctx: SessionContext) -> None:
        clients = ctx.wait_for_clients(1)
        restored = ctx.restore()
        done = restored.round if restored is not None else 0
        for server_round in range(done + 1, rounds + 1):
            if server_round > 1:
                assert pace.wait(30)
            list(ctx.send([Task(to=clients[0], kind="fit", round=server_round)]).outcomes())
            ctx.checkpoint(server_round, {"w": np.full(4096, server_round, np.float32)}, {})
            probe.seen[server_round] = True
        ctx.save_model({"w": np.zeros(1, np.float32)}, {}, rounds)

    return workflow


def healthz(thread_server: Any) -> httpx.Response:
    return httpx.get(thread_server.url + "/healthz", timeout=10)


def test_a_full_disk_makes_the_server_unhealthy_and_the_session_resumes_when_space_returns(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any, tmpfs_dir: Path
) -> None:
    pace = threading.Event()
    probe.workflow = checkpointing_workflow(probe, rounds=3, pace=pace)
    sid = helpers.create_session(api, package="probe", clients=1, rounds=3)
    silo = silos(sid, "one")
    assert silo.join().status_code == 201
    stop = threading.Event()
    server = threading.Thread(target=serve_tasks, args=(silo, helpers, stop))
    server.start()
    try:
        helpers.wait_until(lambda: 1 in probe.seen, what="round 1")
        assert healthz(thread_server).status_code == 200
        fill(tmpfs_dir)
        pace.set()  # round 2's checkpoint meets the full disk
        unhealthy = helpers.wait_until(
            lambda: (r := healthz(thread_server)).status_code == 503 and r, what="503"
        )
        detail = unhealthy.json()["detail"]
        assert detail.startswith("Unhealthy: the state store refuses writes (")
        assert "No space left on device" in detail or "full" in detail, detail
        # Not failed for a full disk: still running, to resume.
        assert api.get(f"/sessions/{sid}").json()["status"] == "running"
        (tmpfs_dir / "filler").unlink()
        helpers.wait_until(
            lambda: api.get(f"/sessions/{sid}").json()["status"] == "completed",
            what="the session's completion",
        )
    finally:
        stop.set()
        server.join(timeout=10)
    assert healthz(thread_server).status_code == 200
    logs = logs_of(api, sid)
    assert any("resumed from the last checkpoint" in line for line in logs), logs
    assert "resuming from the checkpoint of round 1" in logs, logs


def test_a_disk_that_stays_full_makes_the_engine_give_up_and_api_writes_answer_503(
    thread_server: Any, api: httpx.Client, silos: Any, helpers: Any, probe: Any, tmpfs_dir: Path
) -> None:
    pace = threading.Event()
    probe.workflow = checkpointing_workflow(probe, rounds=3, pace=pace)
    sid = helpers.create_session(api, package="probe", clients=1, rounds=3)
    silo = silos(sid, "one")
    assert silo.join().status_code == 201
    stop = threading.Event()
    server = threading.Thread(target=serve_tasks, args=(silo, helpers, stop))
    server.start()
    engine = thread_server.app_state.engine
    try:
        helpers.wait_until(lambda: 1 in probe.seen, what="round 1")
        fill(tmpfs_dir)
        pace.set()
        # store_retry_timeout is 3 s: then the engine gives up (serve() exits non-zero).
        assert engine.health.fatal.wait(20)
        detail = healthz(thread_server).json()["detail"]
        assert detail.startswith("Unhealthy: giving up: the state store refuses writes"), detail
        # API writes meeting the full disk: 503 with the stable detail, never a bare 500.
        statuses = set()
        for number in range(200):
            body = {
                "name": f"s{number}",
                "description": "x" * 4000,
                "package_name": "probe",
                "min_num_clients": 1,
                "num_rounds": 1,
                "model_config": {},
                "data_config": {},
            }
            response = api.post("/sessions", json=body)
            statuses.add(response.status_code)
            if response.status_code == 503:
                assert response.json() == {"detail": STORE_UNAVAILABLE_DETAIL}
                break
        assert 503 in statuses and 500 not in statuses, statuses
    finally:
        stop.set()
        server.join(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            (tmpfs_dir / "filler").unlink()
    # The session was never marked failed: a restarted server resumes it.
    assert api.get(f"/sessions/{sid}").json()["status"] == "running"
    assert os.path.exists(tmpfs_dir / "server")
