"""The state store in memory: dicts under one lock, the semantics of the SQL store.

For tests and benchmarks (and ``memory://`` servers that need no durability): nothing
survives the process. Records go in and come out as deep copies, so a caller that edits a
returned ``meta`` dict changes nothing stored, as with the database (tokens, users and audit
entries hold no mutable field and are shared as they are).
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

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
from fedsilo.wire import SessionStatus

__all__ = ["MemoryStore"]

_R = TypeVar("_R")


def _copy(record: _R) -> _R:
    return copy.deepcopy(record)


class MemoryStore:
    """:class:`~fedsilo.server.state.protocol.StateStore` held in this process."""

    url = "memory://"

    def __init__(self, participant_ids: Callable[[str, str], str] | None = None) -> None:
        """``participant_ids(session_id, client_name)`` gives a new participant's id (random
        16 hex digits by default): a run that has no database to keep between two processes
        finds its participants again under the same ids (the in-process runner)."""
        self._participant_ids = participant_ids
        self._lock = threading.Lock()
        self._sessions: dict[str, SessionRecord] = {}
        self._participants: dict[str, ParticipantRecord] = {}
        #: (session id, client name) -> participant id: the SQL unique constraint
        self._by_name: dict[tuple[str, str], str] = {}
        self._tasks: dict[str, TaskRecord] = {}
        self._rounds: dict[tuple[str, int], RoundRecord] = {}
        self._models: dict[str, ModelRecord] = {}
        self._logs: dict[str, list[LogRecord]] = {}
        self._tokens: dict[str, TokenRecord] = {}
        self._token_ids: dict[str, str] = {}  # hash -> id: the unique index
        self._users: dict[str, UserRecord] = {}
        self._user_ids: dict[str, str] = {}  # name -> id: the unique index
        self._audit: list[AuditRecord] = []  # in seq order; seq = position + 1

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ sessions

    def create_session(self, session: SessionRecord) -> None:
        with self._lock:
            if session.id in self._sessions:
                raise ValueError(f"A session with id {session.id!r} already exists.")
            self._sessions[session.id] = _copy(session)

    def get_session(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            return _copy(self._sessions.get(session_id))

    def list_sessions(
        self, *, statuses: Collection[SessionStatus] | None = None
    ) -> list[SessionRecord]:
        with self._lock:
            chosen = [
                s for s in self._sessions.values() if statuses is None or s.status in statuses
            ]
            return _copy(sorted(chosen, key=lambda s: s.created_at, reverse=True))

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
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.status not in expected:
                return False
            changes: dict[str, Any] = {"status": status, "updated_at": now}
            if status == SessionStatus.running:
                changes.update(started_at=now, failure_reason=None)
            if status.ended:
                changes.update(ended_at=now, failure_reason=failure_reason)
            self._sessions[session_id] = dataclasses.replace(session, **changes)
            return True

    def set_status_reason(
        self,
        session_id: str,
        reason: str | None,
        *,
        expected: Collection[SessionStatus],
        at: datetime | None = None,
    ) -> bool:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.status not in expected:
                return False
            self._sessions[session_id] = dataclasses.replace(
                session, failure_reason=reason, updated_at=at or utcnow()
            )
            return True

    def set_session_round(self, session_id: str, round: int, *, at: datetime | None = None) -> None:
        with self._lock:
            self._set_round(session_id, round, at or utcnow())

    def _set_round(self, session_id: str, round: int, now: datetime) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            self._sessions[session_id] = dataclasses.replace(session, round=round, updated_at=now)

    def delete_session(self, session_id: str) -> bool:
        with self._lock:
            if self._sessions.pop(session_id, None) is None:
                return False
            # What ON DELETE CASCADE removes in the SQL store.
            for pid in [p.id for p in self._participants.values() if p.session_id == session_id]:
                participant = self._participants.pop(pid)
                self._by_name.pop((session_id, participant.client_name), None)
            for tid in [t.id for t in self._tasks.values() if t.session_id == session_id]:
                del self._tasks[tid]
            for key in [k for k in self._rounds if k[0] == session_id]:
                del self._rounds[key]
            self._models.pop(session_id, None)
            self._logs.pop(session_id, None)
            return True

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
        with self._lock:
            existing = self._by_name.get((session_id, client_name))
            if existing is not None:
                return _copy(self._participants[existing]), False
            if session_id not in self._sessions:
                raise ValueError(
                    f"Cannot add participant {client_name!r}: session {session_id} not found."
                )
            seq = sum(1 for p in self._participants.values() if p.session_id == session_id)
            participant = ParticipantRecord(
                id=(
                    self._participant_ids(session_id, client_name)
                    if self._participant_ids is not None
                    else secrets.token_hex(8)
                ),
                session_id=session_id,
                client_name=client_name,
                dataset=copy.deepcopy(dict(dataset)),
                seq=seq,
                joined_at=now,
                last_seen_at=now,
                credential_hash=credential_hash,
                public_key=public_key,
            )
            self._participants[participant.id] = participant
            self._by_name[(session_id, client_name)] = participant.id
            return _copy(participant), True

    def rejoin_participant(
        self,
        participant_id: str,
        *,
        dataset: Mapping[str, Any] | None = None,
        public_key: str | None = None,
        credential_hash: str | None = None,
        at: datetime | None = None,
    ) -> ParticipantRecord | None:
        changes: dict[str, Any] = {"last_seen_at": at or utcnow()}
        if dataset is not None:
            changes["dataset"] = copy.deepcopy(dict(dataset))
        if public_key is not None:
            changes["public_key"] = public_key
        if credential_hash is not None:
            changes["credential_hash"] = credential_hash
        with self._lock:
            participant = self._participants.get(participant_id)
            if participant is None:
                return None
            participant = dataclasses.replace(participant, **changes)
            self._participants[participant_id] = participant
            return _copy(participant)

    def get_participant(self, participant_id: str) -> ParticipantRecord | None:
        with self._lock:
            return _copy(self._participants.get(participant_id))

    def find_participant(self, session_id: str, client_name: str) -> ParticipantRecord | None:
        with self._lock:
            participant_id = self._by_name.get((session_id, client_name))
            return _copy(self._participants[participant_id]) if participant_id else None

    def list_participants(self, session_id: str) -> list[ParticipantRecord]:
        with self._lock:
            chosen = [p for p in self._participants.values() if p.session_id == session_id]
            return _copy(sorted(chosen, key=lambda p: p.seq))

    def touch_participants(
        self, participant_ids: Collection[str], *, at: datetime | None = None
    ) -> int:
        now = at or utcnow()
        written = 0
        with self._lock:
            for participant_id in participant_ids:
                participant = self._participants.get(participant_id)
                if participant is not None:
                    self._participants[participant_id] = dataclasses.replace(
                        participant, last_seen_at=now
                    )
                    written += 1
        return written

    def set_participant_offline(self, participant_id: str, at: datetime | None) -> None:
        with self._lock:
            participant = self._participants.get(participant_id)
            if participant is not None:
                self._participants[participant_id] = dataclasses.replace(participant, offline_at=at)

    # --------------------------------------------------------------------- tasks

    def add_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        with self._lock:
            self._check_tasks(tasks)
            self._add_tasks(tasks)

    def _check_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        # All or nothing, as in one SQL statement: everything is checked before a write.
        for task in tasks:
            if (
                task.id in self._tasks
                or task.session_id not in self._sessions
                or task.participant_id not in self._participants
            ):
                raise ValueError(
                    "Cannot add tasks: a task id is taken, or its session or participant "
                    "is unknown."
                )

    def _add_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        for task in tasks:
            self._tasks[task.id] = _copy(task)

    def complete_tasks(self, completions: Sequence[TaskCompletion]) -> None:
        with self._lock:
            self._complete_tasks(completions)

    def _complete_tasks(self, completions: Sequence[TaskCompletion]) -> None:
        for completion in completions:
            task = self._tasks.get(completion.id)
            if task is None:
                continue
            self._tasks[task.id] = dataclasses.replace(
                task,
                status=TaskStatus.done,
                reply_meta=copy.deepcopy(dict(completion.reply_meta)),
                delivered_at=completion.delivered_at,
                replied_at=completion.replied_at,
            )

    def fail_task(
        self,
        task_id: str,
        error: str,
        *,
        reply_meta: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return
            self._tasks[task_id] = dataclasses.replace(
                task,
                status=TaskStatus.failed,
                error=error,
                reply_meta=copy.deepcopy(dict(reply_meta)) if reply_meta is not None else None,
                replied_at=at or utcnow(),
            )

    def mark_stale_tasks(self, session_ids: Collection[str], reason: str) -> int:
        wanted = set(session_ids)
        with self._lock:
            stale = [
                t
                for t in self._tasks.values()
                if t.session_id in wanted and t.status == TaskStatus.queued
            ]
            for task in stale:
                self._tasks[task.id] = dataclasses.replace(
                    task, status=TaskStatus.stale, error=reason
                )
            return len(stale)

    def get_task(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            return _copy(self._tasks.get(task_id))

    def list_tasks(self, session_id: str) -> list[TaskRecord]:
        with self._lock:
            chosen = [t for t in self._tasks.values() if t.session_id == session_id]
            return _copy(sorted(chosen, key=lambda t: t.created_at))

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
        with self._lock:
            if session_id not in self._sessions:
                raise ValueError(f"Cannot record round {round}: session {session_id} not found.")
            self._record_round(session_id, round, federated, per_client, now)
            self._set_round(session_id, round, now)

    def _record_round(
        self,
        session_id: str,
        round: int,
        federated: Mapping[str, float],
        per_client: Mapping[str, Mapping[str, float]],
        now: datetime,
    ) -> None:
        first = self._rounds.get((session_id, round))
        self._rounds[(session_id, round)] = RoundRecord(
            session_id=session_id,
            round=round,
            federated=dict(federated),
            per_client={name: dict(metrics) for name, metrics in per_client.items()},
            # a redone round keeps the time of its first record, as the SQL row does
            created_at=first.created_at if first is not None else now,
        )

    def list_rounds(self, session_id: str) -> list[RoundRecord]:
        with self._lock:
            chosen = [r for (sid, _), r in self._rounds.items() if sid == session_id]
            return _copy(sorted(chosen, key=lambda r: r.round))

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
        with self._lock:
            if session_id not in self._sessions:
                raise ValueError(f"Cannot save a model: session {session_id} not found.")
            self._models[session_id] = ModelRecord(
                session_id, round, key, copy.deepcopy(dict(meta)), now
            )

    def get_model(self, session_id: str) -> ModelRecord | None:
        with self._lock:
            return _copy(self._models.get(session_id))

    # ---------------------------------------------------------------------- logs

    def append_log(self, session_id: str, message: str, *, at: datetime | None = None) -> None:
        with self._lock:
            if session_id in self._sessions:  # a late line of a deleted session is dropped
                line = LogRecord(session_id, at or utcnow(), message)
                self._logs.setdefault(session_id, []).append(line)

    def list_logs(self, session_id: str) -> list[LogRecord]:
        with self._lock:
            return list(self._logs.get(session_id, ()))  # LogRecord holds no mutable field

    # ------------------------------------------------------------------- batches

    def apply(self, writes: SessionWrites, *, at: datetime | None = None) -> None:
        if not writes:
            return
        now = at or utcnow()
        session_id = writes.session_id
        with self._lock:
            if session_id not in self._sessions:
                raise ValueError(f"Cannot apply writes: session {session_id} not found.")
            self._check_tasks(writes.tasks)
            self._add_tasks(writes.tasks)
            self._complete_tasks(writes.completions)
            for r in writes.rounds:
                # the time it was recorded, not written: the writer may apply several at once
                self._record_round(session_id, r.round, r.federated, r.per_client, r.created_at)
            rounds = [r.round for r in writes.rounds]
            if writes.session_round is not None:
                rounds.append(writes.session_round)
            if rounds:
                self._set_round(session_id, max(rounds), now)
            if writes.model is not None:
                self._models[session_id] = _copy(writes.model)
            lines = self._logs.setdefault(session_id, [])
            lines.extend(LogRecord(session_id, now, message) for message in writes.logs)

    # -------------------------------------------------------------------- tokens

    def add_token(self, token: TokenRecord) -> None:
        with self._lock:
            if token.id in self._tokens or token.token_hash in self._token_ids:
                raise ValueError(f"Token {token.id!r} or its hash is already stored.")
            self._tokens[token.id] = token
            self._token_ids[token.token_hash] = token.id

    def get_token_by_hash(self, token_hash: str) -> TokenRecord | None:
        with self._lock:
            token_id = self._token_ids.get(token_hash)
            return self._tokens[token_id] if token_id is not None else None

    def list_tokens(self) -> list[TokenRecord]:
        with self._lock:
            return sorted(self._tokens.values(), key=lambda t: t.created_at)

    def count_tokens(self) -> int:
        with self._lock:
            return len(self._tokens)

    def revoke_token(self, token_id: str, *, at: datetime | None = None) -> TokenRecord | None:
        with self._lock:
            token = self._tokens.get(token_id)
            if token is None:
                return None
            if token.revoked_at is None:
                token = dataclasses.replace(token, revoked_at=at or utcnow())
                self._tokens[token_id] = token
            return token

    def touch_token(self, token_id: str, *, at: datetime | None = None) -> None:
        with self._lock:
            token = self._tokens.get(token_id)
            if token is not None:
                self._tokens[token_id] = dataclasses.replace(token, last_used_at=at or utcnow())

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self._lock:
            return self._tokens.get(token_id)

    def list_user_tokens(self, user_id: str) -> list[TokenRecord]:
        with self._lock:
            chosen = [t for t in self._tokens.values() if t.user_id == user_id]
            return sorted(chosen, key=lambda t: t.created_at)

    def adopt_tokens(self, user_id: str) -> int:
        with self._lock:
            orphans = [t for t in self._tokens.values() if t.user_id is None]
            for token in orphans:
                self._tokens[token.id] = dataclasses.replace(token, user_id=user_id)
            return len(orphans)

    # --------------------------------------------------------------------- users

    def add_user(self, user: UserRecord) -> None:
        with self._lock:
            if user.id in self._users or user.name in self._user_ids:
                raise ValueError(
                    f"A user with id {user.id!r} or name {user.name!r} already exists."
                )
            self._users[user.id] = user
            self._user_ids[user.name] = user.id

    def get_user(self, user_id: str) -> UserRecord | None:
        with self._lock:
            return self._users.get(user_id)

    def get_user_by_name(self, name: str) -> UserRecord | None:
        with self._lock:
            user_id = self._user_ids.get(name)
            return self._users[user_id] if user_id is not None else None

    def list_users(self) -> list[UserRecord]:
        with self._lock:
            return sorted(self._users.values(), key=lambda u: u.created_at)

    def delete_user(self, user_id: str, *, at: datetime | None = None) -> UserRecord | None:
        now = at or utcnow()
        with self._lock:
            user = self._users.pop(user_id, None)
            if user is None:
                return None
            del self._user_ids[user.name]
            for token in list(self._tokens.values()):
                if token.user_id == user_id and token.revoked_at is None:
                    self._tokens[token.id] = dataclasses.replace(token, revoked_at=now)
            return user

    # --------------------------------------------------------------------- audit

    def append_audit(self, entry: AuditRecord) -> None:
        with self._lock:
            self._audit.append(dataclasses.replace(entry, seq=len(self._audit) + 1))

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
        with self._lock:
            chosen = [
                e
                for e in self._audit
                if (user_id is None or e.user_id == user_id)
                and (action is None or e.action == action or e.action.startswith(f"{action}."))
                and (target is None or e.target == target)
                and (since is None or e.at >= since)
            ]
        return chosen[-limit:]  # the newest `limit`, oldest first
