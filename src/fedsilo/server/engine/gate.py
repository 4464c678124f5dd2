"""Backpressure on large replies, so the server never holds N decoded updates.

A reply handler takes a :class:`Slot` from its session's :class:`ReplyGate` *before* it reads
the request body. While no slot is free the body is not read: uvicorn's flow control pauses
the socket after 64 KiB, so the rest of the update waits in the client's kernel buffers, not
in the server. A slot is given back when the workflow is done with the reply (the task group
handed it out and the workflow asked for the next outcome), when the reply turned out to be a
failure, or when the reply is garbage collected unconsumed (a group the workflow dropped).

With ``capacity`` 1 the server reads the next update once the workflow has folded in the
previous one, so at most two received updates are alive per session (the one the workflow
still holds, the one being read), whatever the number of clients.
Replies smaller than :data:`SMALL_REPLY_BYTES` skip the gate: holding a few of them costs
nothing, and gating them would add a thread hand-off per reply to every no-op round.

A reply waiting for its slot comes from a live client (its request is open, its body unread
in its socket): ``acquire(..., keepalive=...)`` calls ``keepalive`` every
:data:`KEEPALIVE_S` while it waits, so the caller can count the participant as heard from.
Without it, at 50 clients on a loaded machine the last replies of a round waited past the
liveness grace (30 s), their tasks failed as offline, and their bodies were then read only
to be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable

__all__ = ["KEEPALIVE_S", "SMALL_REPLY_BYTES", "ReplyGate", "Slot"]

#: replies below this size (by Content-Length) are not gated: 1 MiB x 100 clients is 100 MB,
#: the size of one large update, and a no-op round stays free of hand-offs
SMALL_REPLY_BYTES = 1 << 20
#: seconds between two ``keepalive`` calls while a reply waits for its slot: well inside the
#: shortest liveness grace a test uses (a few seconds), and nothing beside a round's work
KEEPALIVE_S = 1.0


class Slot:
    """One admitted reply; :meth:`release` (idempotent, any thread) frees its place."""

    def __init__(self, gate: ReplyGate | None) -> None:
        self._gate = gate
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            gate, self._gate = self._gate, None
        if gate is not None:
            gate.release_one()


class ReplyGate:
    """At most ``capacity`` large replies received and not yet consumed by the workflow.

    Acquired on the event loop (no thread blocks while a reply waits); released from any
    thread, usually the workflow's.
    """

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"A reply gate needs capacity >= 1. Got {capacity}.")
        self.capacity = capacity
        self._free = capacity
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        with self._lock:
            return self.capacity - self._free

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)

    async def acquire(self, size: int | None, keepalive: Callable[[], None] | None = None) -> Slot:
        """A slot for a reply of ``size`` bytes (None: unknown, treated as large);
        ``keepalive`` is called every :data:`KEEPALIVE_S` while the reply waits."""
        if size is not None and size < SMALL_REPLY_BYTES:
            return Slot(None)
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return Slot(self)
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            while True:
                # shielded: a keepalive tick must not cancel the place in the queue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), KEEPALIVE_S)
                    break
                if keepalive is not None:
                    keepalive()
        except asyncio.CancelledError:
            # The client went away. If the slot was already handed to us, pass it on.
            with self._lock:
                try:
                    self._waiters.remove((loop, waiter))
                    granted = False
                except ValueError:
                    granted = True
            if granted:
                self.release_one()
            raise
        return Slot(self)

    def release_one(self) -> None:
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            loop, waiter = self._waiters.popleft()
        # The slot passes straight to the oldest waiter; its loop resumes it.
        try:
            loop.call_soon_threadsafe(_grant, waiter)
        except RuntimeError:  # that loop is closed (server stopping): the slot is simply free
            with self._lock:
                self._free += 1


def _grant(waiter: asyncio.Future[None]) -> None:
    # A waiter canceled after it was popped gives the slot back in acquire().
    if not waiter.done():
        waiter.set_result(None)
