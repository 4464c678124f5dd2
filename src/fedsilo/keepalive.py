"""One keep-alive HTTP/1.1 connection per thread, for a participant's per-task calls.

:class:`fedsilo.http.ApiClient` sends a client's polls, replies and heartbeats through it on
a plain ``http://`` server: :mod:`http.client` does in about 0.4 ms of CPU what httpx's
request building, URL merging and h11 state machine do in about 1.4 ms, and a no-op round is
little else. Each thread (the task loop, the heartbeat thread) has its own connection, as
:mod:`http.client` connections are not thread-safe.

A connection the server closed while idle (uvicorn drops idle keep-alives after a few
seconds) is noticed before it is reused -- its socket reads as ready, with nothing to read --
and replaced, so a request is never written into a dead socket. Any other failure closes the
connection and is raised (``OSError``, ``TimeoutError``) for the caller's retry policy.
"""

from __future__ import annotations

import http.client
import json
import select
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["KeepAlive", "KeepAliveResponse"]


class KeepAliveResponse:
    """What :meth:`KeepAlive.request` answers: the parts of ``httpx.Response`` the client
    reads (``status_code``, ``headers.get``, ``content``, ``text``, ``json()``,
    ``reason_phrase``)."""

    def __init__(self, status_code: int, reason: str, headers: Any, content: bytes) -> None:
        self.status_code = status_code
        self.reason_phrase = reason
        #: case-insensitive ``get``, as httpx's headers
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class KeepAlive:
    """Requests to one ``host:port`` (under ``base_path``) on a connection per thread.

    Parameters
    ----------
    host, port
        The server.
    base_path : str
        Prefixed to every target (a server behind a path prefix); ``""`` for none.
    headers : mapping
        Sent with every request (the bearer token).
    """

    def __init__(self, host: str, port: int, base_path: str, headers: Mapping[str, str]) -> None:
        self.host = host
        self.port = port
        self.base_path = base_path
        self.headers = dict(headers)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> KeepAliveResponse:
        """Send one request and read its whole answer.

        Raises
        ------
        OSError
            The server could not be reached or closed the connection mid-exchange.
        TimeoutError
            No answer within ``timeout`` seconds.
        """
        connection = self._connection()
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request(
                method, self.base_path + target, body=body, headers={**self.headers, **headers}
            )
            answer = connection.getresponse()
            content = answer.read()
        except OSError:  # refused, reset, timed out: the next request starts afresh
            connection.close()
            raise
        except http.client.HTTPException as exc:  # a truncated or garbled answer
            connection.close()
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        if answer.will_close:
            connection.close()
        return KeepAliveResponse(answer.status, answer.reason, answer.headers, content)

    def close(self) -> None:
        """Close every thread's connection (a later request opens a new one)."""
        with self._lock:
            connections, self._all = self._all, []
        for connection in connections:
            connection.close()

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.host, self.port)
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        elif connection.sock is not None and _closed_by_peer(connection.sock):
            connection.close()  # reconnects on the next request
        return connection


def _closed_by_peer(sock: Any) -> bool:
    """An idle keep-alive socket that reads as ready was closed (or reset) by the server."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
