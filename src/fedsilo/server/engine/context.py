"""The engine's implementation of :class:`fedsilo.federation.SessionContext`.

A round costs the workflow no database wait: its writes go, in order, to the session's
:class:`~fedsilo.server.engine.persister.Persister` thread. A ``send`` inserts its task rows in
one statement; replies are recorded in memory as they arrive and written with the session's
next write (the next ``send``, the checkpoint, a log line, the end of the session);
``record_round`` is written with the checkpoint. A crash loses only records of a round that
resumes from the previous checkpoint, and is therefore redone.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from fedsilo.errors import TaskError
from fedsilo.federation import (
    AskMixin,
    Checkpoint,
    FailureCause,
    Participant,
    Reply,
    SessionInfo,
    Task,
    TaskGroup,
    sealed_arrays,
)
from fedsilo.server.engine.frames import encode_into
from fedsilo.server.engine.gate import Slot
from fedsilo.server.engine.group import EngineTaskGroup
from fedsilo.server.engine.hub import PendingTask
from fedsilo.server.engine.persister import Persister
from fedsilo.server.tables import (
    ModelRow,
    ParticipantRow,
    RoundRow,
    SessionLogRow,
    SessionRow,
    TaskRow,
    utcnow,
)
from fedsilo.wire import DatasetSummary, ModelMeta, SessionStatus, TaskPayload, decode_frame

if TYPE_CHECKING:
    from fedsilo.server.engine.runner import SessionEngine

__all__ = [
    "EngineContext",
    "Interrupted",
    "ServerStopping",
    "SessionCanceled",
    "checkpoint_key",
    "model_key",
    "participant_from_row",
]


class Interrupted(BaseException):
    """Unwinds a workflow. A BaseException so a package's ``except Exception`` cannot eat it."""


class SessionCanceled(Interrupted):
    """The session was canceled through the API."""


class ServerStopping(Interrupted):
    """The server is shutting down; the session resumes from its checkpoint on restart."""


def checkpoint_key(session_id: str) -> str:
    return f"sessions/{session_id}/checkpoint.safetensors"


def model_key(session_id: str) -> str:
    return f"sessions/{session_id}/model.safetensors"


