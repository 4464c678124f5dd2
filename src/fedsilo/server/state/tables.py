"""SQLAlchemy tables of :class:`~fedsilo.server.state.sql.SqlStore`: sessions, participants,
tasks, rounds, models, tokens, users, the audit log, session logs. Only ``state/`` reads or
writes them.

User ids are kept as plain strings, not foreign keys: a deleted user's tokens stay (revoked)
and the sessions they owned stay owned by the id, so an audit or an ownership check still
names who it was and a new user of the same name inherits nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fedsilo.server.state.records import (
    AuditRecord,
    ModelRecord,
    ParticipantRecord,
    RoundRecord,
    SessionRecord,
    TaskRecord,
    TaskStatus,
    TokenRecord,
    UserRecord,
    utcnow,
)
from fedsilo.wire import SessionStatus

__all__ = [
    "USER_ID_LENGTH",
    "AuditRow",
    "Base",
    "ModelRow",
    "ParticipantRow",
    "RoundRow",
    "SessionLogRow",
    "SessionRow",
    "TaskRow",
    "TokenRow",
    "UserRow",
    "utcnow",
]

#: room for a generated user id (``<10 hex>@<workspace>``) with a long workspace name
USER_ID_LENGTH = 200


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(10), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16))
    package_name: Mapped[str] = mapped_column(String(100))
    min_num_clients: Mapped[int]
    num_rounds: Mapped[int]
    model_config_: Mapped[dict[str, Any]] = mapped_column("model_config")
    data_config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)
    round: Mapped[int] = mapped_column(default=0)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(200))
    owner_id: Mapped[str | None] = mapped_column(String(USER_ID_LENGTH), doc="the owner's user id")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    task_timeout: Mapped[float | None] = mapped_column(Float, doc="seconds; None: the server's")

    def record(self) -> SessionRecord:
        return SessionRecord(
            id=self.id,
            name=self.name,
            description=self.description,
            kind=self.kind,
            package_name=self.package_name,
            min_num_clients=self.min_num_clients,
            num_rounds=self.num_rounds,
            model_config=dict(self.model_config_),
            data_config=dict(self.data_config),
            status=SessionStatus(self.status),
            round=self.round,
            failure_reason=self.failure_reason,
            created_by=self.created_by,
            owner_id=self.owner_id,
            created_at=self.created_at,
            updated_at=self.updated_at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            task_timeout=self.task_timeout,
        )


class ParticipantRow(Base):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("session_id", "client_name"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    client_name: Mapped[str] = mapped_column(String(128))
    dataset: Mapped[dict[str, Any]]
    seq: Mapped[int] = mapped_column(Integer, doc="join order within the session")
    joined_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    #: SHA-256 of the participant credential returned by the first join
    credential_hash: Mapped[str] = mapped_column(String(64), default="")
    #: X25519 public key, url-safe base64 without padding
    public_key: Mapped[str] = mapped_column(String(64), default="")
    #: when it went silent past the grace period; null while live
    offline_at: Mapped[datetime | None]

    def record(self) -> ParticipantRecord:
        return ParticipantRecord(
            id=self.id,
            session_id=self.session_id,
            client_name=self.client_name,
            dataset=dict(self.dataset),
            seq=self.seq,
            joined_at=self.joined_at,
            last_seen_at=self.last_seen_at,
            credential_hash=self.credential_hash,
            public_key=self.public_key,
            offline_at=self.offline_at,
        )


class TaskRow(Base):
    """One instruction to one participant. Payload arrays live in memory only: after a restart
    the workflow re-asks from its checkpoint, so stale tasks are never re-sent."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    round: Mapped[int]
    meta: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued|done|failed|stale
    reply_meta: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    replied_at: Mapped[datetime | None]

    def record(self) -> TaskRecord:
        return TaskRecord(
            id=self.id,
            session_id=self.session_id,
            participant_id=self.participant_id,
            kind=self.kind,
            round=self.round,
            meta=dict(self.meta),
            created_at=self.created_at,
            status=TaskStatus(self.status),
            reply_meta=dict(self.reply_meta) if self.reply_meta is not None else None,
            error=self.error,
            delivered_at=self.delivered_at,
            replied_at=self.replied_at,
        )


class RoundRow(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("session_id", "round"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    round: Mapped[int]
    federated: Mapped[dict[str, Any]]
    per_client: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]

    def record(self) -> RoundRecord:
        return RoundRecord(
            session_id=self.session_id,
            round=self.round,
            federated=dict(self.federated),
            per_client={name: dict(metrics) for name, metrics in self.per_client.items()},
            created_at=self.created_at,
        )


class ModelRow(Base):
    __tablename__ = "models"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    round: Mapped[int]
    key: Mapped[str] = mapped_column(String(500), doc="artifact store key of the model frame")
    meta: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]

    def record(self) -> ModelRecord:
        return ModelRecord(self.session_id, self.round, self.key, dict(self.meta), self.created_at)


class SessionLogRow(Base):
    __tablename__ = "session_logs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]
    message: Mapped[str] = mapped_column(Text)


class TokenRow(Base):
    """API tokens, stored only as SHA-256 hashes (the secret has 256 random bits, so a fast
    hash is enough: there is nothing to brute-force the way there is with passwords)."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]]
    user_id: Mapped[str | None] = mapped_column(
        String(USER_ID_LENGTH), index=True, doc="the owning user's id"
    )
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    def record(self) -> TokenRecord:
        return TokenRecord(
            id=self.id,
            name=self.name,
            token_hash=self.token_hash,
            created_at=self.created_at,
            scopes=tuple(self.scopes),
            user_id=self.user_id,
            expires_at=self.expires_at,
            revoked_at=self.revoked_at,
            last_used_at=self.last_used_at,
        )


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(USER_ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    user_type: Mapped[str] = mapped_column(String(16))  # human|generated
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(USER_ID_LENGTH))
    created_at: Mapped[datetime]

    def record(self) -> UserRecord:
        return UserRecord(
            id=self.id,
            name=self.name,
            user_type=self.user_type,
            created_at=self.created_at,
            active=self.active,
            created_by=self.created_by,
        )


class AuditRow(Base):
    """The audit log, append-only; ``seq`` orders it (two entries may share a time)."""

    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(Text)  # a session id, token id, user name, a path
    outcome: Mapped[str] = mapped_column(String(16))  # ok|denied
    user_id: Mapped[str | None] = mapped_column(String(USER_ID_LENGTH), index=True)
    token_id: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)

    def record(self) -> AuditRecord:
        return AuditRecord(
            at=self.at,
            action=self.action,
            target=self.target,
            outcome=self.outcome,
            user_id=self.user_id,
            token_id=self.token_id,
            address=self.address,
            detail=self.detail,
            seq=self.seq,
        )
