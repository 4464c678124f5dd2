"""The engine's implementation of :class:`fedsilo.federation.SessionContext`.

A round costs the workflow no state-store wait: its writes go, in order, to the session's
:class:`~fedsilo.server.engine.persister.Persister` thread as
:class:`~fedsilo.server.state.SessionWrites` batches (one transaction each). A ``send``
inserts its task records in one statement; replies are recorded in memory as they arrive and
written with the session's next write (the next ``send``, the checkpoint, a log line, the end
of the session); ``record_round`` is written with the checkpoint. A crash loses only records
of a round that resumes from the previous checkpoint, and is therefore redone.
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
from typing import TYPE_CHECKING, Any

from fedsilo.errors import TaskError
from fedsilo.federation import (
    AskMixin,
    Checkpoint,
    Failure,
    FailureCause,
    Participant,
    Reply,
    SessionInfo,
    Task,
    TaskGroup,
    sealed_arrays,
)
from fedsilo.federation.expect import rejection_line
from fedsilo.server.engine.frames import encode_into
from fedsilo.server.engine.gate import Slot
from fedsilo.server.engine.group import EngineTaskGroup
from fedsilo.server.engine.hub import PendingTask
from fedsilo.server.engine.persister import Batch, Persister, WriterStopped
from fedsilo.server.metrics import rejection_reason
from fedsilo.server.state import (
    ModelRecord,
    ParticipantRecord,
    RoundRecord,
    SessionWrites,
    StateStore,
    TaskCompletion,
    TaskRecord,
    utcnow,
)
from fedsilo.wire import (
    Arrays,
    DatasetSummary,
    ModelMeta,
    SessionStatus,
    TaskPayload,
    decode_frame,
)

if TYPE_CHECKING:
    from fedsilo.server.engine.runner import SessionEngine

__all__ = [
    "EngineContext",
    "Interrupted",
    "ServerStopping",
    "SessionCanceled",
    "checkpoint_key",
    "model_key",
    "participant_from_record",
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


def participant_from_record(record: ParticipantRecord) -> Participant:
    return Participant(
        id=record.id,
        client_name=record.client_name,
        dataset=DatasetSummary.model_validate(record.dataset),
        public_key=decode_key(record.public_key),
    )


class EngineContext(AskMixin):
    """What one session's workflow may do; every call goes through the engine's stores."""

    def __init__(
        self, engine: SessionEngine, info: SessionInfo, task_timeout: float | None = None
    ) -> None:
        self._engine = engine
        self._info = info
        #: seconds a task waits for its reply unless ``send`` says otherwise: the session's
        #: own ``task_timeout``, else the server's
        self.task_timeout = task_timeout or engine.settings.task_timeout
        self.canceled = threading.Event()
        self._lock = threading.Lock()
        #: successful replies by task id (in arrival order), written with the next write
        self._answered: dict[str, TaskCompletion] = {}
        #: ids of tasks inserted (or in the batch being written) and not yet answered
        self._inserted: set[str] = set()
        #: round -> its record, recorded but not yet written
        self._rounds: dict[int, RoundRecord] = {}
        #: gate slots of replies received and not yet handed out, by id(reply)
        self._slots: dict[int, Slot] = {}
        #: the session's writes, in order, off the round's critical path
        self.writes = Persister(engine.state, info.id)
        #: where large frames held for delivery or writing live out of the resident set
        #: (:func:`~fedsilo.server.engine.frames.encode_into`); the files have no names
        self.spill = engine.settings.resolved_data_dir() / "spill"

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
        """The first ``n`` or more participants that joined and are live (an offline one,
        silent past the grace period, counts once it is heard from again)."""
        engine = self._engine
        waited = 0.0
        with engine.joined:
            while True:
                self.check_alive()
                participants = [
                    p for p in self.participants() if not engine.liveness.is_offline(p.id)
                ]
                if len(participants) >= n:
                    break
                if timeout is not None and waited >= timeout:
                    raise TaskError(
                        f"only {len(participants)} of {n} clients joined (and are online) "
                        f"within {timeout:g} s"
                    )
                # Joins, cancels and shutdown notify the condition; the timeout is a safety net.
                engine.joined.wait(timeout=1.0)
                waited += 1.0
        engine.state.set_session_status(
            self._info.id, SessionStatus.running, expected={SessionStatus.pending}
        )
        self.log(f"{len(participants)} clients joined; running")
        return participants

    def participants(self) -> list[Participant]:
        records = self._engine.state.list_participants(self._info.id)
        return [participant_from_record(record) for record in records]

    # ------------------------------------------------------------------- tasks

    def send(self, tasks: Sequence[Task], *, timeout: float | None = None) -> TaskGroup:
        self.check_alive()
        engine = self._engine
        tasks = list(tasks)
        now = utcnow()
        frames: dict[tuple[int, str, int, str], memoryview] = {}
        pending: list[PendingTask] = []
        records: list[TaskRecord] = []
        for task in tasks:
            meta = dict(task.meta)
            if task.sealed is not None:
                header = TaskPayload(
                    kind=task.kind, round=task.round, meta=meta, sealed_from=task.sealed.sender
                )
                # never spilled: the server writes a sealed payload nowhere, not even a file
                frame = encode_into(sealed_arrays(task.sealed), header)
            else:
                # Same arrays object, kind, round and meta: same bytes, encoded and held once.
                key = (id(task.arrays), task.kind, task.round, json.dumps(meta, sort_keys=True))
                found = frames.get(key)
                if found is None:
                    header = TaskPayload(kind=task.kind, round=task.round, meta=meta)
                    found = frames[key] = encode_into(task.arrays, header, self.spill)
                frame = found
            task_id = secrets.token_hex(8)
            # The engine keeps the frame, not the workflow's arrays: a workflow that lets go
            # of its copy of the model during the round leaves one copy alive, the frame's.
            bare = replace(task, arrays=None, sealed=None)
            pending.append(
                PendingTask(id=task_id, session_id=self._info.id, task=bare, frame=frame)
            )
            records.append(
                TaskRecord(
                    id=task_id,
                    session_id=self._info.id,
                    participant_id=task.to.id,
                    kind=task.kind,
                    round=task.round,
                    meta=meta,
                    created_at=now,
                )
            )
        if records:

            def task_writes() -> SessionWrites:
                # Replies to these very tasks may have arrived by the time this runs: the
                # batch inserts the tasks before it completes them.
                with self._lock:
                    self._inserted.update(record.id for record in records)
                writes = self._take_pending()
                writes.tasks = records
                return writes

            self.writes.submit(Batch(task_writes))
        # A participant that is offline is not asked: its task fails at once (recorded after
        # the insert just queued), instead of waiting out the timeout on a dead client.
        offline = [p for p in pending if engine.liveness.is_offline(p.participant_id)]
        engine.hub.push([p for p in pending if p not in offline])
        for unasked in offline:
            silent = engine.liveness.silent_for(unasked.participant_id)
            name = unasked.task.to.client_name
            reason = f"client {name!r} offline: no poll for {silent:.0f} s"
            unasked.future.set_result(unasked.failure("offline", reason))
            self.record_failure_later(unasked.id, reason)
        limit = timeout if timeout is not None else self.task_timeout
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
        """A reply arrived for one of this session's tasks: note its completion, and keep its
        gate slot until the workflow is done with it (or drops it unconsumed)."""
        with self._lock:
            self._answered[pending.id] = TaskCompletion(
                id=pending.id,
                reply_meta=dict(reply.meta),
                delivered_at=pending.delivered_at,
                replied_at=pending.replied_at,
            )
            self._slots[id(reply)] = slot
        # A reply the workflow drops unconsumed (a group it let go of) frees its slot too.
        weakref.finalize(reply, self._drop_slot, id(reply), slot)

    def reject(self, task_id: str, failure: Failure, reply_meta: Mapping[str, Any]) -> None:
        """A reply that arrived but does not meet its task (see
        :func:`fedsilo.federation.expect.screen`): the task is recorded failed, not
        completed, and the session log says why."""
        with self._lock:
            # Its completion may still wait for a write; it must not land after the failure.
            self._answered.pop(task_id, None)
        self.log(rejection_line(failure))
        self._engine.metrics.reply_rejected(rejection_reason(failure.reason))
        self.record_failure(task_id, failure.reason, dict(reply_meta))

    def declared(self, participant: Participant) -> DatasetSummary | None:
        """What bounds ``participant``'s counts when its replies are screened
        (:mod:`fedsilo.federation.expect`): the dataset it declared on joining."""
        return participant.dataset

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
        record = RoundRecord(
            session_id=self._info.id,
            round=round,
            federated=_finite(federated),
            per_client={name: _finite(metrics) for name, metrics in per_client.items()},
            created_at=utcnow(),
        )
        with self._lock:
            self._rounds[round] = record  # written with the session's next write
        self._engine.metrics.round_completed()

    def checkpoint(self, round: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        # Encoded now (the workflow may change its arrays once this returns), written behind:
        # the round's records, then the file, in one job of the session's writer. In this
        # order a crash between the two leaves records of a round the checkpoint does not
        # hold yet, and the resumed session redoes that round (its records are replaced); in
        # the other order the resumed session would skip a round whose records were lost.
        frame = encode_into(arrays, {"round": round, "meta": dict(meta)}, self.spill)
        artifacts, key = self._engine.artifacts, checkpoint_key(self._info.id)

        def round_writes() -> SessionWrites:
            writes = self._take_pending()
            writes.session_round = round
            return writes

        def write_file() -> None:
            # write_bytes takes any buffer (a file write or an object put): no copy to bytes.
            artifacts.write_bytes(key, frame)

        self.writes.submit(Batch(round_writes, after=write_file))

    def restore(self) -> Checkpoint | None:
        data = self._engine.artifacts.read_bytes(checkpoint_key(self._info.id))
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
        frame = encode_into(arrays, header, self.spill)
        artifacts, session_id = self._engine.artifacts, self._info.id

        def model_writes() -> SessionWrites:
            writes = self._take_pending()
            writes.model = ModelRecord(session_id, round, key, dict(meta), utcnow())
            return writes

        self.writes.run(
            Batch(model_writes, before=lambda: artifacts.write_bytes(key, frame))
        )  # GET /model serves it as soon as the workflow moves on

    def load_model(self, session_id: str) -> tuple[Arrays, dict[str, Any]] | None:
        data = self._engine.artifacts.read_bytes(model_key(session_id))
        if data is None:
            return None
        arrays, header = decode_frame(data)
        return arrays, dict(header)

    def log(self, message: str) -> None:
        def log_writes() -> SessionWrites:
            writes = self._take_pending()
            writes.logs.append(message)
            return writes

        self.writes.submit(Batch(log_writes))

    def record_failure(
        self, task_id: str, reason: str, reply_meta: dict[str, Any] | None = None
    ) -> None:
        """Record a failed task, after its insert (queued earlier); waits for it."""

        def write_failure(state: StateStore) -> None:
            state.fail_task(task_id, reason, reply_meta=reply_meta)
            with self._lock:
                self._inserted.discard(task_id)

        try:
            self.writes.run(write_failure)
        except WriterStopped:  # the session ended meanwhile; its writes (the insert) are done
            self._engine.state.fail_task(task_id, reason, reply_meta=reply_meta)

    def record_failure_later(self, task_id: str, reason: str) -> None:
        """Record a failed task behind the writes queued so far, without waiting (the
        liveness sweep fails an offline participant's tasks on its own thread)."""

        def write_failure(state: StateStore) -> None:
            state.fail_task(task_id, reason)
            with self._lock:
                self._inserted.discard(task_id)

        done = self.writes.submit(write_failure)
        if done.done() and isinstance(done.exception(), WriterStopped):
            self._engine.state.fail_task(task_id, reason)  # the session ended meanwhile

    def flush(self) -> None:
        """Write what is recorded in memory only (replies, the last round's metrics) and
        wait for every queued write."""
        self.writes.run(Batch(self._take_pending))

    def _take_pending(self) -> SessionWrites:
        """What was recorded in memory since the last write, to ride along with the next
        one (one transaction): written per reply, these commits were half of the server's
        busy time at 100 clients."""
        with self._lock:
            # Only tasks already inserted (by an earlier job or this very batch); replies to
            # tasks whose insert is still queued wait for a later write. Both sides can be
            # thousands long when the writer runs behind: the intersection walks the smaller.
            ready = self._inserted & self._answered.keys()
            answered = [self._answered.pop(task_id) for task_id in sorted(ready)]
            self._inserted -= ready
            rounds, self._rounds = self._rounds, {}
        return SessionWrites(
            self._info.id,
            completions=answered,
            rounds=[rounds[number] for number in sorted(rounds)],
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
