"""Addressed tasks, their replies and failures, and the group a workflow waits on.

A workflow talks to participants only through tasks. A :class:`Task` names its recipient
(``to``), a ``kind`` the recipient's executor handles, JSON ``meta`` and either named
``arrays`` or a ``sealed`` payload: bytes the sender encrypted to the recipient's X25519 key,
which the server relays without being able to read (see :mod:`fedsilo.client.keys`).

:meth:`SessionContext.send <fedsilo.federation.context.SessionContext.send>` queues tasks and
returns a :class:`TaskGroup`. Its replies come back as they arrive (:meth:`TaskGroup.as_completed`,
for streaming and asynchronous aggregation) or together (:meth:`TaskGroup.wait`). A task that
fails comes back as a :class:`Failure` value -- participant, kind, round, cause, reason -- never
as a string to parse.

Every context (the server's engine, the in-process runner) resolves one
:class:`concurrent.futures.Future` per task with a :class:`Reply` or a :class:`Failure`; the
group is the same class for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.wire import Arrays, DatasetSummary

if TYPE_CHECKING:
    from fedsilo.federation.expect import ReplySpec

__all__ = [
    "SEALED_ARRAY",
    "Failure",
    "FailureCause",
    "Outcome",
    "Participant",
    "Reply",
    "Sealed",
    "Task",
    "TaskGroup",
    "sealed_arrays",
    "split_sealed",
]

#: The frame array that carries a sealed payload (uint8 ciphertext). Reserved: a package's own
#: arrays may not use this name.
SEALED_ARRAY = "fedsilo.sealed"

FailureCause = Literal["error", "timeout", "offline", "malformed", "canceled", "ended"]


@dataclass(frozen=True)
class Participant:
    """A client that joined the session.

    Attributes
    ----------
    id : str
        The participant id tasks are addressed to.
    client_name : str
    dataset : DatasetSummary
        Row counts and column names and types it declared on joining -- never values.
    public_key : bytes
        Its X25519 public key (32 bytes); peers seal payloads to it. Empty when unknown.
    """

    id: str
    client_name: str
    dataset: DatasetSummary
    public_key: bytes = b""


@dataclass(frozen=True)
class Sealed:
    """A payload only its recipient can open; the server relays it unread.

    Attributes
    ----------
    sender : str
        Participant id of the sender (the recipient needs its public key to open it).
    ciphertext : bytes
        What :func:`fedsilo.client.keys.seal` produced.
    """

    sender: str
    ciphertext: bytes


@dataclass(frozen=True)
class Task:
    """One message from the workflow to one participant.

    Parameters
    ----------
    to : Participant
    kind : str
        What the recipient's executor is asked to do (``"fit"``, ``"evaluate"``, ...).
    meta : mapping, optional
        JSON-able control data.
    arrays : mapping of str to ndarray, optional
        Named arrays. Tasks of one :meth:`~fedsilo.federation.context.SessionContext.send`
        that share the same ``arrays`` object (and ``meta``) are encoded and held once.
    sealed : Sealed, optional
        A peer's sealed payload to forward (usually ``reply.sealed``); excludes ``arrays``.
    round : int
        The round the task belongs to (0 outside rounds).
    expect : ReplySpec, optional
        What the reply must carry (arrays, shapes, dtypes, finite values, counts within the
        participant's declared rows); a reply that does not is a ``"malformed"``
        :class:`Failure` (see :mod:`fedsilo.federation.expect`). None: unchecked.
    """

    to: Participant
    kind: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, Any] | None = None
    sealed: Sealed | None = None
    round: int = 0
    expect: ReplySpec | None = None

    def __post_init__(self) -> None:
        if self.sealed is not None and self.arrays:
            raise TaskError(
                f"Task {self.kind!r} to {self.to.client_name!r} carries both arrays and a "
                "sealed payload; a task carries one or the other."
            )
        if self.arrays and SEALED_ARRAY in self.arrays:
            raise TaskError(f"The array name {SEALED_ARRAY!r} is reserved for sealed payloads.")


@dataclass(frozen=True)
class Reply:
    """One participant's successful answer to a task.

    Attributes
    ----------
    participant : Participant
    meta : dict
    arrays : dict of str to ndarray
    sealed : Sealed or None
        A payload the participant sealed to a peer; forward it with ``Task(sealed=...)``.
    kind : str
        The kind of the task answered.
    round : int
    """

    participant: Participant
    meta: dict[str, Any]
    arrays: Arrays
    sealed: Sealed | None = None
    kind: str = ""
    round: int = 0


@dataclass(frozen=True)
class Failure:
    """A task that got no usable reply.

    Attributes
    ----------
    participant : Participant
    kind : str
    round : int
    cause : {"error", "timeout", "offline", "malformed", "canceled", "ended"}
        ``error``: the client's executor reported one; ``timeout``: no reply in time;
        ``offline``: the participant went silent past the server's grace period (or was
        silent when the task was sent), so the task failed without waiting out its timeout;
        ``malformed``: the reply frame did not decode, or the reply did not meet the task's
        ``expect``; ``canceled``: the workflow dropped the
        task; ``ended``: the session or server stopped.
    reason : str
        The human-readable detail (the client's error message, the timeout, ...).
    check : str
        For a reply that did not meet the task's ``expect``, which check it failed (one of
        :data:`fedsilo.federation.expect.CHECKS`); empty otherwise.
    """

    participant: Participant
    kind: str
    round: int
    cause: FailureCause
    reason: str
    check: str = ""

    def __str__(self) -> str:
        return f"{self.participant.client_name}: {self.reason}"


Outcome = Reply | Failure


def split_sealed(arrays: Arrays, sender: str) -> tuple[Arrays, Sealed | None]:
    """Take the sealed payload (if any) out of a decoded frame's arrays."""
    if SEALED_ARRAY not in arrays:
        return arrays, None
    rest = {k: v for k, v in arrays.items() if k != SEALED_ARRAY}
    return rest, Sealed(sender=sender, ciphertext=arrays[SEALED_ARRAY].tobytes())


