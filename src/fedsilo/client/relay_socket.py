"""A plain-``http://`` socket for the relay's lock-step send: write the request, do other
work, then read the answer.

:meth:`fedsilo.client.exchange.HttpExchange.send_and_receive` sends a message and waits in the
same request for this participant's next one. On the critical path of every SplitNN batch,
two things cost there that this connection avoids: :mod:`http.client` parses every answer's
headers with the :mod:`email` parser (a tenth of a millisecond per answer), and it cannot
return between writing the request and reading the answer -- when the active party could
step its optimizers while the passive party works on the gradient it was just sent.

The connection speaks just what the relay routes answer: a status line, headers, a body of
``Content-Length`` bytes (or chunked). It is one per :class:`HttpExchange` (one thread), kept
alive, and checked before reuse as :mod:`fedsilo.keepalive` does (an idle keep-alive the
server closed reads as ready); any failure closes it and raises :class:`OSError`.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Mapping

from fedsilo.keepalive import KeepAliveResponse

__all__ = ["LockStepSocket"]

_MAX_HEAD = 64 * 1024


class _Headers(dict[str, str]):
    """Answer headers by lower-cased name, with a case-insensitive ``get``."""

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


class LockStepSocket:
    """Requests to one ``host:port`` in two halves: :meth:`write`, then :meth:`read`.

    Parameters
    ----------
    host, port
        The server.
    base_path : str
        Prefixed to every target.
    headers : mapping
        Sent with every request (the bearer token).
    """

    def __init__(self, host: str, port: int, base_path: str, headers: Mapping[str, str]) -> None:
        self.host = host
        self.port = port
        self.base_path = base_path
        self._fixed = (
            f"Host: {host}:{port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "Accept-Encoding: identity\r\n"
        ).encode("latin-1")
        self._sock: socket.socket | None = None
        self._buffer = b""

    def write(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float,
    ) -> None:
        """Send one request (its answer is read by :meth:`read`)."""
        sock = self._socket(timeout)
        head = (
            f"{method} {self.base_path}{target} HTTP/1.1\r\n".encode("latin-1")
            + self._fixed
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
            + f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
        )
        try:
            sock.sendall(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                sock.sendall(body)
        except OSError:
            self.close()
            raise

    def read(self, timeout: float) -> KeepAliveResponse:
        """The answer to the request :meth:`write` sent."""
        sock = self._sock
        if sock is None:
            raise ConnectionError("no request was written on this connection")
        sock.settimeout(timeout)
        try:
            return self._read(sock)
        except (OSError, ValueError) as exc:
            self.close()
            if isinstance(exc, OSError):
                raise
            raise ConnectionError(f"a garbled answer from the server: {exc}") from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""

    def _socket(self, timeout: float) -> socket.socket:
        sock = self._sock
        if sock is not None and _closed_by_peer(sock):
            self.close()
            sock = None
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        sock.settimeout(timeout)
        return sock

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        self._buffer += chunk

    def _read(self, sock: socket.socket) -> KeepAliveResponse:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise ValueError("answer headers over 64 KiB")
            self._fill(sock)
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        self._buffer = self._buffer[end + 4 :]
        _, status, *reason = lines[0].split(" ", 2)
        headers = _Headers()
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        code = int(status)
        if (headers.get("transfer-encoding") or "").lower() == "chunked":
            content = self._chunked(sock)
        else:
            length = int(headers.get("content-length") or 0) if code not in (204, 304) else 0
            while len(self._buffer) < length:
                self._fill(sock)
            content, self._buffer = self._buffer[:length], self._buffer[length:]
        if (headers.get("connection") or "").lower() == "close":
            self.close()
        return KeepAliveResponse(code, reason[0] if reason else "", headers, content)

    def _chunked(self, sock: socket.socket) -> bytes:
        parts = []
        while True:
            while (end := self._buffer.find(b"\r\n")) < 0:
                self._fill(sock)
            size = int(self._buffer[:end].split(b";", 1)[0], 16)
            while len(self._buffer) < end + 2 + size + 2:
                self._fill(sock)
            parts.append(self._buffer[end + 2 : end + 2 + size])
            self._buffer = self._buffer[end + 2 + size + 2 :]
            if size == 0:
                return b"".join(parts)


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle keep-alive socket that reads as ready was closed (or reset) by the server."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
