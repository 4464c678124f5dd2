"""The state store over SQLAlchemy: SQLite embedded by default, PostgreSQL by URL.

The schema is :mod:`fedsilo.server.state.tables`; the engine setup (SQLite in WAL mode with
foreign keys on) is :class:`~fedsilo.server.state.database.Database`. Each method is one
transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from fedsilo.server.state.database import Database
from fedsilo.server.state.records import (
    LogRecord,
    ModelRecord,
    ParticipantRecord,
    RoundRecord,
    SessionRecord,
    TaskCompletion,
    TaskRecord,
    TaskStatus,
    TokenRecord,
    utcnow,
)
from fedsilo.server.state.tables import (
    ModelRow,
    ParticipantRow,
    RoundRow,
    SessionLogRow,
    SessionRow,
    TaskRow,
    TokenRow,
)
from fedsilo.wire import SessionStatus

__all__ = ["SqlStore"]


class SqlStore:
    """:class:`~fedsilo.server.state.protocol.StateStore` over a SQLAlchemy URL.

    Parameters
    ----------
    url : str
        ``sqlite:///path/to/fedsilo.db`` or ``postgresql+psycopg://user@host/db``. The tables
        are created when missing.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        #: the underlying engine and sessions, for code not yet on the store (the engine)
        self.database = Database(url)

    def close(self) -> None:
        self.database.dispose()

    # ------------------------------------------------------------------ sessions

    def create_session(self, session: SessionRecord) -> None:
        row = SessionRow(
            id=session.id,
            name=session.name,
            description=session.description,
            kind=session.kind,
            package_name=session.package_name,
            min_num_clients=session.min_num_clients,
            num_rounds=session.num_rounds,
            model_config_=dict(session.model_config),
            data_config=dict(session.data_config),
            status=str(session.status),
            round=session.round,
            failure_reason=session.failure_reason,
            created_by=session.created_by,
            created_at=session.created_at,
            updated_at=session.updated_at,
            started_at=session.started_at,
            ended_at=session.ended_at,
        )
        with (
            _integrity(f"A session with id {session.id!r} already exists."),
            self.database.session() as s,
        ):
            s.add(row)

    def get_session(self, session_id: str) -> SessionRecord | None:
        with self.database.session() as s:
            row = s.get(SessionRow, session_id)
            return _session(row) if row is not None else None

    def list_sessions(
        self, *, statuses: Collection[SessionStatus] | None = None
    ) -> list[SessionRecord]:
        query = select(SessionRow).order_by(SessionRow.created_at.desc())
        if statuses is not None:
            query = query.where(SessionRow.status.in_([str(s) for s in statuses]))
        with self.database.session() as s:
            return [_session(row) for row in s.scalars(query)]

    def set_session_status(
        self,
        session_id: str,
        status: SessionStatus,
        *,
        expected: Collection[SessionStatus],
        failure_reason: str | None = None,
        at: datetime | None = None,
    ) -> bool:
        now = at or utcnow()
        values: dict[str, Any] = {"status": str(status), "updated_at": now}
        if status == SessionStatus.running:
            values["started_at"] = now
        if status.ended:
            values.update(ended_at=now, failure_reason=failure_reason)
        statement = (
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.status.in_([str(e) for e in expected]))
            .values(**values)
        )
        with self.database.session() as s:
            return _rowcount(s.execute(statement)) > 0

    def set_session_round(self, session_id: str, round: int, *, at: datetime | None = None) -> None:
        with self.database.session() as s:
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(round=round, updated_at=at or utcnow())
            )

    def delete_session(self, session_id: str) -> bool:
        # Participants, tasks, rounds, the model record and logs go by ON DELETE CASCADE.
        with self.database.session() as s:
            return _rowcount(s.execute(delete(SessionRow).where(SessionRow.id == session_id))) > 0

    # -------------------------------------------------------------- participants

    def join_participant(
        self,
        session_id: str,
        client_name: str,
        dataset: Mapping[str, Any],
        *,
        credential_hash: str,
        public_key: str,
        at: datetime | None = None,
    ) -> tuple[ParticipantRecord, bool]:
        now = at or utcnow()
        participant_id = secrets.token_hex(8)
        # The join order is counted inside the INSERT, so two joins racing cannot read the
        # same count in separate statements; the (session, client_name) unique constraint
        # decides which of two joins under one name wins.
        seq = (
            select(func.count())
            .select_from(ParticipantRow)
            .where(ParticipantRow.session_id == session_id)
            .scalar_subquery()
        )
        statement = insert(ParticipantRow).values(
            id=participant_id,
            session_id=session_id,
            client_name=client_name,
            dataset=dict(dataset),
            seq=seq,
            joined_at=now,
            last_seen_at=now,
            credential_hash=credential_hash,
            public_key=public_key,
        )
        try:
            with self.database.session() as s:
                s.execute(statement)
                row = s.get(ParticipantRow, participant_id)
                assert row is not None  # inserted just above, in this transaction
                return _participant(row), True
        except IntegrityError as exc:
            existing = self.find_participant(session_id, client_name)
            if existing is None:  # the foreign key failed: no such session
                raise ValueError(
                    f"Cannot add participant {client_name!r}: session {session_id} not found."
                ) from exc
            return existing, False

    def rejoin_participant(
        self,
        participant_id: str,
        *,
        dataset: Mapping[str, Any] | None = None,
        public_key: str | None = None,
        credential_hash: str | None = None,
        at: datetime | None = None,
    ) -> ParticipantRecord | None:
        with self.database.session() as s:
            row = s.get(ParticipantRow, participant_id)
            if row is None:
                return None
            row.last_seen_at = at or utcnow()
            if dataset is not None:
                row.dataset = dict(dataset)
            if public_key is not None:
                row.public_key = public_key
            if credential_hash is not None:
                row.credential_hash = credential_hash
            s.flush()
            return _participant(row)

    def get_participant(self, participant_id: str) -> ParticipantRecord | None:
        with self.database.session() as s:
            row = s.get(ParticipantRow, participant_id)
            return _participant(row) if row is not None else None

    def find_participant(self, session_id: str, client_name: str) -> ParticipantRecord | None:
        with self.database.session() as s:
            row = s.scalar(
                select(ParticipantRow).where(
                    ParticipantRow.session_id == session_id,
                    ParticipantRow.client_name == client_name,
                )
            )
            return _participant(row) if row is not None else None

    def list_participants(self, session_id: str) -> list[ParticipantRecord]:
        with self.database.session() as s:
            rows = s.scalars(
                select(ParticipantRow)
                .where(ParticipantRow.session_id == session_id)
                .order_by(ParticipantRow.seq)
            )
            return [_participant(row) for row in rows]

    def touch_participant(
        self,
        participant_id: str,
        *,
        at: datetime | None = None,
        min_interval: timedelta = timedelta(0),
    ) -> bool:
        now = at or utcnow()
        statement = (
            update(ParticipantRow)
            .where(
                ParticipantRow.id == participant_id,
                or_(
                    ParticipantRow.last_seen_at.is_(None),
                    ParticipantRow.last_seen_at <= now - min_interval,
                ),
            )
            .values(last_seen_at=now)
        )
        with self.database.session() as s:
            return _rowcount(s.execute(statement)) > 0

    # --------------------------------------------------------------------- tasks

    def add_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        if not tasks:
            return
        rows = [
            {
                "id": t.id,
                "session_id": t.session_id,
                "participant_id": t.participant_id,
                "kind": t.kind,
                "round": t.round,
                "meta": dict(t.meta),
                "status": str(t.status),
                "reply_meta": t.reply_meta,
                "error": t.error,
                "created_at": t.created_at,
                "delivered_at": t.delivered_at,
                "replied_at": t.replied_at,
            }
            for t in tasks
        ]
        message = "Cannot add tasks: a task id is taken, or its session or participant is unknown."
        with _integrity(message), self.database.session() as s:
            s.execute(insert(TaskRow), rows)

    def complete_tasks(self, completions: Sequence[TaskCompletion]) -> None:
        if not completions:
            return
        # An UPDATE by primary key with a list of parameter sets is one executemany:
        # written per reply, these commits were half of the server's busy time at 100 clients.
        rows = [
            {
                "id": c.id,
                "status": str(TaskStatus.done),
                "reply_meta": dict(c.reply_meta),
                "delivered_at": c.delivered_at,
                "replied_at": c.replied_at,
            }
            for c in completions
        ]
        with self.database.session() as s:
            s.execute(update(TaskRow), rows)

    def fail_task(
        self,
        task_id: str,
        error: str,
        *,
        reply_meta: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        with self.database.session() as s:
            s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id)
                .values(
                    status=str(TaskStatus.failed),
                    error=error,
                    reply_meta=dict(reply_meta) if reply_meta is not None else None,
                    replied_at=at or utcnow(),
                )
            )

    def mark_stale_tasks(self, session_ids: Collection[str], reason: str) -> int:
        if not session_ids:
            return 0
        statement = (
            update(TaskRow)
            .where(
                TaskRow.session_id.in_(list(session_ids)),
                TaskRow.status == str(TaskStatus.queued),
            )
            .values(status=str(TaskStatus.stale), error=reason)
        )
        with self.database.session() as s:
            return _rowcount(s.execute(statement))

    def get_task(self, task_id: str) -> TaskRecord | None:
        with self.database.session() as s:
            row = s.get(TaskRow, task_id)
            return _task(row) if row is not None else None

    def list_tasks(self, session_id: str) -> list[TaskRecord]:
        with self.database.session() as s:
            rows = s.scalars(
                select(TaskRow).where(TaskRow.session_id == session_id).order_by(TaskRow.created_at)
            )
            return [_task(row) for row in rows]

    # -------------------------------------------------------------------- rounds

    def record_round(
        self,
        session_id: str,
        round: int,
        federated: Mapping[str, float],
        per_client: Mapping[str, Mapping[str, float]],
        *,
        at: datetime | None = None,
    ) -> None:
        now = at or utcnow()
        message = f"Cannot record round {round}: session {session_id} not found."
        with _integrity(message), self.database.session() as s:
            row = s.scalar(
                select(RoundRow).where(RoundRow.session_id == session_id, RoundRow.round == round)
            )
            if row is None:
                row = RoundRow(session_id=session_id, round=round, created_at=now)
                s.add(row)
            row.federated = dict(federated)
            row.per_client = {name: dict(metrics) for name, metrics in per_client.items()}
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(round=round, updated_at=now)
            )

    def list_rounds(self, session_id: str) -> list[RoundRecord]:
        with self.database.session() as s:
            rows = s.scalars(
                select(RoundRow).where(RoundRow.session_id == session_id).order_by(RoundRow.round)
            )
            return [
                RoundRecord(
                    session_id=row.session_id,
                    round=row.round,
                    federated=dict(row.federated),
                    per_client={k: dict(v) for k, v in row.per_client.items()},
                    created_at=row.created_at,
                )
                for row in rows
            ]

    # -------------------------------------------------------------------- models

    def save_model(
        self,
        session_id: str,
        round: int,
        key: str,
        meta: Mapping[str, Any],
        *,
        at: datetime | None = None,
    ) -> None:
        now = at or utcnow()
        message = f"Cannot save a model: session {session_id} not found."
        with _integrity(message), self.database.session() as s:
            row = s.get(ModelRow, session_id)
            if row is None:
                row = ModelRow(session_id=session_id)
                s.add(row)
            row.round = round
            row.key = key
            row.meta = dict(meta)
            row.created_at = now

    def get_model(self, session_id: str) -> ModelRecord | None:
        with self.database.session() as s:
            row = s.get(ModelRow, session_id)
            if row is None:
                return None
            return ModelRecord(
                session_id=row.session_id,
                round=row.round,
                key=row.key,
                meta=dict(row.meta),
                created_at=row.created_at,
            )

    # ---------------------------------------------------------------------- logs

    def append_log(self, session_id: str, message: str, *, at: datetime | None = None) -> None:
        try:
            with self.database.session() as s:
                s.add(
                    SessionLogRow(session_id=session_id, created_at=at or utcnow(), message=message)
                )
        except IntegrityError:
            pass  # the session was deleted under a late log line: nothing to attach it to

    def list_logs(self, session_id: str) -> list[LogRecord]:
        with self.database.session() as s:
            rows = s.scalars(
                select(SessionLogRow)
                .where(SessionLogRow.session_id == session_id)
                .order_by(SessionLogRow.id)
            )
            return [LogRecord(row.session_id, row.created_at, row.message) for row in rows]

    # -------------------------------------------------------------------- tokens

    def add_token(self, token: TokenRecord) -> None:
        row = TokenRow(
            id=token.id,
            name=token.name,
            token_hash=token.token_hash,
            scopes=list(token.scopes),
            user_id=token.user_id,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
        )
        with (
            _integrity(f"Token {token.id!r} or its hash is already stored."),
            self.database.session() as s,
        ):
            s.add(row)

    def get_token_by_hash(self, token_hash: str) -> TokenRecord | None:
        with self.database.session() as s:
            row = s.scalar(select(TokenRow).where(TokenRow.token_hash == token_hash))
            return _token(row) if row is not None else None

    def list_tokens(self) -> list[TokenRecord]:
        with self.database.session() as s:
            return [
                _token(row) for row in s.scalars(select(TokenRow).order_by(TokenRow.created_at))
            ]

    def count_tokens(self) -> int:
        with self.database.session() as s:
            return s.scalar(select(func.count()).select_from(TokenRow)) or 0

    def revoke_token(self, token_id: str, *, at: datetime | None = None) -> TokenRecord | None:
        with self.database.session() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = at or utcnow()
            return _token(row)

    def touch_token(self, token_id: str, *, at: datetime | None = None) -> None:
        with self.database.session() as s:
            s.execute(
                update(TokenRow).where(TokenRow.id == token_id).values(last_used_at=at or utcnow())
            )


