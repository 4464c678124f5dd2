"""The HTTP calls of one participant: join, poll, reply-and-next, with backoff.

Every connection is made by the client (principle 2 of the design). A round costs one HTTP
exchange per client: the reply is posted to ``tasks/{tid}/reply?wait=S`` and its response is
the next task (200 frame), nothing yet (204) or the end of the session (410), exactly as a
``tasks/next`` long-poll answers. A reply the server does not take (409: it no longer awaits
that task, e.g. after its restart; 422: it refused the frame) is followed by a plain
``tasks/next``.

Every participant call carries the credential the first join returned in
:data:`~fedsilo.wire.PARTICIPANT_HEADER`. Connection failures (and the 502/503/504 of a
reverse proxy in front of a restarting server) are retried with capped exponential backoff
until ``reconnect_timeout`` seconds have passed since the last successful call, so a client
survives a server restart: the participant and its credential are persisted by the server.

While the client works on a task it is not polling, so the server would take a long local fit
for a dead client: :meth:`Connection.working` heartbeats (``POST .../heartbeat``) from a
thread every :data:`~fedsilo.wire.HEARTBEAT_HEADER` seconds -- the interval the task frame
came with -- until the reply is posted. A heartbeat that fails is not retried: the next one
comes an interval later, and the server allows three intervals of silence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fedsilo.errors import APIError, FedsiloError, NotFoundError, ServerUnavailable
from fedsilo.wire import (
    HEARTBEAT_HEADER,
    OCTET_STREAM,
    PARTICIPANT_HEADER,
    TASK_ID_HEADER,
    ParticipantJoin,
    ParticipantJoined,
    ParticipantPublic,
    ParticipantRefusal,
    SessionEnded,
    SessionPublic,
    parse_header,
)

if TYPE_CHECKING:
    import httpx

    from fedsilo.http import ApiClient
    from fedsilo.keepalive import KeepAliveResponse

    Answer = httpx.Response | KeepAliveResponse

__all__ = ["Connection", "CredentialFile", "Delivery", "TaskFrame"]

logger = logging.getLogger("fedsilo.client")

_T = TypeVar("_T")

# Backoff while the server is unreachable: the first retry comes quickly (a restart on the same
# host takes about a second), later ones at most every 2 s so a returning server is found fast
# without hammering a host that is down for longer.
BACKOFF_START = 0.1
BACKOFF_CAP = 2.0
# A reverse proxy in front of a restarting server answers these instead of refusing the
# connection; they mean the same thing.
_UNAVAILABLE_STATUSES = (502, 503, 504)
# Added to the long-poll's `wait` for the read timeout, so a slow answer is not mistaken for a
# dead server.
_POLL_GRACE = 10.0
# A reply the server did not take: the next task is then asked for with tasks/next.
_REPLY_NOT_TAKEN = (409, 422)
# A heartbeat answers at once; one that takes longer than this is dropped (the next comes).
_HEARTBEAT_TIMEOUT = 10.0


@dataclass(frozen=True)
class TaskFrame:
    """A task as delivered: its id (from the response header), the frame bytes, and the
    seconds between heartbeats while working on it (None: the server asks for none)."""

    task_id: str
    content: bytes
    heartbeat: float | None = None


#: What a poll or a reply-and-next brings: a task, nothing yet (None), or the session's end.
Delivery = TaskFrame | SessionEnded | None


class CredentialFile:
    """The participant credential a first join returned, kept for rejoining (mode 0600).

    It lives next to the participant's key pair,
    ``<state_dir>/keys/<session>/<client_name>.credential``: a restarted client presents it to
    rejoin as the same participant; without it the server refuses the name.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> str | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        return text or None

    def store(self, credential: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written to a 0600 temporary and renamed, so no reader ever sees a partial secret.
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(credential)
        os.replace(tmp, self.path)


class Connection:
    """One participant's calls to the server (see the module docstring).

    Parameters
    ----------
    api : ApiClient
    session_id : str
    poll_wait : float
        Seconds each long-poll (and each reply-and-next) may wait on the server.
    reconnect_timeout : float
        Seconds to keep retrying an unreachable server, from the last successful call.
    emit : callable
        Receives one progress line per event (outage, reconnect, reply not taken).

    Attributes
    ----------
    participant_id, credential : str or None
        Set by :meth:`join`.
    """

    def __init__(
        self,
        api: ApiClient,
        session_id: str,
        *,
        poll_wait: float,
        reconnect_timeout: float,
        emit: Callable[[str], None],
    ) -> None:
        self.api = api
        self.session_id = session_id
        self.poll_wait = poll_wait
        self.reconnect_timeout = reconnect_timeout
        self._emit = emit
        self.participant_id: str | None = None
        self.credential: str | None = None
        self._last_success = time.monotonic()
        self._outage_started: float | None = None
        self._heartbeats = _Heartbeats(self._beat)

    # ------------------------------------------------------------------- session

    def fetch_session(self) -> SessionPublic:
        """The session as the server sees it; a clear :class:`NotFoundError` when unknown."""
        self._last_success = time.monotonic()
        try:
            body = self.call(lambda: self.api.get_json(f"/sessions/{self.session_id}"))
        except NotFoundError:
            raise NotFoundError(
                404, f"Session {self.session_id} does not exist on {self.api.url}."
            ) from None
        return parse_header(SessionPublic, body, f"session {self.session_id}")

    def join(self, body: ParticipantJoin, credential: str | None) -> ParticipantJoined:
        """Join (or, with the stored ``credential``, rejoin) the session.

        The answer's credential (first join) or the one presented (rejoin) is kept for the
        participant calls that follow.
        """
        headers = {PARTICIPANT_HEADER: credential} if credential else None
        answer = self.call(
            lambda: self.api.post_json(
                f"/sessions/{self.session_id}/participants",
                body.model_dump(mode="json"),
                headers=headers,
            )
        )
        joined = parse_header(ParticipantJoined, answer, "join answer")
        self.participant_id = joined.id
        self.credential = joined.credential or credential
        return joined

    def refuse(self, body: ParticipantRefusal) -> None:
        """Tell the server this client refuses the session, and why (one line, no data).

        One attempt, no retries: the client is stopping with its own error, which must not
        wait ``reconnect_timeout`` on a server that just answered ``fetch_session``.

        Raises
        ------
        FedsiloError
            The server could not be reached or did not record it (e.g. an older server
            without the route answers 404); the caller reports it and stops anyway.
        """
        self.api.post_json(f"/sessions/{self.session_id}/refusals", body.model_dump(mode="json"))

    def participants(self) -> list[ParticipantPublic]:
        """The session's participants with their public keys."""
        body = self.call(lambda: self.api.get_json(f"/sessions/{self.session_id}/participants"))
        if not isinstance(body, list):
            body = []
        return [parse_header(ParticipantPublic, item, "participant") for item in body]

    # --------------------------------------------------------------------- tasks

    @property
    def _tasks(self) -> str:
        if self.participant_id is None:
            raise RuntimeError("Cannot ask for tasks before joining: call join() first.")
        return f"/sessions/{self.session_id}/participants/{self.participant_id}/tasks"

    def next_task(self) -> Delivery:
        """Long-poll ``tasks/next``: a task, None (nothing within ``poll_wait``), or the end."""
        path = f"{self._tasks}/next"
        response = self.call(
            lambda: self.api.exchange(
                "GET",
                path,
                # `:g` sends 30 rather than 30.0, which an integer query parameter accepts.
                params={"wait": f"{self.poll_wait:g}"},
                timeout=self.poll_wait + _POLL_GRACE,
                ok=(200, 204, 410),
                headers=self._participant_headers(),
            )
        )
        return self._delivery(response)

    def reply(self, task_id: str, frame: bytes) -> Delivery:
        """Post a reply and get the next delivery in the same exchange.

        A reply the server does not take (409, 422) is reported and followed by
        :meth:`next_task`.
        """
        path = f"{self._tasks}/{task_id}/reply"
        response = self.call(
            lambda: self.api.exchange(
                "POST",
                path,
                content=frame,
                params={"wait": f"{self.poll_wait:g}"},
                timeout=self.poll_wait + _POLL_GRACE,
                ok=(200, 204, 410, *_REPLY_NOT_TAKEN),
                headers=self._participant_headers(),
            )
        )
        if response.status_code in _REPLY_NOT_TAKEN:
            self._emit(
                f"task {task_id} reply not accepted ({response.status_code}: {_detail(response)})"
            )
            return self.next_task()
        if response.status_code == 200 and not _is_frame(response):
            # An acknowledgement without a task (a server that does not carry the next task
            # in the reply's response): ask for it.
            return self.next_task()
        return self._delivery(response)

    @contextlib.contextmanager
    def working(self, delivery: TaskFrame) -> Iterator[None]:
        """Heartbeat while the block runs (the task's execution and its reply's post), at
        the interval ``delivery`` came with."""
        if delivery.heartbeat is None:
            yield
            return
        self._heartbeats.arm(delivery.heartbeat)
        try:
            yield
        finally:
            self._heartbeats.disarm()

    def _beat(self) -> None:
        """One heartbeat, one attempt (see the module docstring)."""
        if self.participant_id is None:
            return
        try:
            self.api.exchange(
                "POST",
                f"/sessions/{self.session_id}/participants/{self.participant_id}/heartbeat",
                ok=(204, 410),
                timeout=_HEARTBEAT_TIMEOUT,
                headers=self._participant_headers(),
            )
        except FedsiloError as exc:
            logger.debug("heartbeat not delivered: %s", exc)

    def _participant_headers(self) -> dict[str, str] | None:
        return {PARTICIPANT_HEADER: self.credential} if self.credential else None

    def _delivery(self, response: Answer) -> Delivery:
        if response.status_code == 204:
            return None
        if response.status_code == 410:
            return parse_header(SessionEnded, response.json(), "session-ended answer")
        return TaskFrame(
            task_id=response.headers.get(TASK_ID_HEADER, ""),
            content=response.content,
            heartbeat=_interval(response.headers.get(HEARTBEAT_HEADER)),
        )

    # ------------------------------------------------------------------- backoff

    def call(self, request: Callable[[], _T]) -> _T:
        """Run ``request``, retrying while the server is unreachable.

        Retries use exponential backoff from 0.1 s capped at 2 s, until ``reconnect_timeout``
        seconds have passed since the last successful call.

        Raises
        ------
        ServerUnavailable
            After ``reconnect_timeout`` seconds without reaching the server.
        APIError
            Any other error answer, at once.
        """
        delay = BACKOFF_START
        while True:
            try:
                result = request()
            except (ServerUnavailable, APIError) as exc:
                if isinstance(exc, APIError) and exc.status_code not in _UNAVAILABLE_STATUSES:
                    raise
                now = time.monotonic()
                waited = now - self._last_success
                if waited >= self.reconnect_timeout:
                    raise ServerUnavailable(
                        f"{exc} (gave up after {waited:.0f} s without reaching the server; "
                        f"reconnect timeout {self.reconnect_timeout:g} s)"
                    ) from exc
                if self._outage_started is None:
                    self._outage_started = now
                    self._emit(
                        f"server unreachable ({exc}); retrying for up to "
                        f"{self.reconnect_timeout - waited:.0f} s"
                    )
                time.sleep(min(delay, self.reconnect_timeout - waited))
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            self._last_success = time.monotonic()
            if self._outage_started is not None:
                self._emit(f"reconnected after {self._last_success - self._outage_started:.1f} s")
                self._outage_started = None
            return result


class _Heartbeats:
    """Calls ``beat`` every ``interval`` seconds while armed, from one daemon thread (started
    on the first :meth:`arm`); arming again restarts the count, so a task shorter than the
    interval costs no request.

    Arming and disarming only write down the time: they do not wake the thread, which sleeps
    at most an interval at a time and then looks at when it was last armed. A no-op round
    used to wake it twice per task (arm, disarm), two thread switches on the critical path of
    every reply. It is woken only when it sleeps too long for a shorter interval.
    """

    def __init__(self, beat: Callable[[], None]) -> None:
        self._beat = beat
        self._changed = threading.Condition()
        self._interval: float | None = None
        self._armed_at = 0.0
        #: the longest the thread may sleep before looking again (None: not started)
        self._sleeping: float | None = None
        self._thread: threading.Thread | None = None

    def arm(self, interval: float) -> None:
        with self._changed:
            self._interval = interval
            self._armed_at = time.monotonic()
            if self._thread is None:
                self._sleeping = interval
                self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self._thread.start()
            elif self._sleeping is None or interval < self._sleeping:
                self._changed.notify()

    def disarm(self) -> None:
        with self._changed:
            self._interval = None

    def _run(self) -> None:
        with self._changed:
            while True:
                if self._interval is None:
                    # Disarmed: look again within the last interval, so a task armed meanwhile
                    # gets its first beat on time.
                    self._changed.wait(timeout=self._sleeping)
                    continue
                interval = self._interval
                self._sleeping = interval
                due = self._armed_at + interval - time.monotonic()
                if due > 0:
                    self._changed.wait(timeout=due)
                    continue  # re-read: disarmed, re-armed, or now due
                self._armed_at = time.monotonic()  # the next beat one interval from this one
                self._changed.release()
                try:
                    self._beat()
                finally:
                    self._changed.acquire()


def _interval(value: str | None) -> float | None:
    """The heartbeat header's seconds; None when absent or not a positive number."""
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        return None
    return seconds if 0 < seconds < float("inf") else None


def _is_frame(response: Answer) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith(OCTET_STREAM)


def _detail(response: Answer) -> str:
    try:
        body: Any = response.json()
        return str(body.get("detail", response.text))
    except (ValueError, AttributeError):
        return str(response.text)
