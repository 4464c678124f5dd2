"""Fixtures of the linear_inference tests: three unequal silos and an in-process session.

``draw_silos(task)`` draws 300 / 1,200 / 2,500 rows (non-IID: shifted predictors) with shared
predictors ``s0``, ``s1`` and chunked predictors ``c0`` ... ``c5`` (``c0`` and ``c1`` carry
signal, ``c5`` is 0/1/2 genotype-like); ``federate`` runs the real workflow against an
in-process context whose every task and reply goes through the wire codec, as the engine does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.dataset import LocalDataset
from fedsilo.federation import Checkpoint
from fedsilo.packages.linear_inference import PACKAGE, LinearInferenceModel
from fedsilo.packages.linear_inference.client import LinearInferenceExecutor
from fedsilo.runners.inprocess import InProcessContext, SimulationStopped
from fedsilo.wire import (
    DatasetSummary,
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


@dataclass
class Federated:
    model: LinearInferenceModel
    ctx: InProcessContext


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
    ctx = InProcessContext(executors, num_rounds, checkpoint=checkpoint, stop_after=crash_after)
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
def crash() -> type[SimulationStopped]:
    return SimulationStopped
