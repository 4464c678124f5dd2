"""Client-side middleware: what every task passes through on its way to the executor.

A :class:`Mod` wraps the handling of one task: it gets the task and the next handler, and
returns the reply -- calling the next handler, changing what goes in or comes out, or
answering itself. Cross-cutting concerns live here rather than in package code (Flower's
``secaggplus_mod`` and ``localdp_mod``, NVFlare's ``Filter``). The runtime's chain, outermost
first::

    release_once(store)        a question answered before gets the same bytes again
      accounting(hook)         sees every *new* release (DP budget bookkeeping)
        policy.gate            the data owner's policy on the task as sent (policy.py)
          secure_aggregation   answers the secagg.* stages, masks fit replies
            policy.check_release  the policy on the executor's reply (rows, epsilon)
              the executor     handle(kind, meta, arrays)

Order matters: :func:`release_once` is outermost so that what it stores, and replays, is
exactly what left the silo after every other mod -- under secure aggregation the masked
vector, never the update; the accounting hook sits inside it so a replay, which releases
nothing new, is never counted twice; the masking is innermost, right over the executor, so
no other mod sees (or could leak) the unmasked update
(:mod:`fedsilo.client.secure`) -- but the policy's release check, which reads only the
reply's row counts and epsilon, so it can refuse before anything is masked or sent.

Release-once is the one mechanism that stops a second, differently noised answer to the
same question (see :mod:`fedsilo.client.replies`): it keys the encoded reply frame by a
digest of the question on disk, so it holds across restarts of the client and of the server.
Packages keep no copy of it: a package's privacy ledger (:mod:`fedsilo.privacy.ledger`) only
plans the budget and refuses rounds outside it. :func:`client_mods` is the chain's one
definition, used by the client runtime and by the in-process runner
(:mod:`fedsilo.runners.inprocess`), so tests see what a real client would send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fedsilo.client.replies import ReplyStore, question_digest
from fedsilo.wire import Arrays, ReplyEnvelope, encode_frame

if TYPE_CHECKING:
    from fedsilo.client.policy import PolicyGuard
    from fedsilo.client.secure import SealingPeer

__all__ = [
    "Handler",
    "Mod",
    "TaskReply",
    "TaskRequest",
    "accounting",
    "chain",
    "client_mods",
    "release_once",
]


@dataclass(frozen=True)
class TaskRequest:
    """One task as the mods and the executor see it.

    Attributes
    ----------
    id : str
    kind : str
    round : int
    meta : dict
        The task's meta; for a forwarded sealed payload ``meta["sealed_from"]`` names the
        sender.
    arrays : dict of str to ndarray
    """

    id: str
    kind: str
    round: int
    meta: dict[str, Any]
    arrays: Arrays

    @property
    def label(self) -> str:
        return f"task {self.id} ({self.kind}, round {self.round})"


@dataclass
class TaskReply:
    """A reply on its way out: ``ok`` with meta and arrays, or ``error`` with a message.

    :meth:`frame` encodes it once; a reply replayed by :func:`release_once` carries the
    stored frame and is sent byte for byte.
    """

    status: Literal["ok", "error"]
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: Arrays = field(default_factory=dict)
    error: str | None = None
    replayed: bool = False
    _frame: bytes | None = None

    @classmethod
    def failed(cls, message: str) -> TaskReply:
        return cls(status="error", error=message)

    @classmethod
    def from_frame(cls, frame: bytes) -> TaskReply:
        """A reply already encoded (a replay): sent as these exact bytes."""
        return cls(status="ok", replayed=True, _frame=frame)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def frame(self) -> bytes:
        """The reply frame; raises when the meta is not JSON-able (the package's failure)."""
        if self._frame is None:
            envelope = ReplyEnvelope(status=self.status, meta=self.meta, error=self.error)
            self._frame = encode_frame(self.arrays, envelope)
        return self._frame


Handler = Callable[[TaskRequest], TaskReply]
#: ``mod(task, call_next) -> reply``
Mod = Callable[[TaskRequest, Handler], TaskReply]


def chain(mods: Sequence[Mod], handler: Handler) -> Handler:
    """``handler`` wrapped by ``mods``, the first outermost."""
    wrapped = handler
    for mod in reversed(mods):
        wrapped = _bind(mod, wrapped)
    return wrapped


def _bind(mod: Mod, call_next: Handler) -> Handler:
    def handle(task: TaskRequest) -> TaskReply:
        return mod(task, call_next)

    return handle


def release_once(store: ReplyStore, on_replay: Callable[[TaskRequest], None] | None = None) -> Mod:
    """A question answered before is answered with the same bytes (see the module docstring).

    Parameters
    ----------
    store : ReplyStore
        The replies released by this participant, on its disk.
    on_replay : callable, optional
        Told about each replay (the runtime logs it).
    """

    def mod(task: TaskRequest, call_next: Handler) -> TaskReply:
        digest = question_digest(task.kind, task.round, task.meta, task.arrays)
        released = store.get(task.kind, digest)
        if released is not None:
            if on_replay is not None:
                on_replay(task)
            return TaskReply.from_frame(released)
        reply = call_next(task)
        if reply.ok:
            # Stored before it is sent: a crash between the two replays it, never redoes it.
            store.put(task.kind, digest, reply.frame())
        return reply

    return mod


def accounting(hook: Callable[[TaskRequest, TaskReply], None]) -> Mod:
    """Call ``hook(task, reply)`` for every successful new release (not for replays when
    placed inside :func:`release_once`); a hook that raises turns the reply into an error,
    so nothing whose cost could not be recorded is released."""

    def mod(task: TaskRequest, call_next: Handler) -> TaskReply:
        reply = call_next(task)
        if reply.ok and not reply.replayed:
            hook(task, reply)
        return reply

    return mod


def client_mods(
    store: ReplyStore,
    mods: Sequence[Mod] = (),
    on_replay: Callable[[TaskRequest], None] | None = None,
    *,
    peer: SealingPeer | None = None,
    policy: PolicyGuard | None = None,
) -> list[Mod]:
    """The mods every task of a participant passes through, outermost first.

    :func:`release_once` over ``store``, then ``mods`` (the accounting hook), then the
    secure-aggregation mod: see the module docstring for why in this order.

    Parameters
    ----------
    store : ReplyStore
        The participant's released replies (its state directory).
    mods : sequence of Mod, optional
        The runtime's further mods, outermost first.
    on_replay : callable, optional
        Passed to :func:`release_once`.
    peer : SealingPeer, optional
        The participant's identity and keys (its
        :class:`~fedsilo.client.context.ClientContext`), which secure aggregation seals its
        shares with; without it the client refuses secure-aggregation tasks.
    policy : PolicyGuard, optional
        The data owner's policy (:mod:`fedsilo.client.policy`): its gate goes outside the
        secure-aggregation mod, its release check inside it.

    Returns
    -------
    list of Mod
        For :func:`chain` (or the task loop, which chains them over the executor).
    """
    # Imported here: the secure mod builds on this module's types.
    from fedsilo.client.secure import secure_aggregation

    if policy is None:
        return [release_once(store, on_replay), *mods, secure_aggregation(peer)]
    return [
        release_once(store, on_replay),
        *mods,
        policy.gate,
        secure_aggregation(peer),
        policy.check_release,
    ]