# ----------------------------------------------------------------- row -> record


@contextmanager
def _integrity(message: str) -> Iterator[None]:
    """A constraint the caller broke (a taken id, an unknown session) as a ``ValueError``."""
    try:
        yield
    except IntegrityError as exc:
        raise ValueError(message) from exc


def _rowcount(result: Any) -> int:
    # UPDATE and DELETE return a CursorResult; Session.execute is typed as returning Result.
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def _session(row: SessionRow) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        name=row.name,
        description=row.description,
        kind=row.kind,
        package_name=row.package_name,
        min_num_clients=row.min_num_clients,
        num_rounds=row.num_rounds,
        model_config=dict(row.model_config_),
        data_config=dict(row.data_config),
        status=SessionStatus(row.status),
        round=row.round,
        failure_reason=row.failure_reason,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


def _participant(row: ParticipantRow) -> ParticipantRecord:
    return ParticipantRecord(
        id=row.id,
        session_id=row.session_id,
        client_name=row.client_name,
        dataset=dict(row.dataset),
        seq=row.seq,
        joined_at=row.joined_at,
        last_seen_at=row.last_seen_at,
        credential_hash=row.credential_hash,
        public_key=row.public_key,
    )


def _task(row: TaskRow) -> TaskRecord:
    return TaskRecord(
        id=row.id,
        session_id=row.session_id,
        participant_id=row.participant_id,
        kind=row.kind,
        round=row.round,
        meta=dict(row.meta),
        created_at=row.created_at,
        status=TaskStatus(row.status),
        reply_meta=dict(row.reply_meta) if row.reply_meta is not None else None,
        error=row.error,
        delivered_at=row.delivered_at,
        replied_at=row.replied_at,
    )


def _token(row: TokenRow) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        name=row.name,
        token_hash=row.token_hash,
        created_at=row.created_at,
        scopes=tuple(row.scopes),
        user_id=row.user_id,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
