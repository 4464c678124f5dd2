"""The participant's keep-alive path: same answers and errors as httpx, one connection per
thread, a connection the server closed is replaced, an absent server is unavailable."""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING

import pytest

from fedsilo.errors import NotFoundError, ServerUnavailable, ValidationError
from fedsilo.http import ApiClient
from fedsilo.keepalive import _closed_by_peer

if TYPE_CHECKING:
    from conftest import ThreadServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_an_exchange_answers_as_a_request_does(thread_server: ThreadServer) -> None:
    with ApiClient(thread_server.url, thread_server.token) as api:
        answer = api.exchange("GET", "/sessions")
        assert answer.status_code == 200
        assert answer.json() == api.get_json("/sessions")
        assert answer.headers.get("CONTENT-TYPE", "").startswith("application/json")
        with pytest.raises(NotFoundError, match="Session 0123456789 not found"):
            api.exchange("GET", "/sessions/0123456789")
        # The query string travels: the server names the parameter it does not take.
        with pytest.raises(ValidationError, match="limit"):
            api.exchange("GET", "/sessions", params={"limit": "5"})


def test_calls_of_a_thread_reuse_its_connection_and_threads_have_their_own(
    thread_server: ThreadServer,
) -> None:
    with ApiClient(thread_server.url, thread_server.token) as api:
        keepalive = api._keepalive
        assert keepalive is not None
        api.exchange("GET", "/sessions")
        first = keepalive._local.connection.sock
        api.exchange("GET", "/sessions")
        assert keepalive._local.connection.sock is first
        seen: list[object] = []

        def other() -> None:
            api.exchange("GET", "/sessions")
            seen.append(keepalive._local.connection.sock)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen and seen[0] is not first
        assert len(keepalive._all) == 2


def test_a_connection_the_server_closed_is_seen_before_reuse() -> None:
    ours, theirs = socket.socketpair()
    try:
        assert not _closed_by_peer(ours)
        theirs.close()
        assert _closed_by_peer(ours)
    finally:
        ours.close()


def test_a_closed_idle_connection_is_replaced(thread_server: ThreadServer) -> None:
    with ApiClient(thread_server.url, thread_server.token) as api:
        keepalive = api._keepalive
        assert keepalive is not None
        api.exchange("GET", "/sessions")
        # As the server does to an idle keep-alive: the socket is shut from its side.
        keepalive._local.connection.sock.shutdown(socket.SHUT_RDWR)
        assert api.exchange("GET", "/sessions").status_code == 200


def test_no_server_is_unavailable() -> None:
    with (
        ApiClient(f"http://127.0.0.1:{_free_port()}", "tok") as api,
        pytest.raises(ServerUnavailable, match="cannot reach fedsilo server"),
    ):
        api.exchange("GET", "/sessions", timeout=2)


def test_https_and_test_transports_keep_httpx() -> None:
    assert ApiClient("https://127.0.0.1:1", "tok")._keepalive is None


def test_a_server_behind_an_environment_proxy_keeps_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert ApiClient("http://fedsilo.example:8765", "tok")._keepalive is None
    monkeypatch.setenv("NO_PROXY", "fedsilo.example")
    assert ApiClient("http://fedsilo.example:8765", "tok")._keepalive is not None
