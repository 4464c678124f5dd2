"""The state store over SQLAlchemy: SQLite embedded by default, PostgreSQL by URL.

The schema is :mod:`fedsilo.server.state.tables`; the engine setup (SQLite in WAL mode with
foreign keys on) is :class:`~fedsilo.server.state.database.Database`. Each method is one
transaction. Opening a store brings its database to the models' schema with the alembic
migrations of :mod:`fedsilo.server.state.migrations` (a database of a newer fedsilo is refused).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedsilo.server.state.database import Database
from fedsilo.server.state.migrations import Upgrade, upgrade
from fedsilo.server.state.records import (
    AuditRecord,
    LogRecord,
    ModelRecord,
    ParticipantRecord,
    RoundRecord,
    SessionRecord,
    SessionWrites,
    TaskCompletion,
    TaskRecord,
    TaskStatus,
    TokenRecord,
    UserRecord,
    utcnow,
)
from fedsilo.server.state.tables import (
    AuditRow,
    ModelRow,
    ParticipantRow,
    RoundRow,
    SessionLogRow,
    SessionRow,
    TaskRow,
    TokenRow,
    UserRow,
)
from fedsilo.wire import SessionStatus

__all__ = ["SqlStore"]

# The statements of a session's writes (SqlStore.apply: a round's task rows, replies and
# records), built once: building them per call was a third of the writer's CPU. Core, not the
# ORM: the ORM's bulk update by primary key raises when a task is gone (its session was
# deleted), and its bulk insert and get() add bookkeeping these writes do not use.
_TASK_TABLE = cast(Table, TaskRow.__table__)
_INSERT_TASKS = insert(_TASK_TABLE)
_COMPLETE_TASKS = (
    update(_TASK_TABLE)
    .where(_TASK_TABLE.c.id == bindparam("task_id"))
    .values(
        status=str(TaskStatus.done),
        reply_meta=bindparam("reply_meta_"),
        delivered_at=bindparam("delivered_at_"),
        replied_at=bindparam("replied_at_"),
    )
)
_SESSION_TABLE = cast(Table, SessionRow.__table__)
_SESSION_EXISTS = select(_SESSION_TABLE.c.id).where(_SESSION_TABLE.c.id == bindparam("session_id_"))
_SET_ROUND = (
    update(_SESSION_TABLE)
    .where(_SESSION_TABLE.c.id == bindparam("session_id_"))
    .values(round=bindparam("round_"), updated_at=bindparam("now_"))
)
_ROUND_TABLE = cast(Table, RoundRow.__table__)
_ROUND_ID = select(_ROUND_TABLE.c.id).where(
    _ROUND_TABLE.c.session_id == bindparam("session_id_"),
    _ROUND_TABLE.c.round == bindparam("round_"),
)
_REPLACE_ROUND = (
    update(_ROUND_TABLE)
    .where(
        _ROUND_TABLE.c.session_id == bindparam("session_id_"),
        _ROUND_TABLE.c.round == bindparam("round_"),
    )
    .values(federated=bindparam("federated"), per_client=bindparam("per_client"))
)
#: ids per ``IN (...)`` list (SQLite allows 32,766 bound parameters a statement)
_IN_CHUNK = 500
_TASKS_REJECTED = "Cannot add tasks: a task id is taken, or its session or participant is unknown."


class SqlStore:
    """:class:`~fedsilo.server.state.protocol.StateStore` over a SQLAlchemy URL.

    Parameters
    ----------
    url : str
        ``sqlite:///path/to/fedsilo.db`` or ``postgresql+psycopg://user@host/db``. A new
        database is created at the current schema, an older one upgraded.

    Raises
    ------
    ConfigError
        When the database was made by a newer fedsilo (its schema revision is unknown here).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        #: the SQLAlchemy engine and sessions behind the store (tests reach the schema here)
        self.database = Database(url)
        try:
            #: what opening did to the schema (revisions before and after)
            self.schema: Upgrade = upgrade(self.database.engine)
        except BaseException:
            self.database.dispose()
            raise

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
            owner_id=session.owner_id,
            created_at=session.created_at,
            updated_at=session.updated_at,
            started_at=session.started_at,
            ended_at=session.ended_at,
            task_timeout=session.task_timeout,
        )
        with (
            _integrity(f"A session with id {session.id!r} already exists."),
            self.database.session() as s,
        ):
            s.add(row)

    def get_session(self, session_id: str) -> SessionRecord | None:
        with self.database.session() as s:
            row = s.get(SessionRow, session_id)
            return row.record() if row is not None else None

    def list_sessions(
        self, *, statuses: Collection[SessionStatus] | None = None
    ) -> list[SessionRecord]:
        query = select(SessionRow).order_by(SessionRow.created_at.desc())
        if statuses is not None:
            query = query.where(SessionRow.status.in_([str(s) for s in statuses]))
        with self.database.session() as s:
            return [row.record() for row in s.scalars(query)]

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
            values.update(started_at=now, failure_reason=None)
        if status.ended:
            values.update(ended_at=now, failure_reason=failure_reason)
        statement = (
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.status.in_([str(e) for e in expected]))
            .values(**values)
        )
        with self.database.session() as s:
            return _rowcount(s.execute(statement)) > 0

    def set_status_reason(
        self,
        session_id: str,
        reason: str | None,
        *,
        expected: Collection[SessionStatus],
        at: datetime | None = None,
    ) -> bool:
        statement = (
            update(SessionRow)
            .where(SessionRow.id == session_id, SessionRow.status.in_([str(e) for e in expected]))
            .values(failure_reason=reason, updated_at=at or utcnow())
        )
        with self.database.session() as s:
            return _rowcount(s.execute(statement)) > 0

    def set_session_round(self, session_id: str, round: int, *, at: datetime | None = None) -> None:
        with self.database.session() as s:
            _set_round(s, session_id, round, at or utcnow())

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
                return row.record(), True
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
            return row.record()

    def get_participant(self, participant_id: str) -> ParticipantRecord | None:
        with self.database.session() as s:
            row = s.get(ParticipantRow, participant_id)
            return row.record() if row is not None else None

    def find_participant(self, session_id: str, client_name: str) -> ParticipantRecord | None:
        with self.database.session() as s:
            row = s.scalar(
                select(ParticipantRow).where(
                    ParticipantRow.session_id == session_id,
                    ParticipantRow.client_name == client_name,
                )
            )
            return row.record() if row is not None else None

    def list_participants(self, session_id: str) -> list[ParticipantRecord]:
        with self.database.session() as s:
            rows = s.scalars(
                select(ParticipantRow)
                .where(ParticipantRow.session_id == session_id)
                .order_by(ParticipantRow.seq)
            )
            return [row.record() for row in rows]

    def touch_participants(
        self, participant_ids: Collection[str], *, at: datetime | None = None
    ) -> int:
        ids = sorted(set(participant_ids))
        if not ids:
            return 0
        now = at or utcnow()
        written = 0
        with self.database.session() as s:
            # IN lists in chunks: SQLite caps a statement's bound parameters
            for start in range(0, len(ids), _IN_CHUNK):
                statement = (
                    update(ParticipantRow)
                    .where(ParticipantRow.id.in_(ids[start : start + _IN_CHUNK]))
                    .values(last_seen_at=now)
                )
                written += _rowcount(s.execute(statement))
        return written

    def set_participant_offline(self, participant_id: str, at: datetime | None) -> None:
        statement = (
            update(ParticipantRow).where(ParticipantRow.id == participant_id).values(offline_at=at)
        )
        with self.database.session() as s:
            s.execute(statement)

    # --------------------------------------------------------------------- tasks

    def add_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        if not tasks:
            return
        with _integrity(_TASKS_REJECTED), self.database.session() as s:
            _add_tasks(s, tasks)

    def complete_tasks(self, completions: Sequence[TaskCompletion]) -> None:
        if not completions:
            return
        with self.database.session() as s:
            _complete_tasks(s, completions)

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
            return row.record() if row is not None else None

    def list_tasks(self, session_id: str) -> list[TaskRecord]:
        with self.database.session() as s:
            rows = s.scalars(
                select(TaskRow).where(TaskRow.session_id == session_id).order_by(TaskRow.created_at)
            )
            return [row.record() for row in rows]

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
            _record_round(s, session_id, round, federated, per_client, now)
            _set_round(s, session_id, round, now)

    def list_rounds(self, session_id: str) -> list[RoundRecord]:
        with self.database.session() as s:
            rows = s.scalars(
                select(RoundRow).where(RoundRow.session_id == session_id).order_by(RoundRow.round)
            )
            return [row.record() for row in rows]

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
        model = ModelRecord(session_id, round, key, dict(meta), at or utcnow())
        message = f"Cannot save a model: session {session_id} not found."
        with _integrity(message), self.database.session() as s:
            _save_model(s, model)

    def get_model(self, session_id: str) -> ModelRecord | None:
        with self.database.session() as s:
            row = s.get(ModelRow, session_id)
            return row.record() if row is not None else None

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

    # ------------------------------------------------------------------- batches

    def apply(self, writes: SessionWrites, *, at: datetime | None = None) -> None:
        if not writes:
            return
        now = at or utcnow()
        session_id = writes.session_id
        with _integrity(_TASKS_REJECTED), self.database.session() as s:
            if s.execute(_SESSION_EXISTS, {"session_id_": session_id}).first() is None:
                raise ValueError(f"Cannot apply writes: session {session_id} not found.")
            if writes.tasks:
                _add_tasks(s, writes.tasks)
            if writes.completions:
                _complete_tasks(s, writes.completions)
            for r in writes.rounds:
                # the time it was recorded, not written: the writer may apply several at once
                _record_round(s, session_id, r.round, r.federated, r.per_client, r.created_at)
            rounds = [r.round for r in writes.rounds]
            if writes.session_round is not None:
                rounds.append(writes.session_round)
            if rounds:
                _set_round(s, session_id, max(rounds), now)
            if writes.model is not None:
                _save_model(s, writes.model)
            s.add_all(
                SessionLogRow(session_id=session_id, created_at=now, message=message)
                for message in writes.logs
            )

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
            return row.record() if row is not None else None

    def list_tokens(self) -> list[TokenRecord]:
        with self.database.session() as s:
            return [
                row.record() for row in s.scalars(select(TokenRow).order_by(TokenRow.created_at))
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
            return row.record()

    def touch_token(self, token_id: str, *, at: datetime | None = None) -> None:
        with self.database.session() as s:
            s.execute(
                update(TokenRow).where(TokenRow.id == token_id).values(last_used_at=at or utcnow())
            )

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self.database.session() as s:
            row = s.get(TokenRow, token_id)
            return row.record() if row is not None else None

    def list_user_tokens(self, user_id: str) -> list[TokenRecord]:
        query = select(TokenRow).where(TokenRow.user_id == user_id).order_by(TokenRow.created_at)
        with self.database.session() as s:
            return [row.record() for row in s.scalars(query)]

    def adopt_tokens(self, user_id: str) -> int:
        with self.database.session() as s:
            statement = update(TokenRow).where(TokenRow.user_id.is_(None)).values(user_id=user_id)
            return _rowcount(s.execute(statement))

    # --------------------------------------------------------------------- users

    def add_user(self, user: UserRecord) -> None:
        row = UserRow(
            id=user.id,
            name=user.name,
            user_type=user.user_type,
            active=user.active,
            created_by=user.created_by,
            created_at=user.created_at,
        )
        with (
            _integrity(f"A user with id {user.id!r} or name {user.name!r} already exists."),
            self.database.session() as s,
        ):
            s.add(row)

    def get_user(self, user_id: str) -> UserRecord | None:
        with self.database.session() as s:
            row = s.get(UserRow, user_id)
            return row.record() if row is not None else None

    def get_user_by_name(self, name: str) -> UserRecord | None:
        with self.database.session() as s:
            row = s.scalar(select(UserRow).where(UserRow.name == name))
            return row.record() if row is not None else None

    def list_users(self) -> list[UserRecord]:
        with self.database.session() as s:
            return [row.record() for row in s.scalars(select(UserRow).order_by(UserRow.created_at))]

    def delete_user(self, user_id: str, *, at: datetime | None = None) -> UserRecord | None:
        with self.database.session() as s:
            row = s.get(UserRow, user_id)
            if row is None:
                return None
            record = row.record()
            s.execute(
                update(TokenRow)
                .where(TokenRow.user_id == user_id, TokenRow.revoked_at.is_(None))
                .values(revoked_at=at or utcnow())
            )
            s.delete(row)
            return record

    # --------------------------------------------------------------------- audit

    def append_audit(self, entry: AuditRecord) -> None:
        with self.database.session() as s:
            s.add(
                AuditRow(
                    at=entry.at,
                    action=entry.action,
                    target=entry.target,
                    outcome=entry.outcome,
                    user_id=entry.user_id,
                    token_id=entry.token_id,
                    address=entry.address,
                    detail=entry.detail,
                )
            )

    def list_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        if limit <= 0:
            return []
        query = select(AuditRow)
        if user_id is not None:
            query = query.where(AuditRow.user_id == user_id)
        if action is not None:
            # startswith with autoescape: a '%' or '_' in the filter is matched literally
            query = query.where(
                or_(
                    AuditRow.action == action,
                    AuditRow.action.startswith(f"{action}.", autoescape=True),
                )
            )
        if target is not None:
            query = query.where(AuditRow.target == target)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        # The newest `limit`, handed out oldest first.
        query = query.order_by(AuditRow.seq.desc()).limit(limit)
        with self.database.session() as s:
            return [row.record() for row in reversed(s.scalars(query).all())]


# ------------------------------------------------------------------ in-transaction


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


def _add_tasks(s: Session, tasks: Sequence[TaskRecord]) -> None:
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
    s.execute(_INSERT_TASKS, rows)


def _complete_tasks(s: Session, completions: Sequence[TaskCompletion]) -> None:
    rows = [
        {
            "task_id": c.id,
            "reply_meta_": dict(c.reply_meta),
            "delivered_at_": c.delivered_at,
            "replied_at_": c.replied_at,
        }
        for c in completions
    ]
    s.execute(_COMPLETE_TASKS, rows)


def _record_round(
    s: Session,
    session_id: str,
    round: int,
    federated: Mapping[str, float],
    per_client: Mapping[str, Mapping[str, float]],
    now: datetime,
) -> None:
    values = {
        "federated": dict(federated),
        "per_client": {name: dict(metrics) for name, metrics in per_client.items()},
    }
    key = {"session_id_": session_id, "round_": round}
    # a round redone after a restart replaces its first record (and keeps its time)
    if s.execute(_ROUND_ID, key).first() is None:
        s.execute(
            insert(_ROUND_TABLE),
            {"session_id": session_id, "round": round, "created_at": now, **values},
        )
    else:
        s.execute(_REPLACE_ROUND, {**key, **values})


def _set_round(s: Session, session_id: str, round: int, now: datetime) -> None:
    s.execute(_SET_ROUND, {"session_id_": session_id, "round_": round, "now_": now})


def _save_model(s: Session, model: ModelRecord) -> None:
    row = s.get(ModelRow, model.session_id)
    if row is None:
        row = ModelRow(session_id=model.session_id)
        s.add(row)
    row.round = model.round
    row.key = model.key
    row.meta = dict(model.meta)
    row.created_at = model.created_at
