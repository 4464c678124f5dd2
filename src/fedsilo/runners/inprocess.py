"""Run a package's workflow against local executors in one process, without a server.

:class:`InProcessContext` implements :class:`fedsilo.federation.SessionContext`: each task
and reply goes through the wire codec (so what a package sends must survive the trip), and
rounds, checkpoints, the saved model and logs are kept on the object for inspection. It is
how package tests and benchmarks check a workflow's mathematics against a pooled reference
without HTTP; the engine (``fedsilo.server.engine``) is the same contract over the network.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedsilo.federation import Checkpoint, Executor, Participant, Reply, SessionInfo
from fedsilo.wire import (
    DatasetSummary,
    ReplyEnvelope,
    TaskEnvelope,
    decode_frame,
    encode_frame,
    parse_header,
)

__all__ = ["InProcessContext", "SimulationStopped"]

_SESSION_ID = "0123456789"


class SimulationStopped(Exception):
    """Raised right after the checkpoint of ``stop_after``: the server dying mid-session."""


class InProcessContext:
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
    """

    def __init__(
        self,
        executors: Mapping[str, Executor],
        num_rounds: int,
        *,
        package_name: str = "",
        checkpoint: Checkpoint | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.executors = executors
        self.session = SessionInfo(
            _SESSION_ID, "in-process", package_name, len(executors), num_rounds, {}, {}
        )
        empty = DatasetSummary(train_rows=0, test_rows=0, columns=[])
        self.participants = [
            Participant(id=f"p{i}", client_name=name, dataset=empty)
            for i, name in enumerate(executors)
        ]
        self.stop_after = stop_after
        self.last_checkpoint = checkpoint
        self.checkpoints: dict[int, Checkpoint] = {}
        self.rounds: dict[int, tuple[dict[str, float], dict[str, dict[str, float]]]] = {}
        self.saved: tuple[dict[str, np.ndarray], dict[str, Any], int] | None = None
        #: (kind, round, client names) of every ask
        self.asked: list[tuple[str, int, list[str]]] = []
        #: bytes on the wire (task + reply frames) and task count per task kind
        self.bytes: dict[str, int] = defaultdict(int)
        self.tasks: dict[str, int] = defaultdict(int)
        self.logs: list[str] = []

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
        if n > len(self.participants):
            raise ValueError(f"the workflow waits for {n} clients; {len(self.participants)} exist")
        return list(self.participants)

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
        self.asked.append((kind, round, [p.client_name for p in participants]))
        task = TaskEnvelope(
            id="t", session_id=self.session.id, kind=kind, round=round, meta=dict(meta or {})
        )
        replies = []
        for participant in participants:
            frame = encode_frame(dict(arrays or {}), task)
            sent, header = decode_frame(frame)
            envelope = parse_header(TaskEnvelope, header, "task")
            reply_meta, reply_arrays = self.executors[participant.client_name].handle(
                envelope.kind, envelope.meta, sent
            )
            reply_frame = encode_frame(reply_arrays, ReplyEnvelope(meta=reply_meta))
            self.bytes[kind] += len(frame) + len(reply_frame)
            self.tasks[kind] += 1
            got_arrays, got = decode_frame(reply_frame)
            replies.append(
                Reply(participant, parse_header(ReplyEnvelope, got, "reply").meta, got_arrays)
            )
        return replies

    def record_round(
        self,
        rnd: int,
        federated: Mapping[str, float],
        per_client: Mapping[str, Mapping[str, float]],
    ) -> None:
        json.dumps([federated, per_client], allow_nan=False)  # the engine stores JSON
        self.rounds[rnd] = (dict(federated), {k: dict(v) for k, v in per_client.items()})

    def checkpoint(self, rnd: int, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        stored, header = decode_frame(encode_frame(dict(arrays), {"meta": dict(meta)}))
        self.last_checkpoint = Checkpoint(round=rnd, arrays=stored, meta=header["meta"])
        self.checkpoints[rnd] = self.last_checkpoint
        if rnd == self.stop_after:
            raise SimulationStopped(f"stopped after the checkpoint of round {rnd}")

    def restore(self) -> Checkpoint | None:
        return self.last_checkpoint

    def save_model(self, arrays: Mapping[str, Any], meta: Mapping[str, Any], rnd: int) -> None:
        json.dumps(dict(meta), allow_nan=False)
        self.saved = ({k: np.asarray(v) for k, v in arrays.items()}, dict(meta), rnd)

    def log(self, message: str) -> None:
        self.logs.append(message)
