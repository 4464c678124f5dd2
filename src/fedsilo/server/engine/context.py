"""The engine's implementation of :class:`fedsilo.federation.SessionContext`."""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import wait
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update

from fedsilo.errors import TaskError
from fedsilo.federation import Checkpoint, Participant, Reply, SessionInfo
from fedsilo.server.engine.hub import PendingTask, TaskOutcome
from fedsilo.server.tables import (
    ModelRow,
    ParticipantRow,
    RoundRow,
    SessionRow,
    TaskRow,
    utcnow,
)
from fedsilo.wire import (
    DatasetSummary,
    ModelMeta,
    SessionStatus,
    TaskEnvelope,
    decode_frame,
    encode_frame,
)

if TYPE_CHECKING:
    from fedsilo.server.engine.runner import SessionEngine

__all__ = ["EngineContext", "Interrupted", "ServerStopping", "SessionCanceled"]


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


def participant_from_row(row: ParticipantRow) -> Participant:
    return Participant(
        id=row.id,
        client_name=row.client_name,
        dataset=DatasetSummary.model_validate(row.dataset),
    )


class EngineContext:
    """What one session's workflow may do; every call goes through the engine's stores."""

    def __init__(self, engine: SessionEngine, info: SessionInfo) -> None:
        self._engine = engine
        self._info = info
        self.canceled = threading.Event()

    @property
    def session(self) -> SessionInfo:
        return self._info

    # ------------------------------------------------------------------ guards

    def check_alive(self) -> None:
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
    ) -> list[Reply]:
        self.check_alive()
        if not participants:
            raise TaskError(f"round {round}: no participant to send task {kind!r} to")
        engine = self._engine
        plain_meta = dict(meta or {})
        prepared = {name: np.asarray(value) for name, value in (arrays or {}).items()}
        now = utcnow()
        tasks: list[PendingTask] = []
        rows: list[TaskRow] = []
        for participant in participants:
            task_id = secrets.token_hex(8)
            envelope = TaskEnvelope(
                id=task_id, session_id=self._info.id, kind=kind, round=round, meta=plain_meta
            )
            tasks.append(
                PendingTask(
                    id=task_id,
                    session_id=self._info.id,
                    participant=participant,
                    kind=kind,
                    round=round,
                    frame=encode_frame(prepared, envelope),
                )
            )
            rows.append(
                TaskRow(
                    id=task_id,
                    session_id=self._info.id,
                    participant_id=participant.id,
                    kind=kind,
                    round=round,
                    meta=plain_meta,
                    status="queued",
                    created_at=now,
                )
            )
        with engine.db.session() as s:
            s.add_all(rows)
        engine.hub.push(tasks)

        limit = timeout if timeout is not None else engine.settings.task_timeout
        wait([t.future for t in tasks], timeout=limit)
        self.check_alive()

        replies: list[Reply] = []
        failures: list[str] = []
        answered: list[dict[str, Any]] = []
        for task in tasks:
            # A reply racing the timeout wins if it took the task from the hub first; then
            # its handler is about to resolve the future, so result() below waits briefly.
            if not task.future.done() and engine.hub.take(task.id) is not None:
                reason = f"no reply within {limit:g} s"
                engine.record_task_failure(task.id, reason)
                task.future.set_result(TaskOutcome(error=reason))
            outcome = task.future.result()
            if outcome.reply is not None:
                replies.append(outcome.reply)
                answered.append(
                    {
                        "id": task.id,
                        "status": "done",
                        "reply_meta": outcome.reply.meta,
                        "delivered_at": task.delivered_at,
                        "replied_at": task.replied_at,
                    }
                )
            else:
                failures.append(f"{task.participant.client_name}: {outcome.error}")

        if answered:
            # One statement for the round's successful replies: written per reply, these
            # commits were half of the server's busy time at 100 clients. Failures are
            # written as they happen (engine.record_task_failure).
            with engine.db.session() as s:
                s.execute(update(TaskRow), answered)

        needed = min_replies if min_replies is not None else 1
        if failures:
            listed = "; ".join(failures)
            self.log(f"round {round}: task {kind!r} failed on {len(failures)} client(s): {listed}")
            if not accept_failures:
                raise TaskError(
                    f"round {round}: task {kind!r} failed and accept_failures is false: {listed}"
                )
        if len(replies) < needed:
            raise TaskError(
                f"round {round}: task {kind!r} got {len(replies)} successful replies; "
                f"at least {needed} needed" + (f" ({'; '.join(failures)})" if failures else "")
            )
        return replies

    # ---------------------------------------------------------------- results

    def record_round(
        self,
        rnd: int,
        federated: Mapping[str, float],
        per_client: Mapping[str, Mapping[str, float]],
    ) -> None:
        now = utcnow()
        federated_clean = _finite(federated)
        per_client_clean = {name: _finite(metrics) for name, metrics in per_client.items()}
        with self._engine.db.session() as s:
            row = s.scalar(
                select(RoundRow).where(RoundRow.session_id == self._info.id, RoundRow.round == rnd)
            )
            if row is None:  # a round redone after a restart replaces its first record
                row = RoundRow(session_id=self._info.id, round=rnd, created_at=now)
                s.add(row)
            row.federated = federated_clean
            row.per_client = per_client_clean
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == self._info.id)
                .values(round=rnd, updated_at=now)
            )

    def checkpoint(self, rnd: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        frame = encode_frame(
            {k: np.asarray(v) for k, v in arrays.items()}, {"round": rnd, "meta": dict(meta)}
        )
        self._engine.store.write_bytes(checkpoint_key(self._info.id), frame)
        with self._engine.db.session() as s:
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == self._info.id)
                .values(round=rnd, updated_at=utcnow())
            )

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
        self._engine.store.write_bytes(
            key, encode_frame({k: np.asarray(v) for k, v in arrays.items()}, header)
        )
        with self._engine.db.session() as s:
            row = s.get(ModelRow, self._info.id)
            if row is None:
                row = ModelRow(session_id=self._info.id, key=key, created_at=utcnow())
                s.add(row)
            row.round = round
            row.meta = dict(meta)
            row.created_at = utcnow()

    def log(self, message: str) -> None:
        self._engine.log(self._info.id, message)


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
