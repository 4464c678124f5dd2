"""Run a package's workflow against local executors in one process, through the real engine.

:class:`InProcessContext` *is* the server's :class:`~fedsilo.server.engine.context.EngineContext`
over a :class:`~fedsilo.server.state.memory.MemoryStore`: the same task hub, reply screening
(:mod:`fedsilo.federation.expect`), session writer, checkpoints and model save as a server.
Its executors are the session's participants, joined through the engine's join step with their
own X25519 keys and credentials (:mod:`fedsilo.server.engine.local`); each task is taken from
the hub and its reply posted through the engine's accept path -- no HTTP, no sockets. It is
how package tests and benchmarks check a workflow's mathematics against a pooled reference.

Each task reaches its executor through the client's own mod chain
(:func:`fedsilo.client.mods.client_mods`), release-once outermost, over a reply store per
participant in the context's state directory (a temporary one unless given). So a workflow
that asks the same question twice gets the identical reply bytes and the executor runs once,
as on a real client; a second context given the same ``state_dir`` and fresh executors is a
client restarted with its disk.

Participants are driven synchronously: ``send`` returns once every addressed executor has
answered, so the reply gate's bound on unconsumed large replies does not apply here.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.client.keys import KeyPair
from fedsilo.client.mods import Handler, Mod, TaskReply, TaskRequest, chain, client_mods
from fedsilo.client.replies import ReplyStore
from fedsilo.federation import (
    Checkpoint,
    Executor,
    Participant,
    SessionInfo,
    Task,
    TaskGroup,
)
from fedsilo.runners.artifacts import MemoryArtifacts
from fedsilo.runners.peer import LocalPeer
from fedsilo.runners.store import participant_id
from fedsilo.server.engine.context import EngineContext, checkpoint_key, model_key
from fedsilo.server.engine.frames import encode_into
from fedsilo.server.engine.hub import PendingTask
from fedsilo.server.engine.local import LocalEngine, LocalParticipant
from fedsilo.server.engine.persister import Persister
from fedsilo.server.engine.runner import ReplyRejected
from fedsilo.server.settings import Settings
from fedsilo.server.state import SessionRecord, utcnow
from fedsilo.server.state.memory import MemoryStore
from fedsilo.wire import DatasetSummary, SessionStatus, TaskPayload, decode_frame, parse_header

__all__ = ["InProcessContext", "SimulationStopped"]

# Fixed, so that a context given the state directory of an earlier one finds its replies.
_SESSION_ID = "0123456789"


class SimulationStopped(Exception):
    """Raised right after the checkpoint of ``stop_after``: the server dying mid-session."""


class InProcessContext(EngineContext):
    """The engine's SessionContext, with its clients as executors in this process.

    Parameters
    ----------
    executors : mapping of client name to Executor
        The participants, in join order.
    num_rounds : int
    package_name : str, optional
    checkpoint : Checkpoint, optional
        The checkpoint of an earlier run, which :meth:`restore` returns (a resumed session).
    stop_after : int, optional
        Raise :class:`SimulationStopped` after checkpointing this round.
    capture_failures : bool, default False
        Turn an executor's exception into a :class:`~fedsilo.federation.Failure` (as a real
        client reports it) instead of raising it in the workflow.
    model_config, data_config : mapping, optional
        The raw configs :attr:`session` reports (workflows get the parsed ones).
    datasets : mapping of client name to DatasetSummary, optional
        What each participant declares on joining (default: no rows, no columns). Counts a
        task's ``expect`` bounds by declared rows are bounded only for the clients given here.
    state_dir : Path, optional
        The clients' state directory (their released replies). Default: a temporary one of
        this context, removed with it.
    mods : sequence of Mod, optional
        Further client mods inside release-once, outermost first (as the client runtime's).
    models : mapping of session id to (arrays, header), optional
        Other sessions' saved models, for :meth:`load_model` (a VFL session's PRL alignment).

    Attributes
    ----------
    rounds, checkpoints, last_checkpoint, saved, logs
        What the session recorded, read from its store (see each property).
    asked : list of (kind, round, client names)
        Every send, by its first task.
    bytes, tasks : dict of kind to int
        Bytes on the wire (task + reply frames) and tasks answered, per task kind.
    replayed : list of (client name, kind, round)
        Every task answered by a replayed reply.
    """

    def __init__(
        self,
        executors: Mapping[str, Executor],
        num_rounds: int,
        *,
        package_name: str = "",
        checkpoint: Checkpoint | None = None,
        stop_after: int | None = None,
        capture_failures: bool = False,
        model_config: Mapping[str, Any] | None = None,
        data_config: Mapping[str, Any] | None = None,
        datasets: Mapping[str, DatasetSummary] | None = None,
        state_dir: Path | None = None,
        mods: Sequence[Mod] = (),
        models: Mapping[str, tuple[dict[str, np.ndarray], dict[str, Any]]] | None = None,
    ) -> None:
        self.executors = executors
        self.stop_after = stop_after
        #: an executor's exception becomes a Failure (as on a real client) instead of raising
        self.capture_failures = capture_failures
        self.asked: list[tuple[str, int, list[str]]] = []
        self.bytes: dict[str, int] = defaultdict(int)
        self.tasks: dict[str, int] = defaultdict(int)
        self.replayed: list[tuple[str, str, int]] = []
        info = SessionInfo(
            _SESSION_ID,
            "in-process",
            package_name,
            len(executors),
            num_rounds,
            dict(model_config or {}),
            dict(data_config or {}),
        )
        self.store = MemoryStore(participant_ids=participant_id)
        self.artifacts = MemoryArtifacts()
        engine = LocalEngine(self.store, self.artifacts, Settings())
        self.store.create_session(_session_record(info))
        if checkpoint is not None:
            header = {"round": checkpoint.round, "meta": dict(checkpoint.meta)}
            self.artifacts.preload(
                checkpoint_key(_SESSION_ID), encode_into(checkpoint.arrays, header)
            )
        for session_id, (arrays, model_header) in (models or {}).items():
            self.artifacts.preload(model_key(session_id), encode_into(arrays, model_header))
        super().__init__(engine, info)
        engine.attach(self)
        # Only a summary given here bounds a participant's counts (fedsilo.federation.expect):
        # the empty default is no declaration, unlike a client that declared no rows.
        self._declarations: dict[str, DatasetSummary] = dict(datasets or {})
        empty = DatasetSummary(train_rows=0, test_rows=0, columns=[])
        # Each participant's join key pair, as a real client makes one: peers seal to it
        # (secure aggregation's shares), the workflow sees only the public half.
        self.keys = {name: KeyPair.generate() for name in executors}
        self._clients = {
            name: LocalParticipant(
                engine,
                _SESSION_ID,
                name,
                self._declarations.get(name, empty),
                self.keys[name].public_text,
            )
            for name in executors
        }
        self._by_id = {client.id: client for client in self._clients.values()}
        #: session log lines of the engine's own (joins, "running", "resuming"), which
        #: :attr:`logs` leaves out: it shows what the workflow logged
        self._engine_lines: Counter[str] = Counter(
            m.message for m in self.store.list_logs(_SESSION_ID)
        )
        self._engine_speaks = False
        owned = state_dir is None
        self.state_dir = (
            Path(tempfile.mkdtemp(prefix="fedsilo-inprocess-")) if state_dir is None else state_dir
        )
        stores = {name: ReplyStore(self.state_dir, _SESSION_ID, name) for name in executors}
        joined = self.joined
        self._handlers: dict[str, Handler] = {
            name: chain(
                client_mods(
                    stores[name],
                    mods,
                    self._on_replay(name),
                    peer=LocalPeer(_SESSION_ID, self._clients[name].id, self.keys[name], joined),
                ),
                _executor_handler(executor),
            )
            for name, executor in executors.items()
        }
        # The stores keep descriptors open and the engine runs two threads; release them
        # with the context, without a close() every test would have to call.
        weakref.finalize(
            self,
            _release,
            list(stores.values()),
            self.state_dir if owned else None,
            engine,
            self.writes,
        )

    def _on_replay(self, client_name: str) -> Callable[[TaskRequest], None]:
        def note(task: TaskRequest) -> None:
            self.replayed.append((client_name, task.kind, task.round))

        return note

    # ----------------------------------------------------------- the workflow's calls

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
        if n > len(self._clients):
            raise ValueError(f"the workflow waits for {n} clients; {len(self._clients)} exist")
        with self._engine_speaking():
            return super().wait_for_clients(n, timeout)

    def declared(self, participant: Participant) -> DatasetSummary | None:
        """Only a summary given to the context bounds a participant's counts."""
        return self._declarations.get(participant.client_name)

    def send(self, tasks: Sequence[Task], *, timeout: float | None = None) -> TaskGroup:
        """Send as the engine does, then have each addressed executor take its task from the
        hub and post its reply, in the order of ``tasks``."""
        tasks = list(tasks)
        if tasks:
            self.asked.append((tasks[0].kind, tasks[0].round, [t.to.client_name for t in tasks]))
        group = super().send(tasks, timeout=timeout)
        for task in tasks:
            client = self._by_id.get(task.to.id)
            pending = client.next_task() if client is not None else None
            if client is not None and pending is not None:
                self._answer(client, pending)
        return group

    def _answer(self, client: LocalParticipant, pending: PendingTask) -> None:
        """One participant's turn: decode the task as a client does, run it through the mod
        chain and post the reply frame."""
        name = pending.task.to.client_name
        arrays, header = decode_frame(bytes(pending.frame))
        envelope = parse_header(TaskPayload, header, "task")
        meta = dict(envelope.meta)
        if envelope.sealed_from is not None:
            meta["sealed_from"] = envelope.sealed_from
        request = TaskRequest(
            id=pending.id, kind=envelope.kind, round=envelope.round, meta=meta, arrays=arrays
        )
        try:
            # Encoding is inside the guard, as on a real client: a reply meta that is not
            # JSON-able is the package's failure.
            frame = self._handlers[name](request).frame()
        except Exception as exc:
            # Withdrawn as failed by the participant, with the executor's message as reason.
            self.expire(pending.id, "error", str(exc) or type(exc).__name__)
            if not self.capture_failures:
                raise
            return
        self.bytes[request.kind] += len(pending.frame) + len(frame)
        self.tasks[request.kind] += 1
        # A malformed frame is the task's failure (recorded), as the route's 422.
        with contextlib.suppress(ReplyRejected):
            client.reply(pending.id, frame)

    def log(self, message: str) -> None:
        if self._engine_speaks:
            self._engine_lines[message] += 1
        super().log(message)

    def restore(self) -> Checkpoint | None:
        with self._engine_speaking():
            return super().restore()

    def checkpoint(self, round: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        super().checkpoint(round, arrays, meta)
        if round == self.stop_after:
            self.flush()  # what a server wrote before it died
            raise SimulationStopped(f"stopped after the checkpoint of round {round}")

    @contextmanager
    def _engine_speaking(self) -> Iterator[None]:
        self._engine_speaks = True
        try:
            yield
        finally:
            self._engine_speaks = False

    # ------------------------------------------------------- what the session recorded

    @property
    def joined(self) -> list[Participant]:
        """The participants, in join order, as the workflow sees them."""
        return self.participants()

    @property
    def rounds(self) -> dict[int, tuple[dict[str, float], dict[str, dict[str, float]]]]:
        """Round -> (federated metrics, per-client metrics), as stored."""
        self.flush()
        return {r.round: (r.federated, r.per_client) for r in self.store.list_rounds(_SESSION_ID)}

    @property
    def checkpoints(self) -> dict[int, Checkpoint]:
        """Every checkpoint this context wrote, by round (the last one of a round wins)."""
        self.flush()
        found = (_checkpoint(f) for f in self.artifacts.versions(checkpoint_key(_SESSION_ID)))
        return {c.round: c for c in found}

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        """The checkpoint a resumed session would start from (the given one, if none since)."""
        self.flush()
        data = self.artifacts.read_bytes(checkpoint_key(_SESSION_ID))
        return None if data is None else _checkpoint(data)

    @property
    def saved(self) -> tuple[dict[str, np.ndarray], dict[str, Any], int] | None:
        """(arrays, meta, round) of the saved model, or None."""
        self.flush()
        record = self.store.get_model(_SESSION_ID)
        data = self.artifacts.read_bytes(model_key(_SESSION_ID))
        if record is None or data is None:
            return None
        arrays, _ = decode_frame(data)
        return arrays, dict(record.meta), record.round

    @property
    def logs(self) -> list[str]:
        """The session log's lines of the workflow's own (and of reply screening)."""
        self.flush()
        skip = Counter(self._engine_lines)
        lines = []
        for record in self.store.list_logs(_SESSION_ID):
            if skip[record.message] > 0:
                skip[record.message] -= 1
            else:
                lines.append(record.message)
        return lines


def _session_record(info: SessionInfo) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        id=info.id,
        name=info.name,
        description="",
        kind="hfl",
        package_name=info.package_name,
        min_num_clients=info.min_num_clients,
        num_rounds=info.num_rounds,
        model_config=dict(info.model_config),
        data_config=dict(info.data_config),
        status=SessionStatus.pending,
        created_at=now,
        updated_at=now,
    )


def _checkpoint(frame: bytes) -> Checkpoint:
    arrays, header = decode_frame(frame)
    return Checkpoint(round=int(header["round"]), arrays=arrays, meta=header.get("meta", {}))


def _executor_handler(executor: Executor) -> Handler:
    """The innermost handler: the executor, its exceptions raised to :meth:`send` (which
    raises them in the workflow, or turns them into failures with ``capture_failures``)."""

    def handle(task: TaskRequest) -> TaskReply:
        meta, arrays = executor.handle(task.kind, dict(task.meta), task.arrays)
        return TaskReply(status="ok", meta=meta, arrays=arrays)

    return handle


def _release(
    stores: list[ReplyStore], temporary: Path | None, engine: LocalEngine, writes: Persister
) -> None:
    engine.stopping.set()  # ends the liveness sweep's thread
    # Collected on the writer's own thread, it cannot join itself; it stops after this job.
    with contextlib.suppress(RuntimeError):
        writes.close()
    for store in stores:
        store.close()
    if temporary is not None:
        shutil.rmtree(temporary, ignore_errors=True)
