"""ClientRuntime against a scripted endpoint that speaks protocol v2 (wire.py), using `echo`.

The endpoint scripts the network (refused connections, a proxy answering 503, a reply the
server no longer awaits), which a real server cannot be made to do on cue; the same protocol
against the real server is in test_client_participant.py.
"""

from __future__ import annotations

import json
import secrets
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from fedsilo.client.keys import KeyPair
from fedsilo.client.mods import Handler, TaskReply, TaskRequest, accounting
from fedsilo.client.runtime import ClientRuntime
from fedsilo.errors import (
    ConfigError,
    ConflictError,
    DataError,
    NotFoundError,
    PermissionDenied,
    ServerUnavailable,
)
from fedsilo.federation import SEALED_ARRAY
from fedsilo.http import ApiClient
from fedsilo.wire import (
    API_PREFIX,
    OCTET_STREAM,
    PARTICIPANT_HEADER,
    TASK_ID_HEADER,
    ReplyEnvelope,
    SessionPublic,
    SessionStatus,
    TaskPayload,
    decode_frame,
    encode_frame,
)

SID = "0123456789"
PID = "p1"
NOW = datetime(2025, 1, 1, tzinfo=UTC).isoformat()


def session_body(status: str = "running", data_config: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": SID,
        "name": "unit",
        "description": "",
        "kind": "hfl",
        "package_name": "echo",
        "min_num_clients": 1,
        "num_rounds": 2,
        "model_config": {},
        "data_config": data_config if data_config is not None else {"columns": ["x1", "y"]},
        "status": status,
        "round": 0,
        "created_at": NOW,
        "updated_at": NOW,
        **extra,
    }


def task(
    tid: str,
    kind: str = "echo",
    round: int = 1,
    arrays: dict[str, np.ndarray] | None = None,
    sealed_from: str | None = None,
) -> httpx.Response:
    sent = arrays if arrays is not None else {"x": np.arange(4, dtype=np.float32)}
    header = TaskPayload(kind=kind, round=round, meta={"round": round}, sealed_from=sealed_from)
    return httpx.Response(
        200,
        content=encode_frame(sent, header),
        headers={TASK_ID_HEADER: tid, "content-type": OCTET_STREAM},
    )


def ended(status: str, reason: str | None = None) -> httpx.Response:
    return httpx.Response(
        410, json={"detail": "session is over", "status": status, "reason": reason}
    )


Step = httpx.Response | Exception


class SpecServer:
    """Answers a participant's calls; ``deliveries`` scripts what each tasks/next or
    reply?wait=S call gets, in order (the next task rides on the reply's response)."""

    def __init__(
        self,
        deliveries: list[Step],
        session: dict[str, Any] | None = None,
        reply_status: int | None = None,
    ) -> None:
        self.deliveries = list(deliveries)
        self.session = session if session is not None else session_body()
        self.reply_status = reply_status
        self.calls: list[tuple[str, str]] = []
        self.joins: list[dict[str, Any]] = []
        self.replies: list[tuple[str, dict[str, np.ndarray], ReplyEnvelope, bytes]] = []
        self.waits: list[str] = []
        self.credential = ""
        self.names: dict[str, str] = {}  # client name -> credential

    def _next(self) -> httpx.Response:
        step = self.deliveries.pop(0) if self.deliveries else ended("completed")
        if isinstance(step, Exception):
            raise step
        return step

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(API_PREFIX)
        self.calls.append((request.method, path))
        assert request.headers["Authorization"] == "Bearer tok"
        if request.method == "GET" and path == f"/sessions/{SID}":
            if not self.session:
                return httpx.Response(404, json={"detail": "Session not found"})
            return httpx.Response(200, json=self.session)
        if request.method == "POST" and path == f"/sessions/{SID}/participants":
            body = json.loads(request.content)
            self.joins.append(body)
            presented = request.headers.get(PARTICIPANT_HEADER)
            name = body["client_name"]
            known = self.names.get(name)
            if known is not None and presented != known:
                return httpx.Response(403, json={"detail": "credential required"})
            credential = None
            if known is None:
                credential = self.names[name] = secrets.token_urlsafe(16)
            self.credential = self.names[name]
            answer = {
                "id": PID,
                "session_id": SID,
                "client_name": name,
                "dataset": body["dataset"],
                "public_key": body["public_key"],
                "joined_at": NOW,
                "rejoined": known is not None,
                "credential": credential,
            }
            return httpx.Response(201, json=answer)
        base = f"/sessions/{SID}/participants/{PID}"
        if path.startswith(base) and request.headers.get(PARTICIPANT_HEADER) != self.credential:
            return httpx.Response(403, json={"detail": "wrong credential"})
        if request.method == "GET" and path == f"{base}/tasks/next":
            self.waits.append(request.url.params["wait"])
            return self._next()
        if request.method == "POST" and path.endswith("/reply"):
            tid = path.split("/")[-2]
            arrays, header = decode_frame(request.content)
            reply = ReplyEnvelope.model_validate(header)
            self.replies.append((tid, arrays, reply, request.content))
            self.waits.append(request.url.params["wait"])
            if self.reply_status is not None:
                return httpx.Response(self.reply_status, json={"detail": "task is not awaited"})
            return self._next()
        return httpx.Response(404, json={"detail": f"no route {request.method} {path}"})


