"""The state store protocol: everything the server persists, behind one interface.

Routers, the token check and the session engine call these methods and never SQL. Two
implementations keep the same semantics: :class:`~fedsilo.server.state.sql.SqlStore`
(SQLAlchemy; SQLite embedded by default, PostgreSQL by URL) and
:class:`~fedsilo.server.state.memory.MemoryStore` (dicts under a lock, for tests and
benchmarks). ``tests/unit/server/state/`` runs one suite over both.

Conventions shared by every method:

* Records are frozen snapshots (:mod:`fedsilo.server.state.records`); a method that changes
  a thing takes its id, never a record to mutate.
* ``at`` is the time to write (timezone-aware UTC), :func:`~fedsilo.server.state.records.utcnow`
  when omitted, so tests and replays can pin the clock.
* A method that changes one thing by id and may find it gone answers with ``bool`` or
  ``None`` rather than raising: the caller knows which HTTP status that is.
* Each method is one transaction; the ones named "in one statement" are one round trip to the
  database however many rows they touch (they sit on the round's hot path).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

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
    TokenRecord,
    UserRecord,
)
from fedsilo.wire import SessionStatus

__all__ = ["ACTIVE_STATUSES", "StateStore"]

#: statuses of a session whose workflow runs (or resumes after a restart)
ACTIVE_STATUSES = frozenset({SessionStatus.pending, SessionStatus.running})


@runtime_checkable
class StateStore(Protocol):
    """Sessions, participants, tasks, rounds, models, logs, tokens, users and the audit log."""

    # ------------------------------------------------------------------ sessions

    def create_session(self, session: SessionRecord) -> None:
        """Store a new session. Raises ``ValueError`` if its id is taken."""

    def get_session(self, session_id: str) -> SessionRecord | None: ...

    def list_sessions(
        self, *, statuses: Collection[SessionStatus] | None = None
    ) -> list[SessionRecord]:
        """Sessions newest first, only those in ``statuses`` when given."""

    def set_session_status(
        self,
        session_id: str,
        status: SessionStatus,
        *,
        expected: Collection[SessionStatus],
        failure_reason: str | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Move a session to ``status`` if it is in one of ``expected`` (compare-and-set).

        Moving to ``running`` sets ``started_at`` and clears ``failure_reason`` (a waiting
        session's note, see :meth:`set_status_reason`); moving to an ended status sets
        ``ended_at`` and ``failure_reason`` (``None`` clears it). Returns whether the session
        moved: a concurrent cancel and completion cannot both win.
        """

    def set_status_reason(
        self,
        session_id: str,
        reason: str | None,
        *,
        expected: Collection[SessionStatus],
        at: datetime | None = None,
    ) -> bool:
        """Set ``failure_reason`` without moving the session, if it is in one of ``expected``.

        The reason a created or pending session shows while it waits (a client refused to
        join, and why); the status stays. Returns whether it was written.
        """

    def set_session_round(self, session_id: str, round: int, *, at: datetime | None = None) -> None:
        """Record the last round the session completed (a checkpoint's round)."""

    def delete_session(self, session_id: str) -> bool:
        """Delete a session with its participants, tasks, rounds, model record and logs."""

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
        """Add ``client_name`` to the session, next in join order, unless that name joined.

        Returns the participant under that name and whether this call created it. An
        existing participant is returned unchanged: whether a rejoin may update it (its
        credential must match) is the caller's decision, through :meth:`rejoin_participant`.
        Raises ``ValueError`` for an unknown session.
        """

    def rejoin_participant(
        self,
        participant_id: str,
        *,
        dataset: Mapping[str, Any] | None = None,
        public_key: str | None = None,
        credential_hash: str | None = None,
        at: datetime | None = None,
    ) -> ParticipantRecord | None:
        """A returning participant: refresh ``last_seen_at`` and whichever fields are given."""

    def get_participant(self, participant_id: str) -> ParticipantRecord | None: ...

    def find_participant(self, session_id: str, client_name: str) -> ParticipantRecord | None:
        """The participant that joined ``session_id`` as ``client_name``, if any."""

    def list_participants(self, session_id: str) -> list[ParticipantRecord]:
        """A session's participants in join order."""

    def touch_participants(
        self, participant_ids: Collection[str], *, at: datetime | None = None
    ) -> int:
        """Set ``last_seen_at`` of these participants (the engine's liveness sweep writes
        who was heard from, a batch every few seconds, off the round's path). Unknown ids
        are skipped. Returns how many were written."""

    def set_participant_offline(self, participant_id: str, at: datetime | None) -> None:
        """Record that the participant went offline at ``at`` (None: it is live again)."""

    # --------------------------------------------------------------------- tasks

    def add_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        """Record queued tasks, in one statement."""

    def complete_tasks(self, completions: Sequence[TaskCompletion]) -> None:
        """Mark tasks done with their reply's meta and times, in one statement."""

    def fail_task(
        self,
        task_id: str,
        error: str,
        *,
        reply_meta: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Mark a task failed with the reason (``replied_at`` = ``at``)."""

    def mark_stale_tasks(self, session_ids: Collection[str], reason: str) -> int:
        """After a restart: the queued tasks of these sessions become stale, in one statement
        (their payloads lived in memory). Returns how many."""

    def get_task(self, task_id: str) -> TaskRecord | None: ...

    def list_tasks(self, session_id: str) -> list[TaskRecord]:
        """A session's tasks, oldest first."""

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
        """Store a round's metrics and set the session's round. A round redone after a
        restart replaces its first record (one record per round)."""

    def list_rounds(self, session_id: str) -> list[RoundRecord]:
        """A session's rounds in round order."""

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
        """Record (or replace) where the session's model frame is in the artifact store."""

    def get_model(self, session_id: str) -> ModelRecord | None: ...

    # ---------------------------------------------------------------------- logs

    def append_log(self, session_id: str, message: str, *, at: datetime | None = None) -> None:
        """Append a line to a session's log; a line for an unknown session is dropped."""

    def list_logs(self, session_id: str) -> list[LogRecord]:
        """A session's log lines in the order they were appended."""

    # ------------------------------------------------------------------- batches

    def apply(self, writes: SessionWrites, *, at: datetime | None = None) -> None:
        """Apply a session's batched writes in one transaction, all or nothing (see
        :class:`~fedsilo.server.state.records.SessionWrites` for the order). Raises
        ``ValueError`` for an unknown session or a task that cannot be added."""

    # -------------------------------------------------------------------- tokens

    def add_token(self, token: TokenRecord) -> None:
        """Store a new token. Raises ``ValueError`` if its id or hash is taken."""

    def get_token_by_hash(self, token_hash: str) -> TokenRecord | None: ...

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""

    def count_tokens(self) -> int: ...

    def revoke_token(self, token_id: str, *, at: datetime | None = None) -> TokenRecord | None:
        """Revoke a token (a second revocation keeps the first time); ``None`` if unknown."""

    def touch_token(self, token_id: str, *, at: datetime | None = None) -> None:
        """Set the token's ``last_used_at``."""

    def get_token(self, token_id: str) -> TokenRecord | None: ...

    def list_user_tokens(self, user_id: str) -> list[TokenRecord]:
        """The user's tokens (revoked ones too), oldest first."""

    def adopt_tokens(self, user_id: str) -> int:
        """Give every token that has no user to ``user_id`` (the tokens of a database made
        before users existed), in one statement. Returns how many."""

    # --------------------------------------------------------------------- users

    def add_user(self, user: UserRecord) -> None:
        """Store a new user. Raises ``ValueError`` if its id or name is taken."""

    def get_user(self, user_id: str) -> UserRecord | None: ...

    def get_user_by_name(self, name: str) -> UserRecord | None: ...

    def list_users(self) -> list[UserRecord]:
        """Every user, oldest first."""

    def delete_user(self, user_id: str, *, at: datetime | None = None) -> UserRecord | None:
        """Delete a user and revoke every token of theirs (not yet revoked) in one
        transaction; the sessions they own stay, owned by the id no user has any more.
        ``None`` if unknown."""

    # --------------------------------------------------------------------- audit

    def append_audit(self, entry: AuditRecord) -> None:
        """Record one audited call (its ``seq`` is assigned by the store)."""

    def list_audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Audit entries matching every filter given, oldest first, at most ``limit`` (the
        newest ``limit`` when more match); ``action`` matches exactly or as a dotted prefix
        (``session`` matches ``session.create``)."""

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
