"""The fast exchange: peer messages held in the server's memory for chatty protocols.

A vertical SplitNN sends an embedding and a gradient every mini-batch; a task row per message
would put a database write on each. Here a message is queued in its recipient's mailbox in
memory and handed to the recipient's long-poll: it is never written to the database or the
artifact store, it is lost when the server restarts (the protocol resumes from its own
checkpoint), and a session's mailboxes are dropped when it ends. Payloads are normally sealed
to the recipient, so the relay holds bytes it cannot read.

Everything runs on the server's event loop, so the structures need no lock and a delivery is
a method call, not a thread hop: a sender's ``put`` sets the recipient mailbox's
:class:`asyncio.Event` and the waiting long-poll answers on the loop's next iteration. Waiters
take the current event and replace it when it fires ("generation" events), so several senders
waiting for room and a receiver waiting for a message never miss a wake-up.

Bounds keep a slow or absent recipient from exhausting the server: a message is at most
:data:`MAX_MESSAGE_BYTES`; a mailbox holds at most :data:`MAILBOX_MESSAGES` messages and
:data:`MAILBOX_BYTES` bytes; the relay as a whole at most :data:`RELAY_BYTES`. A sender facing
a full mailbox waits (backpressure) and is told to retry when no room appears in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field

__all__ = [
    "MAILBOX_BYTES",
    "MAILBOX_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "RELAY_BYTES",
    "ROOM_WAIT_S",
    "MessageRelay",
    "RelayMessage",
]

#: largest payload one message may carry. A SplitNN batch of 1,024 rows x 1,024 float32
#: activations is 4 MiB; 16 MiB leaves room for wider cuts and still sends in ~10 ms on a LAN.
MAX_MESSAGE_BYTES = 16 * 2**20
#: messages one recipient's mailbox holds. Per-batch protocols run in lock step (a message,
#: then its answer), so a deep queue only hides a stalled peer; 64 absorbs pipelined batches.
MAILBOX_MESSAGES = 64
#: bytes one recipient's mailbox holds: four full-size messages.
MAILBOX_BYTES = 4 * MAX_MESSAGE_BYTES
#: bytes the whole relay holds, over every session: what the server lends to fast exchanges.
RELAY_BYTES = 1024 * 2**20
#: seconds a sender waits for room in a full mailbox before it is told to retry: long enough
#: to cover a recipient between two long-polls, short enough that a stalled peer shows.
ROOM_WAIT_S = 1.0


@dataclass(frozen=True)
class RelayMessage:
    """One relayed message: who sent it, its tag, its (normally sealed) payload."""

    sender: str
    tag: str
    payload: bytes


@dataclass(eq=False)
class _Mailbox:
    messages: deque[RelayMessage] = field(default_factory=deque)
    nbytes: int = 0
    #: set (and replaced) when a message arrives or the mailbox is dropped
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False


class MessageRelay:
    """Bounded in-memory mailboxes, one per (session, participant).

    Every method must be called on the server's event loop, except
    :meth:`drop_session_threadsafe`, which the engine's worker threads may call.

    Parameters
    ----------
    max_message_bytes, mailbox_messages, mailbox_bytes, relay_bytes : int
        The bounds described in the module docstring (tests lower them).
    room_wait : float
        Seconds :meth:`put` waits for room by default.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        mailbox_messages: int = MAILBOX_MESSAGES,
        mailbox_bytes: int = MAILBOX_BYTES,
        relay_bytes: int = RELAY_BYTES,
        room_wait: float = ROOM_WAIT_S,
    ) -> None:
        for name, value in (
            ("max_message_bytes", max_message_bytes),
            ("mailbox_messages", mailbox_messages),
            ("mailbox_bytes", mailbox_bytes),
            ("relay_bytes", relay_bytes),
        ):
            if value < 1:
                raise ValueError(f"The {name!r} parameter must be >= 1. Got {value}.")
        self.max_message_bytes = max_message_bytes
        self.mailbox_messages = mailbox_messages
        self.mailbox_bytes = mailbox_bytes
        self.relay_bytes = relay_bytes
        if room_wait < 0:
            raise ValueError(f"The 'room_wait' parameter must be >= 0. Got {room_wait}.")
        self.room_wait = room_wait
        self._mailboxes: dict[tuple[str, str], _Mailbox] = {}
        self._nbytes = 0
        #: set (and replaced) whenever room is freed anywhere: a take, or a dropped session
        self._freed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: monotonic time of the last sweep for ended sessions (kept by the API)
        self.swept_at = 0.0

    # ------------------------------------------------------------------ sending

    async def put(
        self, session_id: str, recipient_id: str, message: RelayMessage, wait: float
    ) -> bool:
        """Queue ``message`` for ``recipient_id``, waiting up to ``wait`` seconds for room.

        Returns
        -------
        bool
            True when queued; False when the mailbox (or the relay) stayed full, or the
            session's mailboxes were dropped while waiting.

        Raises
        ------
        ValueError
            When the payload exceeds ``max_message_bytes`` (the API answers 413 before this).
        """
        self._remember_loop()
        size = len(message.payload)
        if size > self.max_message_bytes:
            raise ValueError(
                f"A relayed message is at most {self.max_message_bytes} bytes. Got {size}."
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            mailbox = self._mailbox(session_id, recipient_id)
            if self._has_room(mailbox, size):
                mailbox.messages.append(message)
                mailbox.nbytes += size
                self._nbytes += size
                _wake(mailbox)
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            freed = self._freed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await freed.wait()
            if mailbox.dropped:
                return False

    def _has_room(self, mailbox: _Mailbox, size: int) -> bool:
        return (
            len(mailbox.messages) < self.mailbox_messages
            and mailbox.nbytes + size <= self.mailbox_bytes
            and self._nbytes + size <= self.relay_bytes
        )

    # ---------------------------------------------------------------- receiving

    async def take(self, session_id: str, participant_id: str, wait: float) -> RelayMessage | None:
        """The oldest message for ``participant_id``, waiting up to ``wait`` seconds for one.

        Returns None when none came in time, or when the session's mailboxes were dropped.
        """
        self._remember_loop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            mailbox = self._mailbox(session_id, participant_id)
            if mailbox.messages:
                message = mailbox.messages.popleft()
                size = len(message.payload)
                mailbox.nbytes -= size
                self._nbytes -= size
                self._fire_freed()
                return message
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            arrived = mailbox.arrived
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await arrived.wait()
            if mailbox.dropped:
                return None

    def put_back(self, session_id: str, participant_id: str, message: RelayMessage) -> None:
        """Return a message :meth:`take` handed out but could not deliver, to the mailbox's
        head (over the bounds if need be: it was counted in them a moment ago)."""
        mailbox = self._mailbox(session_id, participant_id)
        mailbox.messages.appendleft(message)
        mailbox.nbytes += len(message.payload)
        self._nbytes += len(message.payload)
        _wake(mailbox)

    # ---------------------------------------------------------------- lifecycle

    def drop_session(self, session_id: str) -> int:
        """Forget every message of a session and wake its waiters; returns messages dropped."""
        dropped = 0
        for key in [k for k in self._mailboxes if k[0] == session_id]:
            mailbox = self._mailboxes.pop(key)
            dropped += len(mailbox.messages)
            self._nbytes -= mailbox.nbytes
            mailbox.messages.clear()
            mailbox.nbytes = 0
            mailbox.dropped = True
            _wake(mailbox)
        self._fire_freed()
        return dropped

    def drop_session_threadsafe(self, session_id: str) -> None:
        """:meth:`drop_session` from any thread (the engine's, when a workflow ends)."""
        loop = self._loop
        if loop is None:  # nothing was ever relayed: nothing to drop
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed: memory is gone
            loop.call_soon_threadsafe(self.drop_session, session_id)

    def sessions(self) -> set[str]:
        """Sessions that have mailboxes (for the sweep of ended sessions)."""
        return {key[0] for key in self._mailboxes}

    def held(self, session_id: str | None = None) -> tuple[int, int]:
        """``(messages, bytes)`` held, for one session or for the whole relay."""
        boxes = [
            box
            for key, box in self._mailboxes.items()
            if session_id is None or key[0] == session_id
        ]
        return sum(len(b.messages) for b in boxes), sum(b.nbytes for b in boxes)

    # ------------------------------------------------------------------ helpers

    def _mailbox(self, session_id: str, participant_id: str) -> _Mailbox:
        key = (session_id, participant_id)
        mailbox = self._mailboxes.get(key)
        if mailbox is None:
            mailbox = self._mailboxes[key] = _Mailbox()
        return mailbox

    def _fire_freed(self) -> None:
        self._freed.set()
        self._freed = asyncio.Event()

    def _remember_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()


def _wake(mailbox: _Mailbox) -> None:
    """Wake everyone waiting on the mailbox's current event and arm a fresh one."""
    mailbox.arrived.set()
    mailbox.arrived = asyncio.Event()