# ------------------------------------------------------------------------------ tests


@pytest.fixture
def data(tmp_path: Path) -> tuple[str, str]:
    train = tmp_path / "train.parquet"
    test = tmp_path / "test.csv"
    pd.DataFrame({"x1": [0.1, 0.2, 0.3], "y": [0, 1, 0], "other": [1, 2, 3]}).to_parquet(train)
    pd.DataFrame({"x1": [0.4], "y": [1]}).to_csv(test, index=False)
    return str(train), str(test)


def make_runtime(
    server: SpecServer,
    data: tuple[str, str],
    events: list[str] | None = None,
    **kwargs: Any,
) -> ClientRuntime:
    api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(server))
    on_event: Callable[[str], None] | None = events.append if events is not None else None
    kwargs.setdefault("poll_wait", 5.0)
    # each test its own keys, credential and released replies
    kwargs.setdefault("state_dir", Path(data[0]).parent / "client-state")
    return ClientRuntime(api, SID, "client-1", data[0], data[1], 8, on_event=on_event, **kwargs)


def test_run_joins_serves_and_completes_one_exchange_per_task(
    data: tuple[str, str], tmp_path: Path
) -> None:
    server = SpecServer(
        [httpx.Response(204), task("t1"), task("t2", kind="fit"), ended("completed")]
    )
    events: list[str] = []
    runtime = make_runtime(server, data, events, state_dir=tmp_path / "state")

    assert runtime.run() is SessionStatus.completed
    assert runtime.ended is not None and runtime.ended.status is SessionStatus.completed

    # the join carries shapes of the columns the session reads, never values, and a key
    (join,) = server.joins
    assert join["client_name"] == "client-1"
    assert join["dataset"] == {
        "train_rows": 3,
        "test_rows": 1,
        "columns": [{"name": "x1", "dtype": "float64"}, {"name": "y", "dtype": "int64"}],
    }
    key = KeyPair.load_or_create(tmp_path / "state" / "keys" / SID / "client-1.key")
    assert join["public_key"] == key.public_text
    # echo answers its task; an unknown kind is answered with an error, and serving goes on
    (tid1, arrays1, reply1, _), (tid2, arrays2, reply2, _) = server.replies
    assert (tid1, reply1.status, reply1.meta) == ("t1", "ok", {"num_examples": 3})
    np.testing.assert_array_equal(arrays1["x"], np.arange(4, dtype=np.float32))
    assert (tid2, reply2.status, arrays2) == ("t2", "error", {})
    assert reply2.error is not None and "'fit'" in reply2.error
    # one tasks/next for the 204 and one to start; every task after it rode on a reply
    polls = [call for call in server.calls if call[1].endswith("/tasks/next")]
    assert len(polls) == 2
    assert server.waits == ["5"] * 4

    text = "\n".join(events)
    assert f"joined session {SID} as client-1 (participant {PID})" in text
    assert "task t1 (echo, round 1) received" in text
    assert "task t1 (echo, round 1) replied ok in" in text
    assert "task t2 (fit, round 1) failed" in text
    assert f"session {SID} completed" in text


