"""Runs session workflows, accepts replies, resumes sessions after a restart."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from fedsilo.errors import FedsiloError, WireError
from fedsilo.federation import Failure, Outcome, Reply, SessionInfo, get_package, split_sealed
from fedsilo.server.auth import hash_token, new_secret
from fedsilo.server.engine.context import EngineContext, Interrupted, SessionCanceled
from fedsilo.server.engine.frames import decode_views
from fedsilo.server.engine.gate import ReplyGate, Slot
from fedsilo.server.engine.health import Backoff, StoreHealth, describe_store_error, is_store_error
from fedsilo.server.engine.hub import TaskHub
from fedsilo.server.engine.liveness import Liveness, LivenessSweep
from fedsilo.server.initial_model import with_initial_model
from fedsilo.server.metrics import ServerMetrics
from fedsilo.server.settings import Settings
from fedsilo.server.state import (
    ACTIVE_STATUSES,
    ArtifactStore,
    ParticipantRecord,
    StateStore,
    utcnow,
)
from fedsilo.wire import DatasetSummary, ReplyEnvelope, SessionStatus, parse_header

__all__ = ["Accepted", "ReplyRejected", "SessionEngine"]

logger = logging.getLogger("fedsilo.engine")

#: large replies a session admits (reads) before its workflow consumed the earlier ones. One:
#: a workflow's loop variable keeps the reply it just folded in alive while it waits for the
#: next, so one admitted reply already means two updates alive at a time; a second slot would
#: overlap reading with folding, for one more update of memory (bench/streaming_memory.py).
REPLIES_IN_FLIGHT = 1
#: times a session whose write failed is resumed in-process once the store takes writes
#: again; past it the session fails (a write that fails every time is not the disk's fault)
STORE_RESUMES = 3


class ReplyRejected(FedsiloError):
    """A reply the engine could not take; ``status_code`` is what the API answers.

    ``failure`` is set when the rejection also failed the task (a malformed frame): the
    caller records it before answering.
    """

    def __init__(self, status_code: int, detail: str, failure: Failure | None = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.failure = failure
        super().__init__(detail)


@dataclass(frozen=True)
class Accepted:
    """What became of a reply: the outcome handed to the workflow, and the meta the client
    sent (kept on the task record of a failure)."""

    outcome: Outcome
    reply_meta: dict[str, Any]


@dataclass
class _Worker:
    thread: threading.Thread
    context: EngineContext


class SessionEngine:
    """One per server. Each active session's workflow runs in its own daemon thread."""

    def __init__(self, state: StateStore, artifacts: ArtifactStore, settings: Settings) -> None:
        #: sessions, participants, tasks, rounds, models, logs (the SQL or the memory store)
        self.state = state
        #: checkpoint and model frames
        self.artifacts = artifacts
        self.settings = settings
        self.hub = TaskHub()
        self.stopping = threading.Event()
        #: set when the server is about to exit: long-polls answer 503 at once (clients retry
        #: and find the restarted server) instead of being cut off by the shutdown
        self.draining = threading.Event()
        self.joined = threading.Condition()
        self._workers: dict[str, _Worker] = {}
        self._gates: dict[str, ReplyGate] = {}
        #: rounds, task latency, rejected replies (GET /metrics)
        self.metrics = ServerMetrics(state)
        #: who polls: participants silent past the grace period are offline
        self.liveness = Liveness(settings.participant_grace)
        #: whether the state store takes writes (GET /healthz)
        self.health = StoreHealth(settings.store_retry_timeout)
        self._lock = threading.Lock()
        #: session id -> in-process resumes after a failed write (see STORE_RESUMES)
        self._store_resumes: dict[str, int] = {}
        self._sweeper = LivenessSweep(self)
        self._sweeper.start()

    # ------------------------------------------------------------------ lifecycle

    def resume_all(self) -> list[str]:
        """Restart the workflows of sessions that were pending or running at the last stop.

        Tasks queued before the stop are marked stale: their payloads lived in memory, and the
        workflow re-asks from its last checkpoint.
        """
        ids = [session.id for session in self.state.list_sessions(statuses=ACTIVE_STATUSES)]
        self.state.mark_stale_tasks(ids, "server restarted")
        for session_id in ids:
            self.start_session(session_id)
        return ids

    def start_session(self, session_id: str) -> None:
        record = self.state.get_session(session_id)
        if record is None:
            raise KeyError(session_id)
        info = SessionInfo(
            id=record.id,
            name=record.name,
            package_name=record.package_name,
            min_num_clients=record.min_num_clients,
            num_rounds=record.num_rounds,
            model_config=record.model_config,
            data_config=record.data_config,
        )
        # After a restart nobody has polled yet: give every participant the longest poll's
        # wait (plus grace) to come back before it counts as silent; one that was offline
        # stays so until it is heard from.
        for participant in self.state.list_participants(session_id):
            if participant.offline_at is not None:
                self.liveness.mark_offline(participant.id, session_id)
            else:
                self.liveness.expect(participant.id, session_id, self.settings.max_long_poll)
        context = EngineContext(self, info, task_timeout=record.task_timeout)
        thread = threading.Thread(
            target=self._run, args=(context,), name=f"session-{session_id}", daemon=True
        )
        with self._lock:
            self._workers[session_id] = _Worker(thread, context)
        thread.start()

    def cancel(self, session_id: str) -> None:
        with self._lock:
            worker = self._workers.get(session_id)
        if worker is not None:
            worker.context.canceled.set()
        self.hub.fail_session(session_id, "ended", "session canceled")
        self.wake_participants(session_id)
        self.liveness.forget_session(session_id)
        self.notify_join()

    def wake_participants(self, session_id: str) -> None:
        """Wake every long-poll of a session so its clients see that it ended."""
        self.hub.wake({p.id for p in self.state.list_participants(session_id)})

    def notify_join(self) -> None:
        with self.joined:
            self.joined.notify_all()

    def first_join(
        self, session_id: str, client_name: str, dataset: DatasetSummary, public_key: str
    ) -> tuple[ParticipantRecord, str] | None:
        """A participant's first join: a fresh credential (returned once, stored hashed), the
        join logged, the participant live, the workflow's wait for clients woken.

        Returns None when another first join under ``client_name`` won a race (the caller
        says so); raises ValueError when the session is gone. The join route and the
        in-process runner's participants both join through here.
        """
        credential = new_secret()
        record, created = self.state.join_participant(
            session_id,
            client_name,
            dataset.model_dump(),
            credential_hash=hash_token(credential),
            public_key=public_key,
        )
        if not created:
            return None
        self.log(session_id, f"client {client_name!r} joined ({dataset.train_rows} rows)")
        self.liveness.seen(record.id, session_id)
        self.notify_join()
        return record, credential

    def stop(self, timeout: float = 5.0) -> None:
        """Interrupt every workflow; their sessions stay active and resume on restart."""
        self.stopping.set()
        self.hub.fail_all("ended", "server stopping")
        self.notify_join()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.thread.join(timeout=timeout)

    def is_running(self, session_id: str) -> bool:
        with self._lock:
            worker = self._workers.get(session_id)
        return worker is not None and worker.thread.is_alive()

    def context_of(self, session_id: str) -> EngineContext | None:
        with self._lock:
            worker = self._workers.get(session_id)
        return worker.context if worker is not None else None

    def gate(self, session_id: str) -> ReplyGate:
        """The session's bound on received, unconsumed large replies."""
        with self._lock:
            gate = self._gates.get(session_id)
            if gate is None:
                gate = self._gates[session_id] = ReplyGate(REPLIES_IN_FLIGHT)
            return gate

    # ------------------------------------------------------------------- workers

    def _run(self, context: EngineContext) -> None:
        info = context.session
        resume = False
        try:
            resume = self._conclude(context)
        finally:
            context.writes.close()
            self.hub.fail_session(info.id, "ended", "session ended")
            with self._lock:
                self._workers.pop(info.id, None)
                self._gates.pop(info.id, None)
            if not resume:
                self.liveness.forget_session(info.id)
            self.wake_participants(info.id)
        if resume:
            self._restart(info.id)

    def _conclude(self, context: EngineContext) -> bool:
        """Run the workflow and end its session; True when the session is to be resumed
        in-process (a write failed, and the store takes writes again)."""
        info = context.session
        status, reason = SessionStatus.completed, None
        store_error: BaseException | None = None
        try:
            package = get_package(info.package_name)
            # An uploaded initial model becomes strategy.params.initial_parameters here, so
            # every workflow starts from it as from JSON ones (no package reads the artifact).
            model_raw = with_initial_model(
                self.artifacts, info.id, package, info.model_config, info.data_config
            )
            model_config, data_config = package.parse_configs(model_raw, info.data_config)
            package.workflow(context, model_config, data_config)
        except SessionCanceled:
            logger.info("session %s canceled", info.id)
            return False
        except Interrupted:
            logger.info("session %s interrupted by shutdown; it resumes on restart", info.id)
            return False
        except FedsiloError as exc:
            status, reason = SessionStatus.failed, str(exc)
        except Exception as exc:
            if is_store_error(exc):  # a read or write of the workflow's own (joins, status)
                store_error = exc
            else:
                logger.exception("session %s workflow crashed", info.id)
                status, reason = SessionStatus.failed, f"{type(exc).__name__}: {exc}"
        if store_error is None and context.writes.error is None:
            try:
                context.flush()  # the session ends once everything it did is written
            except Exception as exc:
                if status == SessionStatus.completed:
                    status, reason = SessionStatus.failed, f"state not written: {exc}"
        # A write of the session failed: the store's fault, not the workflow's. The session
        # stays active (resumed from its checkpoint) rather than failed for a full disk.
        store_error = store_error or context.writes.error
        if store_error is not None:
            resumes = self._store_resumes.get(info.id, 0)
            if resumes >= STORE_RESUMES:
                status = SessionStatus.failed
                reason = (
                    f"state not written {resumes + 1} times: {describe_store_error(store_error)}"
                )
            else:
                self._store_resumes[info.id] = resumes + 1
                return self._await_store(info.id, store_error)
        self._end(info.id, status, reason)
        return False

    def _await_store(self, session_id: str, error: BaseException) -> bool:
        """Retry a write to the session's log until the store takes it (True: resume the
        session) or ``store_retry_timeout`` passes (the server gives up) or it stops."""
        reason = self.health.failed(error)
        logger.error("session %s: %s; retrying", session_id, reason)
        note = f"{reason}; resumed from the last checkpoint once the store took writes again"
        backoff = Backoff()
        while not self._expired(reason):
            if self.stopping.wait(backoff.next()):
                return False
            try:
                self.state.append_log(session_id, note)
            except Exception as exc:
                if not is_store_error(exc):
                    raise
                reason = self.health.failed(exc)
                continue
            self.health.recovered()
            return True
        return False

    def _expired(self, reason: str) -> bool:
        """Whether the store refused writes too long; then the server gives up (exits)."""
        if not self.health.expired():
            return False
        if not self.health.fatal.is_set():
            logger.critical(
                "%s for %g s; giving up: the server exits with a non-zero status for a "
                "supervisor to restart it, and its active sessions resume then",
                reason,
                self.health.retry_timeout,
            )
            self.health.give_up(reason)
            self.drain()
        return True

    def drain(self) -> None:
        """End every long-poll now (503, the client retries): the server is about to exit."""
        self.draining.set()
        self.hub.wake_all()

    def _restart(self, session_id: str) -> None:
        """Start a session's workflow again from its checkpoint, as after a restart."""
        try:
            self.state.mark_stale_tasks([session_id], "the state store refused a write")
            self.start_session(session_id)
        except Exception as exc:
            if not is_store_error(exc):
                raise
            self.health.failed(exc)
            logger.error("session %s could not be resumed: %s", session_id, exc)

    def _end(self, session_id: str, status: SessionStatus, reason: str | None) -> None:
        """Record the session's end, retried with backoff while the store refuses it."""
        backoff = Backoff()
        while True:
            try:
                # Only an active session ends here: a cancel that won the race keeps its status.
                self.state.set_session_status(
                    session_id, status, expected=ACTIVE_STATUSES, failure_reason=reason
                )
                if reason:
                    self.log(session_id, f"session {status}: {reason}")
            except Exception as exc:
                if not is_store_error(exc):
                    raise
                why = self.health.failed(exc)
                logger.error("session %s could not be marked %s: %s", session_id, status, why)
                if self._expired(why) or self.stopping.wait(backoff.next()):
                    return
                continue
            self.health.recovered()
            return

    # --------------------------------------------------------------------- replies

    def reply_not_awaited(self, session_id: str, participant_id: str, task_id: str) -> None:
        """Raise the rejection of a reply to a task that is not in flight (404 or 409).

        A task with no record at all is 409, not awaited, like a stale one: the session's
        writer inserts task records behind the round, so a server killed just after sending
        a task may have no record of it, and its client must drop the reply and poll on (the
        resumed session sends the round again), not stop on a 404.
        """
        task = self.state.get_task(task_id)
        if task is None:
            raise ReplyRejected(
                409,
                f"Task {task_id} is not awaited: this server has no record of it (unknown, or "
                "sent just before the server stopped).",
            )
        if task.session_id != session_id or task.participant_id != participant_id:
            raise ReplyRejected(404, f"Task {task_id} not found for this participant.")
        raise ReplyRejected(409, f"Task {task_id} is no longer awaited (it is {task.status}).")

    def accept_reply(
        self,
        session_id: str,
        participant_id: str,
        task_id: str,
        body: bytes | bytearray | memoryview,
        slot: Slot,
    ) -> Accepted:
        """Hand a client's reply frame to the waiting workflow; touches no stored state.

        The reply's arrays are read-only views over ``body`` (no copy); ``slot`` is kept
        until the workflow is done with the reply. A failure outcome (the client reported an
        error) is returned for the caller to record.

        Raises
        ------
        ReplyRejected
            409 for a task no longer awaited (the caller looks up which, see
            :meth:`reply_not_awaited`), 422 for a malformed frame (the task then fails; the
            exception carries the failure to record).
        """
        pending = self.hub.find(task_id, session_id, participant_id)
        if pending is None or self.hub.take(task_id) is None:
            slot.release()
            self.metrics.reply_rejected("not_awaited")
            raise ReplyRejected(409, f"Task {task_id} is no longer awaited.")
        participant = pending.task.to
        if pending.delivered_at is not None:
            latency = (utcnow() - pending.delivered_at).total_seconds()
            self.metrics.task_replied(pending.task.kind, latency)
        try:
            arrays, header = decode_views(body)
            envelope = parse_header(ReplyEnvelope, header, "reply header")
        except WireError as exc:
            slot.release()
            self.metrics.reply_rejected("frame")
            failure = pending.failure(
                "malformed", f"malformed reply from client {participant.client_name!r}: {exc}"
            )
            pending.future.set_result(failure)
            raise ReplyRejected(422, f"Malformed reply: {exc}", failure) from exc
        outcome: Outcome
        if envelope.status == "error":
            slot.release()
            outcome = pending.failure(
                "error", f"client reported an error: {envelope.error or 'no message'}"
            )
        else:
            pending.replied_at = utcnow()
            plain, sealed = split_sealed(arrays, participant.id)
            outcome = Reply(
                participant,
                envelope.meta,
                plain,
                sealed=sealed,
                kind=pending.task.kind,
                round=pending.task.round,
            )
            context = self.context_of(session_id)
            if context is None:
                slot.release()
            else:
                context.accepted(pending, outcome, slot)
        pending.future.set_result(outcome)
        return Accepted(outcome, envelope.meta)

    def log(self, session_id: str, message: str) -> None:
        self.state.append_log(session_id, message)

    def record_task_failure(
        self,
        session_id: str,
        task_id: str,
        reason: str,
        reply_meta: dict[str, Any] | None = None,
    ) -> None:
        """Record a failed task through its session's writer (after the task's insert)."""
        context = self.context_of(session_id)
        if context is not None:
            context.record_failure(task_id, reason, reply_meta)
            return
        self.state.fail_task(task_id, reason, reply_meta=reply_meta)
