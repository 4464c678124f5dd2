"""Fixtures of the gbm tests: an in-process session whose tasks go through the wire codec.

``federate(model_config, data_config, frames, num_rounds, tests)`` runs the real gbm
workflow against one :class:`GBMExecutor` per frame and returns the exported model with the
context (rounds, checkpoints, bytes on the wire per task kind).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.dataset import LocalDataset
from fedsilo.packages.base import Checkpoint, Participant, Reply, SessionInfo
from fedsilo.packages.gbm import PACKAGE, GBMExecutor, GBMModel
from fedsilo.wire import (
    DatasetSummary,
    ReplyEnvelope,
    TaskEnvelope,
    decode_frame,
    encode_frame,
    parse_header,
)

_SUMMARY = DatasetSummary(train_rows=0, test_rows=0, columns=[])


class FakeContext:
    """An in-process SessionContext: tasks run on local executors through the wire codec."""

    def __init__(
        self,
        executors: Mapping[str, GBMExecutor],
        num_rounds: int,
        checkpoint: Checkpoint | None = None,
        crash_after: int | None = None,
    ) -> None:
        self.executors = executors
        self.session = SessionInfo("0123456789", "t", "gbm", len(executors), num_rounds, {}, {})
        self.participants = [
            Participant(id=f"p{i}", client_name=name, dataset=_SUMMARY)
            for i, name in enumerate(executors)
        ]
        self.rounds: dict[int, tuple[dict[str, float], dict[str, dict[str, float]]]] = {}
        self.last_checkpoint = checkpoint
        self.crash_after = crash_after
        self.saved: tuple[dict[str, np.ndarray], dict[str, Any], int] | None = None
        self.bytes: dict[str, int] = defaultdict(int)
        self.tasks: dict[str, int] = defaultdict(int)
        self.logs: list[str] = []

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
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
        if rnd == self.crash_after:
            raise Crash

    def restore(self) -> Checkpoint | None:
        return self.last_checkpoint

    def save_model(self, arrays: Mapping[str, Any], meta: Mapping[str, Any], rnd: int) -> None:
        json.dumps(dict(meta), allow_nan=False)
        self.saved = ({k: np.asarray(v) for k, v in arrays.items()}, dict(meta), rnd)

    def log(self, message: str) -> None:
        self.logs.append(message)


class Crash(Exception):
    """Stands in for the server dying right after a checkpoint."""


@dataclass
class Federated:
    model: GBMModel
    ctx: FakeContext


def federate(
    model_config: Mapping[str, Any],
    data_config: Mapping[str, Any],
    frames: Sequence[pd.DataFrame],
    *,
    num_rounds: int = 20,
    tests: Sequence[pd.DataFrame | None] | None = None,
    ctx: FakeContext | None = None,
) -> Federated:
    """Boost over one executor per frame with the real workflow (see the module docstring)."""
    package = PACKAGE
    mc, dc = package.parse_configs(model_config, data_config)
    if ctx is None:
        executors = {
            f"silo{i}": GBMExecutor(
                mc, dc, LocalDataset(frame, None if tests is None else tests[i], 256)
            )
            for i, frame in enumerate(frames)
        }
        ctx = FakeContext(executors, num_rounds)
    package.workflow(ctx, mc, dc)
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    return Federated(GBMModel(mc, dc, arrays, meta), ctx)


def gbm_config(task: str = "classification", **params: Any) -> dict[str, Any]:
    """A seed-shaped gbm model_config with ``params`` over small defaults."""
    merged = {
        "max_depth": 3,
        "learning_rate": 0.1,
        "random_state": 23,
        "max_bins": 255,
        "sketch_relative_accuracy": 0.001,
        "min_samples_leaf": 20,
        "l2_regularization": 0.0,
        **params,
    }
    return {
        "strategy": {"name": "HistGradientBoosting", "params": {}},
        "model": {"params": merged},
        "ml_task": {"type": task, "params": {}},
    }


@pytest.fixture
def gbm_run() -> Callable[..., Federated]:
    return federate


@pytest.fixture
def gbm_cfg() -> Callable[..., dict[str, Any]]:
    return gbm_config


@pytest.fixture
def gbm_context() -> type[FakeContext]:
    return FakeContext


@pytest.fixture
def gbm_crash() -> type[Crash]:
    return Crash