def test_the_credential_is_kept_and_presented_on_rejoin(
    data: tuple[str, str], tmp_path: Path
) -> None:
    server = SpecServer([ended("completed")])
    state = tmp_path / "state"
    make_runtime(server, data, state_dir=state).run()
    stored = state / "keys" / SID / "client-1.credential"
    assert stored.read_text() == server.names["client-1"]
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600

    # a restarted client (a new runtime over the same state dir) rejoins as the same one
    server.deliveries = [ended("completed")]
    events: list[str] = []
    again = make_runtime(server, data, events, state_dir=state)
    assert again.run() is SessionStatus.completed
    assert again.participant is not None and again.participant.rejoined
    assert server.joins[0]["public_key"] == server.joins[1]["public_key"]
    assert any(event.startswith(f"rejoined session {SID}") for event in events)

    # without the state dir the name is refused, with a message that says what to do
    other = make_runtime(server, data, state_dir=tmp_path / "elsewhere")
    with pytest.raises(PermissionDenied, match="a participant of that name exists and no cred"):
        other.run()


def test_failed_session_status_and_reason(data: tuple[str, str]) -> None:
    server = SpecServer([ended("failed", "client-2 sent NaN weights")])
    runtime = make_runtime(server, data)
    assert runtime.run() is SessionStatus.failed
    assert runtime.ended is not None
    assert runtime.ended.reason == "client-2 sent NaN weights"
    assert runtime.context.abort.is_set()


def test_unknown_session(data: tuple[str, str]) -> None:
    server = SpecServer([], session={})
    with pytest.raises(NotFoundError, match=f"Session {SID} does not exist on http://fake"):
        make_runtime(server, data).run()


def test_ended_session_is_refused_before_loading(tmp_path: Path) -> None:
    server = SpecServer([], session=session_body("completed"))
    missing = str(tmp_path / "missing.parquet")
    runtime = make_runtime(server, (missing, missing))
    with pytest.raises(ConflictError, match=f"Cannot join session {SID}: it is completed"):
        runtime.run()
    assert server.calls == [("GET", f"/sessions/{SID}")]


def test_bad_data_is_refused_before_joining_with_problems_of_both_files(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    pd.DataFrame({"x1": ["a", None], "bad name": [1, 2]}).to_csv(train, index=False)
    missing_test = str(tmp_path / "test.parquet")
    server = SpecServer([])
    runtime = make_runtime(server, (str(train), missing_test))

    with pytest.raises(DataError) as info:
        runtime.run()
    problems = info.value.problems
    text = "\n".join(problems)
    assert f"--train-path '{train}': missing required column(s) 'y'" in text
    assert f"--train-path '{train}': column 'x1' is not numeric" in text
    assert f"--train-path '{train}': column 'x1' has 1 null value(s)" in text
    assert f"--train-path '{train}': column name 'bad name' is not allowed" in text
    assert f"--test-path '{missing_test}' does not exist" in text
    assert len(problems) == 5
    # nothing was sent but the refusal (this endpoint has no such route: the client stops
    # with its own error all the same); see tests/unit/server/test_refusals.py
    assert server.calls == [("GET", f"/sessions/{SID}"), ("POST", f"/sessions/{SID}/refusals")]


def test_prepare_is_testable_without_a_server(data: tuple[str, str]) -> None:
    session = SessionPublic.model_validate(session_body(data_config={"columns": ["x1"]}))
    runtime = make_runtime(SpecServer([]), (data[0], data[1]))
    prepared = runtime.prepare(session)
    assert prepared.package.name == "echo"
    assert prepared.dataset.batch_size == 8
    assert prepared.dataset.test is not None and len(prepared.dataset.test) == 1
    assert [column.name for column in prepared.summary.columns] == ["x1"]


def test_without_test_path(data: tuple[str, str]) -> None:
    session = SessionPublic.model_validate(session_body())
    api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(SpecServer([])))
    prepared = ClientRuntime(api, SID, "client-1", data[0], None, 8).prepare(session)
    assert prepared.dataset.test is None
    assert prepared.summary.test_rows == 0


