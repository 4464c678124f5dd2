"""ClientRuntime against a scripted in-process server (httpx.MockTransport), using `echo`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from fedsilo.client.runtime import ClientRuntime
from fedsilo.errors import (
    ConfigError,
    ConflictError,
    DataError,
    NotFoundError,
    ServerUnavailable,
)
from fedsilo.http import ApiClient
from fedsilo.wire import (
    API_PREFIX,
    ReplyEnvelope,
    SessionPublic,
    SessionStatus,
    TaskEnvelope,
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


def task(tid: str, kind: str = "echo", rnd: int = 1) -> httpx.Response:
    arrays = {"x": np.arange(4, dtype=np.float32)}
    header = TaskEnvelope(id=tid, session_id=SID, kind=kind, round=rnd, meta={"round": rnd})
    return httpx.Response(200, content=encode_frame(arrays, header))


def ended(status: str, reason: str | None = None) -> httpx.Response:
    return httpx.Response(
        410, json={"detail": "session is over", "status": status, "reason": reason}
    )


Step = httpx.Response | Exception


class FakeServer:
    """Answers the runtime's calls; `polls` scripts what each tasks/next call gets."""

    def __init__(
        self,
        polls: list[Step],
        session: dict[str, Any] | None = None,
        reply_status: int = 200,
        rejoined: bool = False,
    ) -> None:
        self.polls = list(polls)
        self.session = session if session is not None else session_body()
        self.reply_status = reply_status
        self.rejoined = rejoined
        self.calls: list[tuple[str, str]] = []
        self.joins: list[dict[str, Any]] = []
        self.replies: list[tuple[str, dict[str, np.ndarray], ReplyEnvelope]] = []
        self.poll_params: list[str] = []

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
            return httpx.Response(
                201,
                json={
                    "id": PID,
                    "session_id": SID,
                    "client_name": body["client_name"],
                    "dataset": body["dataset"],
                    "joined_at": NOW,
                    "rejoined": self.rejoined,
                },
            )
        base = f"/sessions/{SID}/participants/{PID}/tasks"
        if request.method == "GET" and path == f"{base}/next":
            self.poll_params.append(request.url.params["wait"])
            step = self.polls.pop(0) if self.polls else ended("completed")
            if isinstance(step, Exception):
                raise step
            return step
        if request.method == "POST" and path.startswith(base) and path.endswith("/reply"):
            tid = path.split("/")[-2]
            arrays, header = decode_frame(request.content)
            self.replies.append((tid, arrays, ReplyEnvelope.model_validate(header)))
            if self.reply_status != 200:
                return httpx.Response(self.reply_status, json={"detail": "task is not awaited"})
            return httpx.Response(200, json={"task_id": tid, "accepted": True})
        return httpx.Response(404, json={"detail": f"no route {request.method} {path}"})


@pytest.fixture
def data(tmp_path: Path) -> tuple[str, str]:
    train = tmp_path / "train.parquet"
    test = tmp_path / "test.csv"
    pd.DataFrame({"x1": [0.1, 0.2, 0.3], "y": [0, 1, 0], "other": [1, 2, 3]}).to_parquet(train)
    pd.DataFrame({"x1": [0.4], "y": [1]}).to_csv(test, index=False)
    return str(train), str(test)


def make_runtime(
    server: FakeServer,
    data: tuple[str, str],
    events: list[str] | None = None,
    **kwargs: Any,
) -> ClientRuntime:
    api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(server))
    on_event: Callable[[str], None] | None = events.append if events is not None else None
    kwargs.setdefault("poll_wait", 5.0)
    return ClientRuntime(api, SID, "client-1", data[0], data[1], 8, on_event=on_event, **kwargs)


