"""Run a package's workflow against local executors in one process, without a server.

:class:`InProcessContext` implements :class:`fedsilo.federation.SessionContext`: each task
and reply goes through the wire codec (so what a package sends must survive the trip), and
rounds, checkpoints, the saved model and logs are kept on the object for inspection. It is
how package tests and benchmarks check a workflow's mathematics against a pooled reference
without HTTP; the engine (``fedsilo.server.engine``) is the same contract over the network.

Each task reaches its executor through the client's own mod chain
(:func:`fedsilo.client.mods.client_mods`), release-once outermost, over a reply store per
participant in the context's state directory (a temporary one unless given). So a workflow
that asks the same question twice gets the identical reply bytes and the executor runs once,
as on a real client; a second context given the same ``state_dir`` and fresh executors is a
client restarted with its disk.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.client.keys import KeyPair, open_sealed, seal
from fedsilo.client.mods import Handler, Mod, TaskReply, TaskRequest, chain, client_mods
from fedsilo.client.replies import ReplyStore
from fedsilo.federation import (
    AskMixin,
    Checkpoint,
    Executor,
    Failure,
    Outcome,
    Participant,
    Reply,
    Sealed,
    SessionInfo,
    Task,
    TaskGroup,
    sealed_arrays,
    split_sealed,
)
from fedsilo.federation.expect import rejection_line, screen
from fedsilo.wire import (
    DatasetSummary,
    ReplyEnvelope,
    TaskPayload,
    decode_frame,
    encode_frame,
    parse_header,
)

__all__ = ["InProcessContext", "SimulationStopped"]

_SESSION_ID = "0123456789"


class SimulationStopped(Exception):
    """Raised right after the checkpoint of ``stop_after``: the server dying mid-session."""


class InProcessContext(AskMixin):
    """A SessionContext whose clients are executors in this process.

    Parameters
    ----------
    executors : mapping of client name to Executor
        The participants, in join order.
    num_rounds : int
    package_name : str, optional
    checkpoint : Checkpoint, optional
        What :meth:`restore` returns first (a resumed session).
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
        self.models = dict(models or {})
        self.session = SessionInfo(
            _SESSION_ID,
            "in-process",
            package_name,
            len(executors),
            num_rounds,
            dict(model_config or {}),
            dict(data_config or {}),
        )
        empty = DatasetSummary(train_rows=0, test_rows=0, columns=[])
        # Each participant's join key pair, as a real client makes one: peers seal to it
        # (secure aggregation's shares), the workflow sees only the public half.
        self.keys = {name: KeyPair.generate() for name in executors}
        self.joined = [
            Participant(
                id=f"p{i}",
                client_name=name,
                dataset=(datasets or {}).get(name, empty),
                public_key=self.keys[name].public_bytes,
            )
            for i, name in enumerate(executors)
        ]
        # Only a summary given here bounds a participant's counts (fedsilo.federation.expect):
        # the empty default is no declaration, unlike a client that declared no rows.
        self._declared: dict[str, DatasetSummary] = dict(datasets or {})
        self.stop_after = stop_after
        #: an executor's exception becomes a Failure (as on a real client) instead of raising
        self.capture_failures = capture_failures
        self.last_checkpoint = checkpoint
        self.checkpoints: dict[int, Checkpoint] = {}
        self.rounds: dict[int, tuple[dict[str, float], dict[str, dict[str, float]]]] = {}
        self.saved: tuple[dict[str, np.ndarray], dict[str, Any], int] | None = None
        #: (kind, round, client names) of every send (by its first task)
        self.asked: list[tuple[str, int, list[str]]] = []
        #: bytes on the wire (task + reply frames) and task count per task kind
        self.bytes: dict[str, int] = defaultdict(int)
        self.tasks: dict[str, int] = defaultdict(int)
        self.logs: list[str] = []
        #: (client name, kind, round) of every task answered by a replayed reply
        self.replayed: list[tuple[str, str, int]] = []
        owned = state_dir is None
        self.state_dir = (
            Path(tempfile.mkdtemp(prefix="fedsilo-inprocess-")) if state_dir is None else state_dir
        )
        stores = {name: ReplyStore(self.state_dir, _SESSION_ID, name) for name in executors}
        ids = {p.client_name: p.id for p in self.joined}
        self._handlers: dict[str, Handler] = {
            name: chain(
                client_mods(
                    stores[name],
                    mods,
                    self._on_replay(name),
                    peer=_Peer(ids[name], self.keys[name], self.joined),
                ),
                _executor_handler(executor),
            )
            for name, executor in executors.items()
        }
        self._task_ids = 0
        # The stores keep descriptors open; close them (and drop a temporary folder) with
        # the context, without a close() every test would have to call.
        weakref.finalize(self, _release, list(stores.values()), self.state_dir if owned else None)

    def _on_replay(self, client_name: str) -> Callable[[TaskRequest], None]:
        def note(task: TaskRequest) -> None:
            self.replayed.append((client_name, task.kind, task.round))

        return note

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
        if n > len(self.joined):
            raise ValueError(f"the workflow waits for {n} clients; {len(self.joined)} exist")
        return list(self.joined)

    def participants(self) -> list[Participant]:
        return list(self.joined)

    def send(self, tasks: Sequence[Task], *, timeout: float | None = None) -> TaskGroup:
        """Run each task's executor at once, through the wire codec both ways."""
        futures: list[Future[Outcome]] = []
        encoded: dict[int, bytes] = {}
        if tasks:
            self.asked.append((tasks[0].kind, tasks[0].round, [t.to.client_name for t in tasks]))
        for task in tasks:
            future: Future[Outcome] = Future()
            futures.append(future)
            arrays = sealed_arrays(task.sealed) if task.sealed is not None else task.arrays
            key = id(task.arrays) if task.sealed is None and task.arrays is not None else id(task)
            payload = TaskPayload(
                kind=task.kind,
                round=task.round,
                meta=dict(task.meta),
                sealed_from=task.sealed.sender if task.sealed is not None else None,
            )
            frame = encoded.get(key) if task.sealed is None else None
            if frame is None:
                frame = encode_frame(dict(arrays or {}), payload)
                if task.sealed is None:
                    encoded[key] = frame
            sent, header = decode_frame(frame)
            envelope = parse_header(TaskPayload, header, "task")
            meta = dict(envelope.meta)
            if envelope.sealed_from is not None:
                meta["sealed_from"] = envelope.sealed_from
            self._task_ids += 1
            request = TaskRequest(
                id=f"t{self._task_ids}",
                kind=envelope.kind,
                round=envelope.round,
                meta=meta,
                arrays=sent,
            )
            try:
                # Encoding is inside the guard, as on a real client: a reply meta that is not
                # JSON-able is the package's failure.
                reply_frame = self._handlers[task.to.client_name](request).frame()
            except Exception as exc:
                if not self.capture_failures:
                    raise
                future.set_result(
                    Failure(task.to, task.kind, task.round, "error", str(exc) or type(exc).__name__)
                )
                continue
            self.bytes[task.kind] += len(frame) + len(reply_frame)
            self.tasks[task.kind] += 1
            got_arrays, got = decode_frame(reply_frame)
            envelope_back = parse_header(ReplyEnvelope, got, "reply")
            if envelope_back.status == "error":
                # A mod's refusal (secure aggregation's checks, ...): reported, as a real
                # client reports it, whatever capture_failures says about exceptions.
                reason = f"client reported an error: {envelope_back.error or 'no message'}"
                future.set_result(Failure(task.to, task.kind, task.round, "error", reason))
                continue
            plain, sealed = split_sealed(got_arrays, task.to.id)
            reply = Reply(
                task.to,
                envelope_back.meta,
                plain,
                sealed=sealed,
                kind=task.kind,
                round=task.round,
            )
            # The engine's check, at the same point of the reply's way: before the workflow.
            outcome = screen(task, reply, self._declared.get(task.to.client_name))
            del reply
            if isinstance(outcome, Failure):
                self.log(rejection_line(outcome))
            future.set_result(outcome)
        return TaskGroup(tasks, futures, expire=lambda *_: False)

    def record_round(
        self,
        server_round: int,
        federated: Mapping[str, float],
        per_client: Mapping[str, Mapping[str, float]],
    ) -> None:
        json.dumps([federated, per_client], allow_nan=False)  # the engine stores JSON
        self.rounds[server_round] = (dict(federated), {k: dict(v) for k, v in per_client.items()})

    def checkpoint(
        self, server_round: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        stored, header = decode_frame(encode_frame(dict(arrays), {"meta": dict(meta)}))
        self.last_checkpoint = Checkpoint(round=server_round, arrays=stored, meta=header["meta"])
        self.checkpoints[server_round] = self.last_checkpoint
        if server_round == self.stop_after:
            raise SimulationStopped(f"stopped after the checkpoint of round {server_round}")

    def restore(self) -> Checkpoint | None:
        return self.last_checkpoint

    def save_model(self, arrays: Mapping[str, Any], meta: Mapping[str, Any], round: int) -> None:
        json.dumps(dict(meta), allow_nan=False)
        self.saved = ({k: np.asarray(v) for k, v in arrays.items()}, dict(meta), round)

    def load_model(self, session_id: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        return self.models.get(session_id)

    def log(self, message: str) -> None:
        self.logs.append(message)


class _Peer:
    """One in-process participant's identity and sealing (what a client's ``ClientContext``
    lends its mods), with the real :mod:`fedsilo.client.keys` crypto."""

    def __init__(self, participant_id: str, keys: KeyPair, joined: Sequence[Participant]):
        self.session_id = _SESSION_ID
        self.participant_id = participant_id
        self._keys = keys
        self._public = {p.id: p.public_key for p in joined}

    def seal(self, recipient_id: str, plaintext: bytes) -> Sealed:
        ciphertext = seal(
            self._keys,
            self._public[recipient_id],
            plaintext,
            session_id=self.session_id,
            sender_id=self.participant_id,
            recipient_id=recipient_id,
        )
        return Sealed(sender=self.participant_id, ciphertext=ciphertext)

    def open(self, sealed: Sealed) -> bytes:
        return open_sealed(
            self._keys,
            self._public[sealed.sender],
            sealed.ciphertext,
            session_id=self.session_id,
            sender_id=sealed.sender,
            recipient_id=self.participant_id,
        )


def _executor_handler(executor: Executor) -> Handler:
    """The innermost handler: the executor, its exceptions raised to :meth:`send` (which
    raises them in the workflow, or turns them into failures with ``capture_failures``)."""

    def handle(task: TaskRequest) -> TaskReply:
        meta, arrays = executor.handle(task.kind, dict(task.meta), task.arrays)
        return TaskReply(status="ok", meta=meta, arrays=arrays)

    return handle


def _release(stores: list[ReplyStore], temporary: Path | None) -> None:
    for store in stores:
        store.close()
    if temporary is not None:
        shutil.rmtree(temporary, ignore_errors=True)
