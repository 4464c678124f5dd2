"""What the state store hands out: plain frozen values, never ORM rows.

A record is a snapshot: changing the session, participant or token it describes goes through
a :class:`~fedsilo.server.state.protocol.StateStore` method, never through the record. JSON
fields (``model_config``, ``dataset``, ``meta``, ...) are copies the caller may keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from fedsilo.wire import SessionStatus

__all__ = [
    "AuditRecord",
    "LogRecord",
    "ModelRecord",
    "ParticipantRecord",
    "RoundRecord",
    "SessionRecord",
    "SessionWrites",
    "TaskCompletion",
    "TaskRecord",
    "TaskStatus",
    "TokenRecord",
    "UserRecord",
    "utcnow",
]


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: every timestamp the store takes or returns is."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class SessionRecord:
    """One federated job; ``model_config``/``data_config`` are the validated JSON configs."""

    id: str
    name: str
    description: str
    kind: str
    package_name: str
    min_num_clients: int
    num_rounds: int
    model_config: dict[str, Any]
    data_config: dict[str, Any]
    status: SessionStatus
    created_at: datetime
    updated_at: datetime
    round: int = 0
    failure_reason: str | None = None
    created_by: str | None = None
    #: the id (not the name) of the user who created it; the ``*_user_*`` scopes compare it
    owner_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    #: seconds its workflow waits for one reply; None: the server's ``task_timeout``
    task_timeout: float | None = None


@dataclass(frozen=True)
class ParticipantRecord:
    """A client that joined a session. ``seq`` is its join order within the session;
    ``credential_hash`` is the SHA-256 hex of the credential its first join returned."""

    id: str
    session_id: str
    client_name: str
    dataset: dict[str, Any]
    seq: int
    joined_at: datetime
    last_seen_at: datetime | None = None
    credential_hash: str = ""
    public_key: str = ""
    #: when it went silent past the grace period (README "Liveness"); None while live
    offline_at: datetime | None = None


class TaskStatus(StrEnum):
    """The states of a task (plain strings in the table)."""

    queued = "queued"
    done = "done"
    failed = "failed"
    #: queued when the server stopped: its payload lived in memory, so it is never re-sent
    stale = "stale"


@dataclass(frozen=True)
class TaskRecord:
    """One instruction to one participant. The payload itself is never stored here."""

    id: str
    session_id: str
    participant_id: str
    kind: str
    round: int
    meta: dict[str, Any]
    created_at: datetime
    status: TaskStatus = TaskStatus.queued
    reply_meta: dict[str, Any] | None = None
    error: str | None = None
    delivered_at: datetime | None = None
    replied_at: datetime | None = None


@dataclass(frozen=True)
class TaskCompletion:
    """A successful reply, as :meth:`StateStore.complete_tasks` records it."""

    id: str
    reply_meta: dict[str, Any]
    delivered_at: datetime | None = None
    replied_at: datetime | None = None


@dataclass(frozen=True)
class RoundRecord:
    """A round's pooled metrics and each client's (by client name)."""

    session_id: str
    round: int
    federated: dict[str, float]
    per_client: dict[str, dict[str, float]]
    created_at: datetime


@dataclass(frozen=True)
class ModelRecord:
    """Where a session's model frame lives in the artifact store, and its metadata."""

    session_id: str
    round: int
    key: str
    meta: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class LogRecord:
    """One line of a session's log, in the order the lines were appended."""

    session_id: str
    created_at: datetime
    message: str


@dataclass(frozen=True)
class TokenRecord:
    """An API token; only its SHA-256 hash is ever stored."""

    id: str
    name: str
    token_hash: str
    created_at: datetime
    scopes: tuple[str, ...] = ()
    user_id: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True)
class UserRecord:
    """A user: tokens belong to one, sessions are owned by one.

    ``id`` is generated (``<10 hex>@<workspace>``, the seed's email-like id) and never reused,
    so a new user given a deleted user's ``name`` owns none of the old one's sessions.
    ``user_type`` is ``human`` (the bootstrap admin, users created as people) or ``generated``
    (made through the SDK/CLI, as the seed says); ``created_by`` is the creating user's id.
    """

    id: str
    name: str
    user_type: str
    created_at: datetime
    active: bool = True
    created_by: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One state-changing call, or one refused for lack of a scope.

    ``action`` is dotted (``session.create``, ``session.start``, ``session.cancel``,
    ``session.delete``, ``model.download``, ``token.create``, ``token.revoke``,
    ``user.create``, ``user.delete``, ``participant.join``); ``target`` names what it acted
    on (a session id, token id, user name); ``outcome`` is ``ok`` or ``denied``. ``seq`` is
    assigned by the store (0 before).
    """

    at: datetime
    action: str
    target: str
    outcome: str = "ok"
    user_id: str | None = None
    token_id: str | None = None
    address: str | None = None
    detail: str | None = None
    seq: int = 0


@dataclass
class SessionWrites:
    """What a session's workflow recorded since its last write, applied in one transaction
    by :meth:`StateStore.apply`.

    The engine keeps replies and a round's metrics in memory and lets them ride along with
    its next write (a send, a checkpoint, a log line, the model): at 100 clients one commit
    per reply was half of the server's busy time. Applied in field order: new tasks,
    completions (of earlier tasks or of this batch's: the engine's writer may run a send's
    insert after replies to it arrived), rounds (each replacing an earlier record of its
    round), the session's round (the largest of ``session_round`` and the rounds), the model
    record, log lines.
    """

    session_id: str
    tasks: list[TaskRecord] = field(default_factory=list)
    completions: list[TaskCompletion] = field(default_factory=list)
    rounds: list[RoundRecord] = field(default_factory=list)
    session_round: int | None = None
    model: ModelRecord | None = None
    logs: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.tasks
            or self.completions
            or self.rounds
            or self.session_round is not None
            or self.model is not None
            or self.logs
        )

    def extend(self, later: SessionWrites) -> None:
        """Add the writes recorded after these, so that one :meth:`StateStore.apply` does
        both: lists concatenated, the later model record kept, the largest round."""
        if later.session_id != self.session_id:
            raise ValueError(
                f"Cannot merge writes of session {later.session_id!r} into {self.session_id!r}."
            )
        self.tasks.extend(later.tasks)
        self.completions.extend(later.completions)
        # a round recorded again (redone after a restart) keeps its later record
        by_round = {r.round: r for r in [*self.rounds, *later.rounds]}
        self.rounds = [by_round[number] for number in sorted(by_round)]
        if later.session_round is not None:
            self.session_round = max(later.session_round, self.session_round or 0)
        if later.model is not None:
            self.model = later.model
        self.logs.extend(later.logs)
