"""A refusing client leaves a trace: a real client refuses its data, the real server says so.

The server (in a thread) runs an echo session that reads columns ``a`` and ``y``; a client
whose table has no ``y`` refuses before joining. The session's log and status reason then
name that client and the missing column, the audit log has ``participant.refuse``, and
nothing the server stored holds the client's path or any value of its table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd
import pytest

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.client.sessionlog import session_logs
from fedsilo.errors import DataError
from fedsilo.http import ApiClient
from fedsilo.wire import API_PREFIX, REFUSAL_REASON_MAX, SessionStatus

if TYPE_CHECKING:
    from conftest import ScopedTokens, ThreadServer

# A value no message may carry: it is in the refusing client's table only.
SECRET_VALUE = 987654.25


def _session(analyst: fedsilo.Client, clients: int = 1) -> fedsilo.Session:
    return analyst.create_fl_session(
        name="refusals",
        min_num_clients=clients,
        num_rounds=1,
        package_name="echo",
        model_config={"payload_size": 4},
        data_config={"columns": ["a", "y"]},
    ).start()


def _runtime(url: str, token: str, sid: str, name: str, table: Path, state: Path) -> Any:
    api = ApiClient(url, token)
    runtime = ClientRuntime(
        api, sid, name, str(table), poll_wait=1.0, state_dir=state, on_event=lambda _: None
    )
    return api, runtime


def _cancel(thread_server: ThreadServer, sid: str) -> None:
    # The analyst's least-privilege token cannot cancel; an admin ends the session.
    with fedsilo.connect(thread_server.url, thread_server.token) as admin:
        admin.fl_session(sid).cancel()


def _table(path: Path, columns: dict[str, Any]) -> Path:
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


@pytest.fixture
def tokens(thread_server: ThreadServer, scoped_tokens: ScopedTokens) -> dict[str, str]:
    url, admin = thread_server.url, thread_server.token
    return {
        "analyst": scoped_tokens.analyst(url, admin),
        "silo-a": scoped_tokens.client(url, admin, "silo-a"),
        "silo-b": scoped_tokens.client(url, admin, "silo-b"),
    }


def test_a_client_missing_a_column_is_named_in_the_log_and_the_status_reason(
    thread_server: ThreadServer, tokens: dict[str, str], tmp_path: Path
) -> None:
    url = thread_server.url
    refusing = _table(tmp_path / "silo-b.csv", {"a": [SECRET_VALUE, 1.0, 2.0]})
    good = _table(tmp_path / "silo-a.csv", {"a": np.arange(4.0), "y": np.ones(4)})
    with fedsilo.connect(url, tokens["analyst"]) as analyst:
        session = _session(analyst)
        api, runtime = _runtime(url, tokens["silo-b"], session.id, "silo-b", refusing, tmp_path)
        with api, pytest.raises(DataError, match="missing required column"):
            runtime.run()

        expected = (
            "client 'silo-b' refused to join: its data cannot be used (1 problem(s)): "
            "--train-path: missing required column(s) 'y'; available columns: 'a'"
        )
        assert session.status == SessionStatus.pending
        assert session.failure_reason == expected
        assert [line.message for line in session.logs()][-1] == expected
        assert session.participants() == []

        # the client's own log says it, too
        logs = session_logs(tmp_path, session.id)
        text = logs["silo-b"].read_text()
        assert f"refused the session; told the server: {expected.split(': ', 1)[1]}" in text
        assert "stopped: DataError: the local data cannot be used" in text

        # the audit log has it under the client's token
        audit = httpx.get(
            f"{url}{API_PREFIX}/audit",
            params={"action": "participant.refuse"},
            headers={"Authorization": f"Bearer {thread_server.token}"},
        ).json()
        assert [(e["target"], e["detail"]) for e in audit] == [(session.id, expected)]

        # a client that can serve it joins; the session runs, and the note goes
        api, runtime = _runtime(url, tokens["silo-a"], session.id, "silo-a", good, tmp_path)
        with api:
            assert runtime.run() == SessionStatus.completed
        assert session.status == "Completed"
        assert session.failure_reason is None
        assert expected in [line.message for line in session.logs()]

    # never the client's path nor a value of its table
    for where, content in thread_server.stored().items():
        assert str(tmp_path).encode() not in content, where
        assert str(SECRET_VALUE).encode() not in content, where


def test_a_running_session_logs_a_late_refusal_without_a_status_reason(
    thread_server: ThreadServer, tokens: dict[str, str]
) -> None:
    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        session = _session(analyst)
        thread_server.app_state.store.set_session_status(
            session.id, SessionStatus.running, expected={SessionStatus.pending}
        )
        with ApiClient(thread_server.url, tokens["silo-b"]) as api:
            answer = api.post_json(
                f"/sessions/{session.id}/refusals",
                {"client_name": "silo-b", "reason": "its policy forbids epsilon above 1"},
            )
        assert (
            answer["message"]
            == "client 'silo-b' refused to join: its policy forbids epsilon above 1"
        )
        assert session.failure_reason is None
        assert session.logs()[-1].message == answer["message"]
        _cancel(thread_server, session.id)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"client_name": "silo-b", "reason": "two\nlines"}, "body.reason"),
        ({"client_name": "silo-b", "reason": "bell\x07"}, "body.reason"),
        ({"client_name": "silo-b", "reason": "x" * (REFUSAL_REASON_MAX + 1)}, "body.reason"),
        ({"client_name": "silo-b", "reason": ""}, "body.reason"),
        ({"client_name": "../etc", "reason": "r"}, "body.client_name"),
        ({"client_name": "silo-b", "reason": "r", "rows": [1, 2]}, "body.rows"),
    ],
)
def test_the_refusal_is_one_bounded_line(
    thread_server: ThreadServer, tokens: dict[str, str], body: dict[str, Any], field: str
) -> None:
    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        session = _session(analyst)
        answer = httpx.post(
            f"{thread_server.url}{API_PREFIX}/sessions/{session.id}/refusals",
            json=body,
            headers={"Authorization": f"Bearer {tokens['silo-b']}"},
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(field)
        assert session.failure_reason is None
        _cancel(thread_server, session.id)


def test_who_may_refuse_and_when(thread_server: ThreadServer, tokens: dict[str, str]) -> None:
    url = f"{thread_server.url}{API_PREFIX}/sessions"
    body = {"client_name": "silo-b", "reason": "no"}

    def post(sid: str, token: str) -> httpx.Response:
        return httpx.post(
            f"{url}/{sid}/refusals", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    with fedsilo.connect(thread_server.url, tokens["analyst"]) as analyst:
        session = _session(analyst)
        denied = post(session.id, tokens["analyst"])
        assert denied.status_code == 403 and "'client'" in denied.json()["detail"]
        assert httpx.post(f"{url}/{session.id}/refusals", json=body).status_code == 401
        missing = post("ffffffffff", tokens["silo-b"])
        assert (missing.status_code, missing.json()["detail"]) == (
            404,
            "Session ffffffffff not found.",
        )
        _cancel(thread_server, session.id)
        ended = post(session.id, tokens["silo-b"])
        assert ended.status_code == 409
        assert ended.json()["detail"].startswith(f"Session {session.id} is canceled")
        assert session.failure_reason == "canceled by a user"