def sealed_arrays(sealed: Sealed) -> Arrays:
    """A sealed payload as the one array a frame carries."""
    return {SEALED_ARRAY: np.frombuffer(sealed.ciphertext, dtype=np.uint8)}


class TaskGroup:
    """The tasks of one ``send`` and, as they arrive, their outcomes.

    Parameters
    ----------
    tasks : sequence of Task
    futures : sequence of Future
        One per task, in the same order, resolved with a :class:`Reply` or a :class:`Failure`.
    expire : callable(index, cause, reason) -> bool
        Called for a task the group gives up on (timeout or :meth:`cancel`). It withdraws the
        task from delivery and resolves its future with a :class:`Failure`; it returns False
        when the reply won the race (the future then resolves with the reply).
    default_timeout : float or None
        Seconds :meth:`as_completed` and :meth:`wait` allow when not told.

    Notes
    -----
    The group keeps no reference to an outcome it has handed out, so a workflow that folds
    each reply into a running sum never holds more than the replies it has not consumed.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        futures: Sequence[Future[Outcome]],
        expire: Callable[[int, FailureCause, str], bool],
        default_timeout: float | None = None,
    ) -> None:
        if len(tasks) != len(futures):
            raise ValueError("a TaskGroup needs one future per task")
        self.tasks = list(tasks)
        self._pending: dict[Future[Outcome], int] = {f: i for i, f in enumerate(futures)}
        self._expire = expire
        self._default_timeout = default_timeout
        #: failures seen so far, in the order they were seen
        self.failures: list[Failure] = []
        #: how many replies have been handed out
        self.num_replies = 0

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def outstanding(self) -> int:
        """Tasks whose outcome has not been handed out yet."""
        return len(self._pending)

    def outcomes(self, timeout: float | None = None) -> Iterator[Outcome]:
        """Every task's outcome, in arrival order: replies and failures alike.

        Tasks still unanswered ``timeout`` seconds after the call (default: the context's
        task timeout) are expired and come out as ``Failure(cause="timeout")``.
        """
        limit = self._default_timeout if timeout is None else timeout
        deadline = None if limit is None else time.monotonic() + limit
        while self._pending:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = wait_futures(
                list(self._pending), timeout=remaining, return_when=FIRST_COMPLETED
            )
            if not done:
                self._expire_all("timeout", f"no reply within {limit:g} s")
                continue
            # One at a time, dropping each future before the next yield: a batch that arrived
            # together must not stay alive until its last member is consumed. Within a batch,
            # in task order, so an in-process run sums in the same order every time.
            batch = sorted(done, key=self._pending.__getitem__, reverse=True)
            del done
            while batch:
                future = batch.pop()
                self._pending.pop(future)
                outcome = future.result()
                del future
                if isinstance(outcome, Failure):
                    self.failures.append(outcome)
                else:
                    self.num_replies += 1
                yield outcome
                del outcome

    def as_completed(self, timeout: float | None = None) -> Iterator[Reply]:
        """Successful replies as they arrive; failures are collected in :attr:`failures`."""
        for outcome in self.outcomes(timeout):
            if isinstance(outcome, Reply):
                yield outcome
            # dropped before the next one is awaited, as in outcomes()
            del outcome

    def wait(self, min_replies: int | None = None, timeout: float | None = None) -> list[Reply]:
        """Wait for ``min_replies`` replies (default: every task), then return them.

        Tasks still outstanding when ``min_replies`` is reached stay in flight; a later
        :meth:`as_completed` yields them, or :meth:`cancel` drops them.

        Raises
        ------
        TaskError
            When fewer than ``min_replies`` replies can still come (too many failures, or the
            timeout passed); the message lists every failure.
        """
        needed = len(self.tasks) if min_replies is None else min_replies
        replies: list[Reply] = []
        if needed > 0:
            for reply in self.as_completed(timeout):
                replies.append(reply)
                if len(replies) >= needed:
                    break
        if len(replies) < needed:
            kind = self.tasks[0].kind if self.tasks else "?"
            listed = "; ".join(str(f) for f in self.failures)
            raise TaskError(
                f"task {kind!r} got {len(replies)} successful replies; at least {needed} "
                f"needed" + (f" ({listed})" if listed else "")
            )
        return replies

    def cancel(self, reason: str = "canceled by the workflow") -> None:
        """Withdraw every outstanding task; a late reply to one is refused (409)."""
        self._expire_all("canceled", reason)
        for future in list(self._pending):
            outcome = future.result()
            if isinstance(outcome, Failure):
                self.failures.append(outcome)
            self._pending.pop(future)

    def _expire_all(self, cause: FailureCause, reason: str) -> None:
        for future, index in list(self._pending.items()):
            if not future.done():
                self._expire(index, cause, reason)
