"""SQLAlchemy tables of :class:`~fedsilo.server.state.sql.SqlStore`: sessions, participants,
tasks, rounds, models, tokens, session logs. Only ``state/`` reads or writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fedsilo.server.state.records import utcnow

__all__ = [
    "Base",
    "ModelRow",
    "ParticipantRow",
    "RoundRow",
    "SessionLogRow",
    "SessionRow",
    "TaskRow",
    "TokenRow",
    "utcnow",
]


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
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


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


class ModelRow(Base):
    __tablename__ = "models"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    round: Mapped[int]
    key: Mapped[str] = mapped_column(String(500), doc="artifact store key of the model frame")
    meta: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


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
    user_id: Mapped[str | None] = mapped_column(String(64), doc="owner; users land later")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
