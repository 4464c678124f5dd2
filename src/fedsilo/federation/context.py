"""The session context: everything a server-side workflow may do.

A package's workflow is ``run(ctx, model_config, data_config)``. It sees participants only
through :class:`SessionContext` -- no sockets, no SQL -- so the same workflow runs in the
server's engine (:mod:`fedsilo.server.engine`) and in one process for tests and benchmarks
(:mod:`fedsilo.runners.inprocess`)::

    clients = ctx.wait_for_clients(ctx.session.min_num_clients)
    group = ctx.send([Task(to=c, kind="fit", arrays=weights, meta=...) for c in clients])
    for reply in group.as_completed():      # fold each update in as it arrives
        accumulator.add(reply)
    ctx.record_round(server_round, federated=..., per_client=...)
    ctx.checkpoint(server_round, arrays, meta)
    ctx.save_model(arrays, meta, server_round)

:meth:`SessionContext.ask` is sugar: send one task per participant, wait for all of them and
apply a failure policy (:class:`AskMixin` implements it once over ``send``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fedsilo.errors import TaskError
from fedsilo.federation.task import Participant, Reply, Task, TaskGroup
from fedsilo.wire import Arrays

if TYPE_CHECKING:
    from fedsilo.federation.expect import ReplySpec

__all__ = ["AskMixin", "Checkpoint", "SessionContext", "SessionInfo"]


@dataclass(frozen=True)
class SessionInfo:
    """What a workflow knows about its session."""

    id: str
    name: str
    package_name: str
    min_num_clients: int
    num_rounds: int
    model_config: dict[str, Any]
    data_config: dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    """The state a workflow saved after a round; ``restore`` hands it back after a restart."""

    round: int
    arrays: Arrays
    meta: dict[str, Any] = field(default_factory=dict)


class SessionContext(Protocol):
    """Everything a server-side workflow may do. Implemented by the engine and the
    in-process runner."""

    @property
    def session(self) -> SessionInfo: ...

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
        """Block until ``n`` participants joined; return them (in join order)."""
        ...

    def participants(self) -> list[Participant]:
        """Everyone who joined so far, in join order."""
        ...

    def send(self, tasks: Sequence[Task], *, timeout: float | None = None) -> TaskGroup:
        """Queue addressed tasks; return at once with the group their outcomes arrive in.

        ``timeout`` (default: the server's task timeout) is the group's default wait.
        Tasks sharing one ``arrays`` object (and equal ``meta``) are encoded and held once.
        """
        ...

    def ask(
        self,
        participants: Sequence[Participant],
        kind: str,
        arrays: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        round: int = 0,
        timeout: float | None = None,
        accept_failures: bool = True,
        min_replies: int | None = None,
        expect: ReplySpec | None = None,
    ) -> list[Reply]:
        """Send one task per participant, wait for every outcome, apply the failure policy.

        A participant whose task fails (error reply, malformed reply, a reply that does not
        meet ``expect``, timeout) is left out of the result when ``accept_failures`` holds
        and at least ``min_replies`` (default 1) replies came back; otherwise
        :class:`fedsilo.errors.TaskError` is raised and the engine fails the session with
        that reason.
        """
        ...

    def record_round(
        self,
        round: int,
        federated: Mapping[str, float],
        per_client: Mapping[str, Mapping[str, float]],
    ) -> None:
        """Persist one round's federated metrics and per-client metrics (keyed by client name)."""
        ...

    def checkpoint(self, round: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Persist the workflow state after round ``round`` (atomically)."""
        ...

    def restore(self) -> Checkpoint | None:
        """The last checkpoint, or None on a fresh start."""
        ...

    def save_model(self, arrays: Mapping[str, Any], meta: Mapping[str, Any], round: int) -> None:
        """Persist the session's model (the one ``GET /model`` serves)."""
        ...

    def load_model(self, session_id: str) -> tuple[Arrays, dict[str, Any]] | None:
        """Another session's saved model: its arrays and header (``meta``,
        ``model_config``, ``data_config``, ...), or None when it saved none. A VFL session
        reads its PRL session's alignment and, to predict, its training session's record."""
        ...

    def log(self, message: str) -> None:
        """Record a line in the session's log."""
        ...


class AskMixin:
    """:meth:`SessionContext.ask` over :meth:`SessionContext.send`, for every context."""

    def send(self, tasks: Sequence[Task], *, timeout: float | None = None) -> TaskGroup:
        raise NotImplementedError

    def log(self, message: str) -> None:
        raise NotImplementedError

    def ask(
        self,
        participants: Sequence[Participant],
        kind: str,
        arrays: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        round: int = 0,
        timeout: float | None = None,
        accept_failures: bool = True,
        min_replies: int | None = None,
        expect: ReplySpec | None = None,
    ) -> list[Reply]:
        if not participants:
            raise TaskError(f"round {round}: no participant to send task {kind!r} to")
        shared_meta = dict(meta or {})
        shared_arrays = dict(arrays or {})
        group = self.send(
            [
                Task(
                    to=p,
                    kind=kind,
                    meta=shared_meta,
                    arrays=shared_arrays,
                    round=round,
                    expect=expect,
                )
                for p in participants
            ],
            timeout=timeout,
        )
        replies = list(group.as_completed())
        failures = group.failures
        needed = min_replies if min_replies is not None else 1
        if failures:
            listed = "; ".join(str(f) for f in failures)
            self.log(f"round {round}: task {kind!r} failed on {len(failures)} client(s): {listed}")
            if not accept_failures:
                raise TaskError(
                    f"round {round}: task {kind!r} failed and accept_failures is false: {listed}"
                )
        if len(replies) < needed:
            listed = "; ".join(str(f) for f in failures)
            raise TaskError(
                f"round {round}: task {kind!r} got {len(replies)} successful replies; "
                f"at least {needed} needed" + (f" ({listed})" if failures else "")
            )
        # In send order, as the list form always was.
        order = {p.id: i for i, p in enumerate(participants)}
        replies.sort(key=lambda r: order.get(r.participant.id, len(order)))
        return replies