def test_tables_by_role_are_checked_against_the_package(data: tuple[str, str]) -> None:
    session = SessionPublic.model_validate(session_body())
    api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(SpecServer([])))
    by_role = ClientRuntime(api, SID, "client-1", tables={"train": data[0]}, batch_size=8)
    assert len(by_role.prepare(session).dataset.train) == 3
    wrong = ClientRuntime(api, SID, "c", tables={"train": data[0], "ids": data[1]})
    with pytest.raises(ConfigError, match=r"reads the tables train \(required\), test \(opt"):
        wrong.prepare(session)
    with pytest.raises(ConfigError, match="either by role"):
        ClientRuntime(api, SID, "c", data[0], tables={"train": data[0]})


def test_reply_not_taken_falls_back_to_tasks_next(data: tuple[str, str]) -> None:
    server = SpecServer([task("t1"), ended("completed")], reply_status=409)
    events: list[str] = []
    assert make_runtime(server, data, events).run() is SessionStatus.completed
    assert any("task t1 reply not accepted (409" in event for event in events)
    assert server.calls[-1] == ("GET", f"/sessions/{SID}/participants/{PID}/tasks/next")


def test_a_sealed_task_names_its_sender(data: tuple[str, str]) -> None:
    seen: list[dict[str, Any]] = []

    def spy(request: TaskRequest, call_next: Handler) -> TaskReply:
        seen.append(request.meta)
        return call_next(request)

    sealed = {SEALED_ARRAY: np.frombuffer(b"opaque", dtype=np.uint8)}
    server = SpecServer([task("t1", arrays=sealed, sealed_from="p0"), ended("completed")])
    make_runtime(server, data, mods=[spy]).run()
    assert seen == [{"round": 1, "sealed_from": "p0"}]


def test_a_repeated_question_gets_the_same_bytes_after_a_restart(
    data: tuple[str, str], tmp_path: Path
) -> None:
    releases: list[str] = []

    def noisy(request: TaskRequest, call_next: Handler) -> TaskReply:
        # stands for a DP mechanism: every computation of the answer differs
        reply = call_next(request)
        reply.meta["noise"] = secrets.token_hex(8)
        return reply

    def count(request: TaskRequest, reply: TaskReply) -> None:
        releases.append(request.id)

    state = tmp_path / "state"
    server = SpecServer([task("t1"), ended("completed")])
    make_runtime(server, data, state_dir=state, mods=[accounting(count), noisy]).run()
    # the server restarted and asks the same question under a new task id; so did the client
    server.deliveries = [task("t9"), ended("completed")]
    events: list[str] = []
    make_runtime(server, data, events, state_dir=state, mods=[accounting(count), noisy]).run()
    (_, _, first, sent), (_, _, second, again) = server.replies
    assert sent == again
    assert first.meta["noise"] == second.meta["noise"]
    assert releases == ["t1"]  # the replay released nothing new
    assert any("task t9 (echo, round 1) was answered before" in event for event in events)


def test_reconnects_while_the_server_restarts(data: tuple[str, str]) -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    server = SpecServer(
        [refused, refused, httpx.Response(503, json={"detail": "restarting"}), task("t1")]
    )
    events: list[str] = []
    runtime = make_runtime(server, data, events, reconnect_timeout=10.0)
    assert runtime.run() is SessionStatus.completed
    assert [tid for tid, *_ in server.replies] == ["t1"]
    text = "\n".join(events)
    assert text.count("server unreachable") == 1
    assert "reconnected after" in text


def test_gives_up_after_reconnect_timeout(data: tuple[str, str]) -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    server = SpecServer([refused] * 100)
    runtime = make_runtime(server, data, reconnect_timeout=0.3)
    with pytest.raises(ServerUnavailable, match=r"gave up after .* reconnect timeout 0.3 s"):
        runtime.run()


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("session id", {"session_id": "XYZ"}),
        ("client name", {"client_name": "bad name!"}),
        ("batch size", {"batch_size": 0}),
        ("poll wait", {"poll_wait": 0.0}),
    ],
)
def test_arguments_are_checked(field: str, kwargs: dict[str, Any]) -> None:
    api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(SpecServer([])))
    arguments: dict[str, Any] = {
        "session_id": SID,
        "client_name": "client-1",
        "train_path": "a.csv",
        "test_path": None,
        "batch_size": 8,
    }
    poll_wait = kwargs.pop("poll_wait", 1.0)
    arguments.update(kwargs)
    with pytest.raises(ConfigError, match=f"The {field} must"):
        ClientRuntime(api, **arguments, poll_wait=poll_wait)
