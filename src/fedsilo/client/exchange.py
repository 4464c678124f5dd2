"""The client half of the fast exchange: peer messages relayed through the server's memory.

:class:`HttpExchange` implements :class:`~fedsilo.federation.FastExchange` over the two relay
routes (``POST .../relay/{to}`` and the long-poll ``GET .../relay``). Messages are bytes the
caller normally sealed to the recipient (``ExecutorContext.seal``); the server neither reads
nor stores them, so a server restart loses the ones in flight and the protocol resumes from
its own checkpoint.

Connections: the calls go through :meth:`~fedsilo.http.ApiClient.exchange` -- on a plain
``http://`` server its keep-alive :mod:`http.client` connection (one per thread), which costs
about a third of httpx's CPU per request, else the client's persistent httpx connection;
either way a message costs about a millisecond. ``httpx.Client`` is not meant to be driven
from two threads at once, so a protocol that long-polls ``receive`` in one thread while it
sends from another gives each thread its own ``HttpExchange`` over its own ``ApiClient`` (the
same participant and credential); one thread alternating ``send`` and ``receive`` shares one.

Lock step: :meth:`HttpExchange.send_and_receive` sends a message and waits for this
participant's next one in the same request (``POST .../relay/{to}?wait=W``), for a protocol
that always awaits an answer to what it sent (SplitNN's embedding and its gradient): one
request per message instead of two.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

from fedsilo.client.relay_socket import LockStepSocket
from fedsilo.errors import APIError, ServerUnavailable, SessionError, WaitTimeout
from fedsilo.http import ApiClient, error_from_response
from fedsilo.keepalive import KeepAlive
from fedsilo.wire import (
    API_PREFIX,
    OCTET_STREAM,
    PARTICIPANT_HEADER,
    SENDER_HEADER,
    TAG_HEADER,
    SessionEnded,
)

__all__ = ["HttpExchange"]

# Backoff of a send the server answered 429 (the recipient's mailbox stayed full for the
# server's own wait of about a second): start short, since the recipient usually drains its
# mailbox within a batch, and cap low so a send resumes soon after room appears.
_FULL_BACKOFF_START = 0.02
_FULL_BACKOFF_CAP = 0.5
# Added to a long-poll's `wait` for the read timeout, so a slow answer is not taken for a
# dead server (the client runtime uses the same grace).
_POLL_GRACE = 10.0


class HttpExchange:
    """A participant's fast exchange over HTTP.

    Parameters
    ----------
    api : ApiClient
        The client's connection to the server (its bearer token is sent too).
    session_id, participant_id : str
        Who this participant is.
    credential : str
        The participant credential its first join returned.
    poll_wait : float
        Seconds each long-poll may wait on the server (the server caps it).
    full_timeout : float or None
        Seconds :meth:`send` keeps retrying a full mailbox before it raises the 429;
        None retries until the session ends.
    """

    def __init__(
        self,
        api: ApiClient,
        session_id: str,
        participant_id: str,
        credential: str,
        *,
        poll_wait: float = 30.0,
        full_timeout: float | None = 300.0,
    ) -> None:
        if poll_wait <= 0:
            raise ValueError(f"The 'poll_wait' parameter must be > 0. Got {poll_wait}.")
        if full_timeout is not None and full_timeout < 0:
            raise ValueError(
                f"The 'full_timeout' parameter must be >= 0 or None. Got {full_timeout}."
            )
        self.api = api
        self.session_id = session_id
        self.participant_id = participant_id
        self.poll_wait = poll_wait
        self.full_timeout = full_timeout
        self._headers = {PARTICIPANT_HEADER: credential}
        self._base = f"/sessions/{session_id}/participants/{participant_id}/relay"
        # The lock-step send's own socket on a plain http:// server (see relay_socket);
        # ApiClient's keep-alive settings say where and with which token.
        plain = api.keepalive
        self._lock_step = (
            LockStepSocket(plain.host, plain.port, plain.base_path, plain.headers)
            if isinstance(plain, KeepAlive)
            else None
        )
        if self._lock_step is not None:  # closed with this exchange, if not before
            weakref.finalize(self, self._lock_step.close)

    def send(self, to: str, payload: bytes, tag: str = "") -> None:
        """Deliver ``payload`` to participant ``to``; waits while its mailbox is full.

        Parameters
        ----------
        to : str
            The recipient's participant id (same session).
        payload : bytes
            At most the server's message limit (16 MiB by default); normally sealed to ``to``.
        tag : str
            The protocol's label for the message, up to 128 of ``A-Z a-z 0-9 _ . : / @ + -``.

        Raises
        ------
        SessionError
            The session is over (410).
        NotFoundError
            ``to`` is not a participant of the session.
        APIError
            413 when the payload is over the limit; 429 when the mailbox stayed full for
            ``full_timeout`` seconds; 403 when the credential is not this participant's.
        ServerUnavailable
            The server could not be reached (messages in flight are lost with it).
        """
        self._post(to, payload, tag, 0.0)

    def send_and_receive(
        self,
        to: str,
        payload: bytes,
        tag: str = "",
        wait: float = 2.0,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[str, str, bytes] | None:
        """:meth:`send`, then this participant's next message if one comes within ``wait``
        seconds -- in one request. ``meanwhile`` (once) runs after the request is sent and
        before its answer is read: this party's own work that the answer does not need.

        Returns
        -------
        tuple of (sender, tag, payload), or None
            As :meth:`receive` returns it; None when no message came in time (the payload
            was delivered all the same; :meth:`receive` waits on).

        Raises
        ------
        As :meth:`send`.
        """
        if wait <= 0:
            raise ValueError(f"The 'wait' parameter must be > 0. Got {wait}.")
        return self._post(to, payload, tag, wait, meanwhile)

    def _post(
        self,
        to: str,
        payload: bytes,
        tag: str,
        wait: float,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[str, str, bytes] | None:
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"The 'payload' parameter must be bytes. Got {type(payload).__name__}.")
        if not tag.isascii():
            raise ValueError(
                f"The 'tag' parameter must be ASCII (it travels as a header). Got {tag!r}."
            )
        headers = {**self._headers, TAG_HEADER: tag} if tag else self._headers
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        started = time.monotonic()
        delay = _FULL_BACKOFF_START
        while True:
            response: Any
            if wait > 0 and self._lock_step is not None:
                response = self._post_in_halves(to, bytes(payload), headers, wait, meanwhile)
                meanwhile = None
            else:
                response = self.api.exchange(
                    "POST",
                    f"{self._base}/{to}",
                    content=bytes(payload),
                    headers=headers,
                    params=params,
                    timeout=wait + _POLL_GRACE if wait > 0 else None,
                    ok=(200, 204, 410, 429),
                )
            if meanwhile is not None:
                meanwhile()
                meanwhile = None
            if response.status_code == 200:
                sender = response.headers.get(SENDER_HEADER, "")
                return sender, response.headers.get(TAG_HEADER, ""), response.content
            if response.status_code == 204:
                return None
            if response.status_code == 410:
                raise self._ended(response.json())
            waited = time.monotonic() - started
            if self.full_timeout is not None and waited + delay > self.full_timeout:
                detail = response.json().get("detail", response.text)
                raise APIError(
                    429,
                    f"{detail} (gave up after {waited:.1f} s; full_timeout "
                    f"{self.full_timeout:g} s)",
                )
            time.sleep(delay)
            delay = min(delay * 2, _FULL_BACKOFF_CAP)

    def _post_in_halves(
        self,
        to: str,
        payload: bytes,
        headers: dict[str, str],
        wait: float,
        meanwhile: Callable[[], None] | None,
    ) -> Any:
        """The send-and-wait POST on the lock-step socket: ``meanwhile`` runs between
        writing the request and reading its answer. Errors as :meth:`ApiClient.exchange`."""
        assert self._lock_step is not None
        connection = self._lock_step
        target = f"{API_PREFIX}{self._base}/{to}?wait={wait:g}"
        try:
            connection.write(
                "POST",
                target,
                payload,
                {**headers, "Content-Type": OCTET_STREAM},
                wait + _POLL_GRACE,
            )
        except OSError as exc:
            raise ServerUnavailable(
                f"cannot reach fedsilo server at {self.api.url}: {exc}"
            ) from exc
        try:
            if meanwhile is not None:
                meanwhile()
        except BaseException:
            connection.close()  # its answer will not be read
            raise
        try:
            response = connection.read(wait + _POLL_GRACE)
        except TimeoutError as exc:
            raise ServerUnavailable(f"fedsilo server at {self.api.url} timed out: {exc}") from exc
        except OSError as exc:
            raise ServerUnavailable(
                f"cannot reach fedsilo server at {self.api.url}: {exc}"
            ) from exc
        if response.status_code not in (200, 204, 410, 429):
            raise error_from_response(response)
        return response

    def close(self) -> None:
        """Close the lock-step socket (the ApiClient's connections are its own)."""
        if self._lock_step is not None:
            self._lock_step.close()

    def receive(self, timeout: float | None = None) -> tuple[str, str, bytes]:
        """The next message for this participant, oldest first.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait for one; None waits until a message comes or the session ends.

        Returns
        -------
        sender : str
            The sender's participant id, as the server authenticated it.
        tag : str
        payload : bytes

        Raises
        ------
        WaitTimeout
            No message came within ``timeout`` seconds.
        SessionError
            The session is over (410).
        ServerUnavailable
            The server could not be reached.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"The 'timeout' parameter must be >= 0 or None. Got {timeout}.")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.poll_wait
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            response = self.api.exchange(
                "GET",
                self._base,
                params={"wait": f"{wait:g}"},
                headers=self._headers,
                timeout=wait + _POLL_GRACE,
                ok=(200, 204, 410),
            )
            if response.status_code == 200:
                sender = response.headers.get(SENDER_HEADER, "")
                tag = response.headers.get(TAG_HEADER, "")
                return sender, tag, response.content
            if response.status_code == 410:
                raise self._ended(response.json())
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    self.session_id,
                    "running",
                    f"no fast-exchange message for participant {self.participant_id} "
                    f"within {timeout:g} s",
                )

    def _ended(self, body: object) -> SessionError:
        ended = SessionEnded.model_validate(body)
        return SessionError(self.session_id, str(ended.status), ended.reason)
