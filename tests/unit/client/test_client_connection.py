"""Connection: backoff while the server is away, the credential header, the credential file."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import httpx
import pytest

from fedsilo.client.connection import BACKOFF_CAP, Connection, CredentialFile
from fedsilo.errors import ConflictError, ServerUnavailable
from fedsilo.http import ApiClient
from fedsilo.wire import PARTICIPANT_HEADER

SID = "0123456789"


class Outage:
    """Refuses connections for ``down`` calls, then answers 200 ``{}``; records call times."""

    def __init__(self, down: int, failure: httpx.Response | None = None) -> None:
        self.down = down
        self.failure = failure
        self.times: list[float] = []
        self.headers: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(time.monotonic())
        self.headers.append(request.headers.get(PARTICIPANT_HEADER))
        if len(self.times) <= self.down:
            if self.failure is not None:
                return self.failure
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return httpx.Response(200, json={})


def connect(handler: Outage, reconnect_timeout: float, events: list[str]) -> Connection:
    api = ApiClient("http://fake", "tok", transport=httpx.MockTransport(handler))
    return Connection(
        api, SID, poll_wait=1.0, reconnect_timeout=reconnect_timeout, emit=events.append
    )


def test_backoff_doubles_from_a_tenth_of_a_second() -> None:
    outage = Outage(down=4)
    events: list[str] = []
    connection = connect(outage, 30.0, events)
    assert connection.call(lambda: connection.api.get_json("/x")) == {}
    gaps = [later - earlier for earlier, later in zip(outage.times, outage.times[1:], strict=False)]
    # 0.1, 0.2, 0.4, 0.8 s (sleep may overshoot, never undershoot)
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4, 0.8], strict=True):
        assert expected <= gap < expected + 0.15
    assert BACKOFF_CAP == 2.0
    assert len([e for e in events if e.startswith("server unreachable")]) == 1
    assert events[-1].startswith("reconnected after")


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_proxy_answering_unavailable_is_an_outage(status: int) -> None:
    outage = Outage(down=1, failure=httpx.Response(status, json={"detail": "restarting"}))
    connection = connect(outage, 5.0, [])
    assert connection.call(lambda: connection.api.get_json("/x")) == {}
    assert len(outage.times) == 2


def test_other_errors_are_not_retried() -> None:
    outage = Outage(down=5, failure=httpx.Response(409, json={"detail": "no"}))
    connection = connect(outage, 5.0, [])
    with pytest.raises(ConflictError, match="no"):
        connection.call(lambda: connection.api.get_json("/x"))
    assert len(outage.times) == 1


def test_gives_up_after_the_reconnect_timeout() -> None:
    outage = Outage(down=1000)
    connection = connect(outage, 0.5, [])
    started = time.monotonic()
    with pytest.raises(ServerUnavailable, match=r"reconnect timeout 0.5 s"):
        connection.call(lambda: connection.api.get_json("/x"))
    assert 0.5 <= time.monotonic() - started < 1.0


def test_participant_calls_carry_the_credential() -> None:
    outage = Outage(down=0)
    connection = connect(outage, 1.0, [])
    with pytest.raises(RuntimeError, match="before joining"):
        connection.next_task()
    connection.participant_id, connection.credential = "p1", "secret"
    outage_answer = connection.next_task()
    assert outage_answer is not None  # a 200 with no task id: the loop ignores it
    assert outage.headers == ["secret"]


def test_the_credential_file_is_private(tmp_path: Path) -> None:
    stored = CredentialFile(tmp_path / "keys" / SID / "silo-a.credential")
    assert stored.load() is None
    stored.store("fsp_secret")
    assert CredentialFile(stored.path).load() == "fsp_secret"
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o600
    assert [p.name for p in stored.path.parent.iterdir()] == ["silo-a.credential"]
