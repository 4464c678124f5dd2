"""The task loop: decode a task frame, pass it through the mods to the executor, reply.

::

    tasks/next ─┬─ 200 task  -> decode -> mods -> executor.handle -> reply?wait=S ─┐
                ├─ 204 none  -> poll again                                        │
                └─ 410 ended -> return the final status      <─ next delivery ────┘

The reply's response is the next delivery, so a round costs one HTTP exchange. A package's
failure (an exception in ``handle``, a reply that does not encode) is answered with an
``error`` reply and serving goes on; the server's failure policy decides what it means.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fedsilo.client.connection import TaskFrame
from fedsilo.client.mods import Handler, Mod, TaskReply, TaskRequest, chain
from fedsilo.errors import FedsiloError
from fedsilo.wire import SessionEnded, TaskPayload, decode_frame, parse_header

if TYPE_CHECKING:
    import threading

    from fedsilo.client.connection import Connection, Delivery
    from fedsilo.federation import Executor

__all__ = ["TaskLoop", "executor_handler"]

logger = logging.getLogger("fedsilo.client")


def executor_handler(executor: Executor, emit: Callable[[str], None]) -> Handler:
    """The innermost handler: the executor, its exceptions turned into ``error`` replies."""

    def handle(task: TaskRequest) -> TaskReply:
        try:
            meta, arrays = executor.handle(task.kind, dict(task.meta), task.arrays)
        except Exception as exc:  # the package's failure is reported, the server decides
            logger.debug("%s failed", task.label, exc_info=True)
            message = str(exc) or type(exc).__name__
            emit(f"{task.label} failed: {message}")
            return TaskReply.failed(message)
        return TaskReply(status="ok", meta=meta, arrays=arrays)

    return handle


class TaskLoop:
    """Serve one participant's tasks until the session ends.

    Parameters
    ----------
    connection : Connection
        Joined.
    executor : Executor
    mods : sequence of Mod
        Outermost first (see :mod:`fedsilo.client.mods`).
    abort : threading.Event
        Set when the session ends.
    emit : callable
        Receives one progress line per event.
    routine : callable, optional
        Receives the routine per-task lines (task received, reply sent ok) instead of
        ``emit``, so a caller can thin them; failures always go to ``emit``.
    """

    def __init__(
        self,
        connection: Connection,
        executor: Executor,
        mods: Sequence[Mod],
        abort: threading.Event,
        emit: Callable[[str], None],
        routine: Callable[[str], None] | None = None,
    ) -> None:
        self.connection = connection
        self.abort = abort
        self._emit = emit
        self._routine = routine if routine is not None else emit
        self._handle = chain(mods, executor_handler(executor, emit))

    def serve(self) -> SessionEnded:
        """Poll, execute and reply until the server says the session ended."""
        delivery: Delivery = self.connection.next_task()
        while True:
            if isinstance(delivery, SessionEnded):
                self.abort.set()
                return delivery
            if delivery is None:
                delivery = self.connection.next_task()
                continue
            delivery = self._answer(delivery)

    def _answer(self, delivery: TaskFrame) -> Delivery:
        started = time.perf_counter()
        task = self._decode(delivery)
        if task is None:
            return self.connection.next_task()
        self._routine(f"{task.label} received")
        # Heartbeats while it works and while its reply is posted, so a long local fit is
        # not taken for a dead client (the reply's response is the next long-poll).
        with self.connection.working(delivery):
            return self._run(task, started)

    def _run(self, task: TaskRequest, started: float) -> Delivery:
        try:
            reply = self._handle(task)
            # Encoding is inside the guard: a reply meta that is not JSON-able is the
            # package's failure too, and must not take the client down.
            frame = reply.frame()
        except Exception as exc:
            logger.debug("%s failed", task.label, exc_info=True)
            message = str(exc) or type(exc).__name__
            self._emit(f"{task.label} failed: {message}")
            reply = TaskReply.failed(message)
            frame = reply.frame()
        if reply.replayed:
            self._emit(f"{task.label} was answered before; sending the same reply again")
        elapsed_ms = (time.perf_counter() - started) * 1000
        # Said before posting: the post's response waits for the next task.
        said = self._routine if reply.status == "ok" else self._emit
        said(f"{task.label} replied {reply.status} in {elapsed_ms:.0f} ms")
        return self.connection.reply(task.id, frame)

    def _decode(self, delivery: TaskFrame) -> TaskRequest | None:
        try:
            if not delivery.task_id:
                raise FedsiloError("the task frame came without its task id header")
            arrays, header = decode_frame(delivery.content)
            payload = parse_header(TaskPayload, header, "task frame header")
        except FedsiloError as exc:
            # Without a readable frame there is nothing to answer; the server's task timeout
            # and failure policy take care of it.
            self._emit(f"ignored an unreadable task frame: {exc}")
            return None
        meta = dict(payload.meta)
        if payload.sealed_from is not None:
            meta["sealed_from"] = payload.sealed_from
        return TaskRequest(
            id=delivery.task_id,
            kind=payload.kind,
            round=payload.round,
            meta=meta,
            arrays=arrays,
        )
