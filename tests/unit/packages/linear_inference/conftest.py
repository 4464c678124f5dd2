"""Fixtures of the linear_inference tests: three unequal silos and an in-process session.

``draw_silos(task)`` draws 300 / 1,200 / 2,500 rows (non-IID: shifted predictors) with shared
predictors ``s0``, ``s1`` and chunked predictors ``c0`` ... ``c5`` (``c0`` and ``c1`` carry
signal, ``c5`` is 0/1/2 genotype-like); ``federate`` runs the real workflow against an
in-process context whose every task and reply goes through the wire codec, as the engine does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.dataset import LocalDataset
from fedsilo.packages.base import Checkpoint, Participant, Reply, SessionInfo
from fedsilo.packages.linear_inference import PACKAGE, LinearInferenceModel
from fedsilo.packages.linear_inference.client import LinearInferenceExecutor
from fedsilo.wire import (
    DatasetSummary,
    ReplyEnvelope,
    TaskEnvelope,
    decode_frame,
    encode_frame,
    parse_header,
)

SHARED = ["s0", "s1"]
CHUNKED = ["c0", "c1", "c2", "c3", "c4", "c5"]
SIZES = (300, 1200, 2500)
_SUMMARY = DatasetSummary(train_rows=0, test_rows=0, columns=[])


def draw_silos(task: str, seed: int = 0, sizes: Sequence[int] = SIZES) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for n, shift in zip(sizes, np.linspace(-0.4, 0.4, len(sizes)), strict=True):
        shared = rng.normal(shift, 1.0, size=(n, 2))
        chunked = rng.normal(-shift, 1.0, size=(n, 6))
        chunked[:, 5] = rng.binomial(2, 0.3, size=n)
        eta = 0.2 + shared @ [0.5, -0.3] + 0.4 * chunked[:, 0] - 0.2 * chunked[:, 1]
        if task == "logistic":
            y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta))).astype(float)
        else:
            y = eta + rng.normal(0.0, 1.0, n)
        frame = pd.DataFrame(np.column_stack([shared, chunked]), columns=SHARED + CHUNKED)
        frame["y"] = y
        frames.append(frame)
    return frames


class FakeContext:
    """An in-process SessionContext: tasks run on local executors through the wire codec."""

    def __init__(
        self,
        executors: Mapping[str, LinearInferenceExecutor],
        num_rounds: int,
        checkpoint: Checkpoint | None = None,
        crash_after: int | None = None,
    ) -> None:
        self.executors = executors
        self.last_checkpoint = checkpoint
        self.crash_after = crash_after
        self.session = SessionInfo(
            "0123456789", "t", "linear_inference", len(executors), num_rounds, {}, {}
        )
        self.participants = [
            Participant(id=f"p{i}", client_name=name, dataset=_SUMMARY)
            for i, name in enumerate(executors)
        ]
        self.rounds: dict[int, tuple[dict[str, float], dict[str, dict[str, float]]]] = {}
        self.saved: tuple[dict[str, np.ndarray], dict[str, Any], int] | None = None
        self.logs: list[str] = []

    def wait_for_clients(self, n: int, timeout: float | None = None) -> list[Participant]:
        return list(self.participants)

    def ask(
        self,
        participants: Sequence[Participant],
        kind: str,
        arrays: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> list[Reply]:
        task = TaskEnvelope(id="t", session_id=self.session.id, kind=kind, meta=dict(meta or {}))
        replies = []
        for participant in participants:
            sent, header = decode_frame(encode_frame(dict(arrays or {}), task))
            envelope = parse_header(TaskEnvelope, header, "task")
            reply_meta, reply_arrays = self.executors[participant.client_name].handle(
                envelope.kind, envelope.meta, sent
            )
            got, back = decode_frame(encode_frame(reply_arrays, ReplyEnvelope(meta=reply_meta)))
            replies.append(Reply(participant, parse_header(ReplyEnvelope, back, "reply").meta, got))
        return replies

    def record_round(self, rnd: int, federated: Any, per_client: Any) -> None:
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
    model: LinearInferenceModel
    ctx: FakeContext


def federate(
    model_config: Mapping[str, Any],
    data_config: Mapping[str, Any],
    frames: Sequence[pd.DataFrame],
    *,
    num_rounds: int = 30,
    tests: Sequence[pd.DataFrame] | None = None,
    crash_after: int | None = None,
    checkpoint: Checkpoint | None = None,
) -> Federated:
    """Fit over one executor per frame with the real workflow and export the model."""
    mc, dc = PACKAGE.parse_configs(model_config, data_config)
    executors = {
        f"silo{i}": LinearInferenceExecutor(
            mc, dc, LocalDataset(frame, None if tests is None else tests[i], 64)
        )
        for i, frame in enumerate(frames)
    }
    ctx = FakeContext(executors, num_rounds, checkpoint, crash_after)
    PACKAGE.workflow(ctx, mc, dc)
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    return Federated(LinearInferenceModel(mc, dc, arrays, meta), ctx)


@pytest.fixture
def silos() -> Callable[..., list[pd.DataFrame]]:
    return draw_silos


@pytest.fixture
def run_federated() -> Callable[..., Federated]:
    return federate


@pytest.fixture
def crash() -> type[Crash]:
    return Crash
