"""In-memory task delivery: per-participant queues, long-poll wake-ups and outcome futures.

The database records every task; the hub holds what is in flight -- the encoded frame to
deliver and the future the workflow waits on -- so delivery needs no database round trip.
The tasks of one broadcast share one frame object: N recipients, one copy of the payload.

A long-poll subscribes an :class:`asyncio.Event` for its participant; the engine thread that
queues a task sets it through ``loop.call_soon_threadsafe``, so the waiting request answers
within the event loop's next iteration (sub-millisecond) instead of on a polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from fedsilo.federation import Failure, FailureCause, Outcome, Task

__all__ = ["PendingTask", "TaskHub"]


@dataclass(eq=False)
class PendingTask:
    """A task in flight: its frame (possibly shared), and the future its outcome resolves."""

    id: str
    session_id: str
    task: Task
    frame: memoryview
    future: Future[Outcome] = field(default_factory=Future)
    delivered_at: datetime | None = None
    replied_at: datetime | None = None

    @property
    def participant_id(self) -> str:
        return self.task.to.id

    def failure(self, cause: FailureCause, reason: str) -> Failure:
        return Failure(self.task.to, self.task.kind, self.task.round, cause, reason)


class TaskHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[PendingTask]] = {}
        self._tasks: dict[str, PendingTask] = {}
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    # ---------------------------------------------------------------- engine side

    def push(self, tasks: list[PendingTask]) -> None:
        with self._lock:
            for task in tasks:
                self._queues.setdefault(task.participant_id, []).append(task)
                self._tasks[task.id] = task
        self.wake({task.participant_id for task in tasks})

    def get(self, task_id: str) -> PendingTask | None:
        with self._lock:
            return self._tasks.get(task_id)

    def take(self, task_id: str) -> PendingTask | None:
        """Remove a task from flight (it got its reply, failed or timed out)."""
        with self._lock:
            task = self._tasks.pop(task_id, None)
            if task is not None:
                queue = self._queues.get(task.participant_id, [])
                if task in queue:
                    queue.remove(task)
                if not queue:
                    self._queues.pop(task.participant_id, None)
            return task

    def find(self, task_id: str, session_id: str, participant_id: str) -> PendingTask | None:
        """The task if it is in flight for that session and participant."""
        task = self.get(task_id)
        if task is None or task.session_id != session_id or task.participant_id != participant_id:
            return None
        return task

    def fail_session(self, session_id: str, cause: FailureCause, reason: str) -> None:
        """Resolve every in-flight task of a session as failed and wake its long-polls."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.session_id == session_id]
        for task in tasks:
            if self.take(task.id) is not None and not task.future.done():
                task.future.set_result(task.failure(cause, reason))
        self.wake({t.participant_id for t in tasks})

    def take_participant(self, participant_id: str) -> list[PendingTask]:
        """Remove every in-flight task addressed to a participant (it went offline); the
        caller resolves their futures and records them."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.participant_id == participant_id]
        return [task for task in tasks if self.take(task.id) is not None]

    def fail_all(self, cause: FailureCause, reason: str) -> None:
        with self._lock:
            sessions = {t.session_id for t in self._tasks.values()}
        for session_id in sessions:
            self.fail_session(session_id, cause, reason)

    def wake(self, participant_ids: set[str]) -> None:
        with self._lock:
            targets = [w for pid in participant_ids for w in self._waiters.get(pid, ())]
        for loop, event in targets:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(event.set)

    def wake_all(self) -> None:
        """Wake every long-poll (the server is about to stop)."""
        with self._lock:
            participant_ids = set(self._waiters)
        self.wake(participant_ids)

    def frames(self, session_id: str) -> list[memoryview]:
        """The distinct frames a session's in-flight tasks hold (one per broadcast)."""
        with self._lock:
            seen: dict[int, memoryview] = {}
            for task in self._tasks.values():
                if task.session_id == session_id:
                    seen.setdefault(id(task.frame), task.frame)
            return list(seen.values())

    def in_flight(self, session_id: str) -> int:
        with self._lock:
            return sum(1 for t in self._tasks.values() if t.session_id == session_id)

    # ------------------------------------------------------------ long-poll side

    def peek(self, participant_id: str) -> PendingTask | None:
        """The participant's oldest unanswered task. A client handles one task at a time, so
        polling again while one is unanswered means the first delivery was lost: resend it."""
        with self._lock:
            queue = self._queues.get(participant_id)
            return queue[0] if queue else None

    def subscribe(self, participant_id: str) -> asyncio.Event:
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.setdefault(participant_id, set()).add(entry)
        return event

    def unsubscribe(self, participant_id: str, event: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(participant_id, set())
            for entry in [w for w in waiters if w[1] is event]:
                waiters.discard(entry)
            if not waiters:
                self._waiters.pop(participant_id, None)