def decode_key(text: str) -> bytes:
    """The public key column (url-safe base64 without padding) as its 32 raw bytes."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) if text else b""


def participant_from_row(row: ParticipantRow) -> Participant:
    return Participant(
        id=row.id,
        client_name=row.client_name,
        dataset=DatasetSummary.model_validate(row.dataset),
        public_key=decode_key(row.public_key),
    )


class EngineContext(AskMixin):
    """What one session's workflow may do; every call goes through the engine's stores."""

    def __init__(self, engine: SessionEngine, info: SessionInfo) -> None:
        self._engine = engine
        self._info = info
        self.canceled = threading.Event()
        self._lock = threading.Lock()
        #: row updates of successful replies, written with the next write
        self._answered: list[dict[str, Any]] = []
        #: ids of task rows inserted and not yet answered
        self._inserted: set[str] = set()
        #: round -> (federated, per_client) recorded but not yet written
        self._rounds: dict[int, tuple[dict[str, float], dict[str, dict[str, float]]]] = {}
        #: gate slots of replies received and not yet handed out, by id(reply)
        self._slots: dict[int, Slot] = {}
        #: the session's writes, in order, off the round's critical path
        self.writes = Persister(engine.db, info.id)

    @property
    def session(self) -> SessionInfo:
        return self._info

    # ------------------------------------------------------------------ guards

    def check_alive(self) -> None:
        if self.writes.error is not None:
            raise TaskError(f"the session's state could not be written: {self.writes.error}")
        if self.canceled.is_set():
            raise SessionCanceled
        if self._engine.stopping.is_set():
            raise ServerStopping

    # ---------------------------------------------------------------- clients

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
        engine = self._engine
        waited = 0.0
        with engine.joined:
            while True:
                self.check_alive()
                participants = self.participants()
                if len(participants) >= n:
                    break
                if timeout is not None and waited >= timeout:
                    raise TaskError(
                        f"only {len(participants)} of {n} clients joined within {timeout:g} s"
                    )
                # Joins, cancels and shutdown notify the condition; the timeout is a safety net.
                engine.joined.wait(timeout=1.0)
                waited += 1.0
        with engine.db.session() as s:
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == self._info.id, SessionRow.status == SessionStatus.pending)
                .values(status=SessionStatus.running, started_at=utcnow(), updated_at=utcnow())
            )
        self.log(f"{len(participants)} clients joined; running")
        return participants

    def participants(self) -> list[Participant]:
        with self._engine.db.session() as s:
            rows = s.scalars(
                select(ParticipantRow)
                .where(ParticipantRow.session_id == self._info.id)
                .order_by(ParticipantRow.seq)
            ).all()
            return [participant_from_row(row) for row in rows]

    # ------------------------------------------------------------------- tasks

    def send(self, tasks: Sequence[Task], *, timeout: float | None = None) -> TaskGroup:
        self.check_alive()
        engine = self._engine
        tasks = list(tasks)
        now = utcnow()
        frames: dict[tuple[int, str, int, str], memoryview] = {}
        pending: list[PendingTask] = []
        rows: list[dict[str, Any]] = []
        for task in tasks:
            meta = dict(task.meta)
            if task.sealed is not None:
                header = TaskPayload(
                    kind=task.kind, round=task.round, meta=meta, sealed_from=task.sealed.sender
                )
                frame = encode_into(sealed_arrays(task.sealed), header)
            else:
                # Same arrays object, kind, round and meta: same bytes, encoded and held once.
                key = (id(task.arrays), task.kind, task.round, json.dumps(meta, sort_keys=True))
                found = frames.get(key)
                if found is None:
                    header = TaskPayload(kind=task.kind, round=task.round, meta=meta)
                    found = frames[key] = encode_into(task.arrays, header)
                frame = found
            task_id = secrets.token_hex(8)
            # The engine keeps the frame, not the workflow's arrays: a workflow that lets go
            # of its copy of the model during the round leaves one copy alive, the frame's.
            bare = replace(task, arrays=None, sealed=None)
            pending.append(
                PendingTask(id=task_id, session_id=self._info.id, task=bare, frame=frame)
            )
            rows.append(
                {
                    "id": task_id,
                    "session_id": self._info.id,
                    "participant_id": task.to.id,
                    "kind": task.kind,
                    "round": task.round,
                    "meta": meta,
                    "status": "queued",
                    "created_at": now,
                }
            )
        if rows:

            def write_tasks(s: Session) -> None:
                # rows first: replies to these very tasks may be pending by the time this runs
                s.execute(insert(TaskRow), rows)
                with self._lock:
                    self._inserted.update(row["id"] for row in rows)
                self._write_pending(s)

            self.writes.submit(write_tasks)
        engine.hub.push(pending)
        limit = timeout if timeout is not None else engine.settings.task_timeout
        return EngineTaskGroup(self, [p.task for p in pending], pending, default_timeout=limit)

    def expire(self, task_id: str, cause: FailureCause, reason: str) -> bool:
        """Withdraw a task the group gave up on and record why; False if its reply won."""
        pending = self._engine.hub.take(task_id)
        if pending is None:
            return False
        self.record_failure(task_id, reason)
        if not pending.future.done():
            pending.future.set_result(pending.failure(cause, reason))
        return True

    def accepted(self, pending: PendingTask, reply: Reply, slot: Slot) -> None:
        """A reply arrived for one of this session's tasks: note its row update, and keep its
        gate slot until the workflow is done with it (or drops it unconsumed)."""
        with self._lock:
            self._answered.append(
                {
                    "id": pending.id,
                    "status": "done",
                    "reply_meta": reply.meta,
                    "delivered_at": pending.delivered_at,
                    "replied_at": pending.replied_at,
                }
            )
            self._slots[id(reply)] = slot
        # A reply the workflow drops unconsumed (a group it let go of) frees its slot too.
        weakref.finalize(reply, self._drop_slot, id(reply), slot)

    def take_slot(self, reply: Reply) -> Slot | None:
        """The gate slot of a reply being handed to the workflow (while it is alive, so its
        ``id()`` is its own: a freed reply's id is soon another's)."""
        with self._lock:
            return self._slots.pop(id(reply), None)

    def _drop_slot(self, key: int, slot: Slot) -> None:
        with self._lock:
            if self._slots.get(key) is slot:
                del self._slots[key]
        slot.release()

    # ---------------------------------------------------------------- results

    def record_round(
        self,
        round: int,
        federated: Mapping[str, float],
        per_client: Mapping[str, Mapping[str, float]],
    ) -> None:
        record = (
            _finite(federated),
            {name: _finite(metrics) for name, metrics in per_client.items()},
        )
        with self._lock:
            self._rounds[round] = record  # written with the session's next write

    def checkpoint(self, round: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        # Encoded now (the workflow may change its arrays once this returns), written behind:
        # the file, then the round's rows, in one job of the session's writer.
        frame = encode_into(arrays, {"round": round, "meta": dict(meta)})
        store, key = self._engine.store, checkpoint_key(self._info.id)

        def write_checkpoint(s: Session) -> None:
            # write_bytes takes any buffer (a file write or an object put): no copy to bytes.
            store.write_bytes(key, cast(bytes, frame))
            self._write_pending(s, session_round=round)

        self.writes.submit(write_checkpoint)

    def restore(self) -> Checkpoint | None:
        data = self._engine.store.read_bytes(checkpoint_key(self._info.id))
        if data is None:
            return None
        arrays, header = decode_frame(data)
        self.log(f"resuming from the checkpoint of round {header['round']}")
        return Checkpoint(round=int(header["round"]), arrays=arrays, meta=header.get("meta", {}))

    def save_model(self, arrays: Mapping[str, Any], meta: Mapping[str, Any], round: int) -> None:
        header = ModelMeta(
            session_id=self._info.id,
            package_name=self._info.package_name,
            round=round,
            model_config_=self._info.model_config,
            data_config=self._info.data_config,
            meta=dict(meta),
        )
        key = model_key(self._info.id)
        frame = encode_into(arrays, header)
        store, session_id = self._engine.store, self._info.id

        def write_model(s: Session) -> None:
            store.write_bytes(key, cast(bytes, frame))
            self._write_pending(s)
            row = s.get(ModelRow, session_id)
            if row is None:
                row = ModelRow(session_id=self._info.id, key=key, created_at=utcnow())
                s.add(row)
            row.round = round
            row.meta = dict(meta)
            row.created_at = utcnow()

        self.writes.run(write_model)  # GET /model serves it as soon as the workflow moves on

    def log(self, message: str) -> None:
        line = SessionLogRow(session_id=self._info.id, created_at=utcnow(), message=message)

        def write_log(s: Session) -> None:
            self._write_pending(s)
            s.add(line)

        self.writes.submit(write_log)

    def record_failure(
        self, task_id: str, reason: str, reply_meta: dict[str, Any] | None = None
    ) -> None:
        """Record a failed task, after its row's insert (queued earlier); waits for it."""

        def write_failure(s: Session) -> None:
            record_failure(s, task_id, reason, reply_meta)
            with self._lock:
                self._inserted.discard(task_id)

        self.writes.run(write_failure)

    def flush(self) -> None:
        """Write what is recorded in memory only (replies, the last round's metrics) and
        wait for every queued write."""
        self.writes.run(self._write_pending)

    def _write_pending(self, s: Session, session_round: int | None = None) -> None:
        with self._lock:
            # Only rows already inserted (their insert is an earlier or this very job);
            # replies to tasks whose insert is still queued wait for a later write.
            answered = [a for a in self._answered if a["id"] in self._inserted]
            self._answered = [a for a in self._answered if a["id"] not in self._inserted]
            self._inserted.difference_update(a["id"] for a in answered)
            rounds, self._rounds = self._rounds, {}
        if answered:
            # One statement for every reply since the last write: written per reply, these
            # commits were half of the server's busy time at 100 clients.
            s.execute(update(TaskRow), answered)
        now = utcnow()
        for round, (federated, per_client) in sorted(rounds.items()):
            row = s.scalar(
                select(RoundRow).where(
                    RoundRow.session_id == self._info.id, RoundRow.round == round
                )
            )
            if row is None:  # a round redone after a restart replaces its first record
                row = RoundRow(session_id=self._info.id, round=round, created_at=now)
                s.add(row)
            row.federated = federated
            row.per_client = per_client
            session_round = max(round, session_round or 0)
        if session_round is not None:
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == self._info.id)
                .values(round=session_round, updated_at=now)
            )


def record_failure(
    s: Session, task_id: str, reason: str, reply_meta: dict[str, Any] | None = None
) -> None:
    s.execute(
        update(TaskRow)
        .where(TaskRow.id == task_id)
        .values(status="failed", error=reason, reply_meta=reply_meta, replied_at=utcnow())
    )


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics as JSON numbers. A metric that does not exist for a round (None, or NaN such as
    ROC AUC on a one-class test set) is left out rather than stored as a non-JSON NaN."""
    clean = {}
    for key, value in metrics.items():
        if value is None:
            continue
        number = float(value)
        if math.isfinite(number):
            clean[key] = number
    return clean
