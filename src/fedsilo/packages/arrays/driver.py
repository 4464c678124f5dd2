"""Driver mode of ``arrays``: the session's owner runs the strategy in their own process.

With ``model_config["driver"] = true`` the server's workflow runs no rounds: once the clients
joined it serves the driver's requests, which the REST routes of
:mod:`fedsilo.server.api.driver` hand it through the session's :class:`DriverInbox`:

* ``send`` -- tasks (``init``, ``fit``, ``evaluate``) to some or all participants; the
  workflow sends them with its own context, so they are persisted, screened and retried like
  any workflow's, and the route reads the group's outcomes;
* ``record`` -- a round's metrics as the driver computed them (with its server-side
  evaluation on data only the driver holds);
* ``finish`` -- the final arrays: saved as the session's model, and the session completes.

Requests run on the workflow's thread, one at a time, so the engine's context is used as
every workflow uses it. The inboxes live in the server process (a restarted server resumes
the workflow, which opens a fresh inbox; the driver's pending request fails and it retries).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedsilo.errors import TaskError
from fedsilo.federation import SessionContext

__all__ = ["INBOXES", "DriverInbox", "serve_driver"]

#: seconds between the workflow's checks that its session is still alive while idle
_IDLE_CHECK = 0.5


@dataclass
class _Request:
    action: Callable[[SessionContext], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class DriverInbox:
    """Requests from the driver's REST calls to one session's workflow thread."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._requests: queue.Queue[_Request] = queue.Queue()
        self.finished = threading.Event()
        self.groups: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._next_group = 0

    def call(self, action: Callable[[SessionContext], Any], timeout: float = 60.0) -> Any:
        """Run ``action(ctx)`` on the workflow's thread and return its result.

        Raises
        ------
        TaskError
            When the workflow does not take the request within ``timeout`` seconds, or the
            action raised (its message).
        """
        if self.finished.is_set():
            raise TaskError(f"Session {self.session_id}'s driver already finished it.")
        request = _Request(action)
        self._requests.put(request)
        if not request.done.wait(timeout):
            raise TaskError(
                f"Session {self.session_id}'s workflow did not take the driver's request "
                f"within {timeout:g} s."
            )
        if request.error is not None:
            raise TaskError(str(request.error)) from request.error
        return request.result

    def keep(self, group: Any) -> str:
        """Remember a sent group; its id for the driver."""
        with self._lock:
            self._next_group += 1
            gid = str(self._next_group)
            self.groups[gid] = group
        return gid

    def serve(self, ctx: SessionContext) -> None:
        # The engine's context raises from check_alive once the session is canceled or the
        # server stops (the protocol has no such method: other workflows only block in send).
        check_alive: Callable[[], None] | None = getattr(ctx, "check_alive", None)
        while not self.finished.is_set():
            if check_alive is not None:
                check_alive()
            try:
                request = self._requests.get(timeout=_IDLE_CHECK)
            except queue.Empty:
                continue
            try:
                request.result = request.action(ctx)
            except Exception as exc:  # handed to the driver's request, not the session
                request.error = exc
            finally:
                request.done.set()


#: session id -> the inbox of its running driver-mode workflow
INBOXES: dict[str, DriverInbox] = {}


def serve_driver(ctx: SessionContext) -> None:
    """The driver-mode workflow: wait for the clients, then serve the driver until it
    finishes (saving its model) or the session is canceled."""
    ctx.wait_for_clients(ctx.session.min_num_clients)
    inbox = DriverInbox(ctx.session.id)
    INBOXES[ctx.session.id] = inbox
    ctx.log("driver mode: waiting for the driver's tasks")
    try:
        inbox.serve(ctx)
    finally:
        inbox.finished.set()
        INBOXES.pop(ctx.session.id, None)