def test_run_joins_serves_and_completes(data: tuple[str, str]) -> None:
    server = FakeServer(
        [httpx.Response(204), task("t1"), task("t2", kind="fit"), ended("completed")]
    )
    events: list[str] = []
    runtime = make_runtime(server, data, events)

    assert runtime.run() is SessionStatus.completed
    assert runtime.ended is not None and runtime.ended.status is SessionStatus.completed

    # the join carries shapes of the columns the session reads, never values
    (join,) = server.joins
    assert join["client_name"] == "client-1"
    assert join["dataset"] == {
        "train_rows": 3,
        "test_rows": 1,
        "columns": [{"name": "x1", "dtype": "float64"}, {"name": "y", "dtype": "int64"}],
    }
    # echo answers its task; an unknown kind is answered with an error, and serving goes on
    (tid1, arrays1, reply1), (tid2, arrays2, reply2) = server.replies
    assert (tid1, reply1.status, reply1.meta) == ("t1", "ok", {"num_examples": 3})
    np.testing.assert_array_equal(arrays1["x"], np.arange(4, dtype=np.float32))
    assert (tid2, reply2.status, arrays2) == ("t2", "error", {})
    assert reply2.error is not None and "'fit'" in reply2.error
    assert server.poll_params == ["5"] * 4

    text = "\n".join(events)
    assert f"joined session {SID} as client-1 (participant {PID})" in text
    assert "task t1 (echo, round 1) received" in text
    assert "task t1 (echo, round 1) replied ok in" in text
    assert "task t2 (fit, round 1) failed" in text
    assert f"session {SID} completed" in text


def test_failed_session_status_and_reason(data: tuple[str, str]) -> None:
    server = FakeServer([ended("failed", "client-2 sent NaN weights")], rejoined=True)
    events: list[str] = []
    runtime = make_runtime(server, data, events)
    assert runtime.run() is SessionStatus.failed
    assert runtime.ended is not None
    assert runtime.ended.reason == "client-2 sent NaN weights"
    assert any(event.startswith(f"rejoined session {SID}") for event in events)


def test_unknown_session(data: tuple[str, str]) -> None:
    server = FakeServer([], session={})
    with pytest.raises(NotFoundError, match=f"Session {SID} does not exist on http://fake"):
        make_runtime(server, data).run()


def test_ended_session_is_refused_before_loading(tmp_path: Path) -> None:
    server = FakeServer([], session=session_body("completed"))
    missing = str(tmp_path / "missing.parquet")
    runtime = make_runtime(server, (missing, missing))
    with pytest.raises(ConflictError, match=f"Cannot join session {SID}: it is completed"):
        runtime.run()
    assert server.calls == [("GET", f"/sessions/{SID}")]


def test_bad_data_is_refused_before_joining_with_problems_of_both_files(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    pd.DataFrame({"x1": ["a", None], "bad name": [1, 2]}).to_csv(train, index=False)
    missing_test = str(tmp_path / "test.parquet")
    server = FakeServer([])
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
    # nothing was sent: only the session was read
    assert server.calls == [("GET", f"/sessions/{SID}")]


def test_prepare_is_testable_without_a_server(data: tuple[str, str]) -> None:
    session = SessionPublic.model_validate(session_body(data_config={"columns": ["x1"]}))
    runtime = make_runtime(FakeServer([]), (data[0], data[1]))
    prepared = runtime.prepare(session)
    assert prepared.package.name == "echo"
    assert prepared.dataset.batch_size == 8
    assert prepared.dataset.test is not None and len(prepared.dataset.test) == 1
    assert [column.name for column in prepared.summary.columns] == ["x1"]


def test_without_test_path(data: tuple[str, str]) -> None:
    session = SessionPublic.model_validate(session_body())
    api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(FakeServer([])))
    prepared = ClientRuntime(api, SID, "client-1", data[0], None, 8).prepare(session)
    assert prepared.dataset.test is None
    assert prepared.summary.test_rows == 0


def test_reply_conflict_is_ignored(data: tuple[str, str]) -> None:
    server = FakeServer([task("t1"), ended("completed")], reply_status=409)
    events: list[str] = []
    assert make_runtime(server, data, events).run() is SessionStatus.completed
    assert any("task t1 (echo, round 1) reply not accepted (409" in event for event in events)


def test_reconnects_while_the_server_restarts(data: tuple[str, str]) -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    server = FakeServer(
        [refused, refused, httpx.Response(503, json={"detail": "restarting"}), task("t1")]
    )
    events: list[str] = []
    runtime = make_runtime(server, data, events, reconnect_timeout=10.0)
    assert runtime.run() is SessionStatus.completed
    assert [tid for tid, _, _ in server.replies] == ["t1"]
    text = "\n".join(events)
    assert text.count("server unreachable") == 1
    assert "reconnected after" in text


def test_gives_up_after_reconnect_timeout(data: tuple[str, str]) -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    server = FakeServer([refused] * 100)
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
    api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(FakeServer([])))
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
