"""In-memory task delivery: per-participant queues, long-poll wake-ups and reply futures.

The database records every task; the hub holds what is in flight -- the encoded frame to
deliver and the future the workflow waits on -- so delivery needs no database round trip.
A long-poll subscribes an :class:`asyncio.Event` for its participant; the engine thread that
queues a task sets it through ``loop.call_soon_threadsafe``, so the waiting request answers
within the event loop's next iteration (sub-millisecond) instead of on a polling interval.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from fedsilo.federation import Participant, Reply

__all__ = ["PendingTask", "TaskHub", "TaskOutcome"]


@dataclass(frozen=True)
class TaskOutcome:
    """What became of a task: a reply, or the reason it failed."""

    reply: Reply | None = None
    error: str | None = None


@dataclass(eq=False)
class PendingTask:
    id: str
    session_id: str
    participant: Participant
    kind: str
    round: int
    frame: bytes
    future: Future[TaskOutcome] = field(default_factory=Future)
    delivered_at: datetime | None = None
    replied_at: datetime | None = None


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
                self._queues.setdefault(task.participant.id, []).append(task)
                self._tasks[task.id] = task
        self.wake({task.participant.id for task in tasks})

    def take(self, task_id: str) -> PendingTask | None:
        """Remove a task from flight (it got its reply, failed or timed out)."""
        with self._lock:
            task = self._tasks.pop(task_id, None)
            if task is not None:
                queue = self._queues.get(task.participant.id, [])
                if task in queue:
                    queue.remove(task)
            return task

    def take_if(self, task_id: str, session_id: str, participant_id: str) -> PendingTask | None:
        """Take a task only if it belongs to that session and participant."""
        with self._lock:
            task = self._tasks.get(task_id)
            if (
                task is None
                or task.session_id != session_id
                or task.participant.id != participant_id
            ):
                return None
        return self.take(task_id)

    def fail_session(self, session_id: str, reason: str) -> None:
        """Resolve every in-flight task of a session as failed and wake its long-polls."""
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.session_id == session_id]
        for task in tasks:
            if self.take(task.id) is not None and not task.future.done():
                task.future.set_result(TaskOutcome(error=reason))
        self.wake({t.participant.id for t in tasks})

    def fail_all(self, reason: str) -> None:
        with self._lock:
            sessions = {t.session_id for t in self._tasks.values()}
        for session_id in sessions:
            self.fail_session(session_id, reason)

    def wake(self, participant_ids: set[str]) -> None:
        with self._lock:
            targets = [w for pid in participant_ids for w in self._waiters.get(pid, ())]
        for loop, event in targets:
            loop.call_soon_threadsafe(event.set)

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
