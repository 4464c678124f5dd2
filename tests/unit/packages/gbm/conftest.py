"""Fixtures of the gbm tests: an in-process session whose tasks go through the wire codec.

``federate(model_config, data_config, frames, num_rounds, tests)`` runs the real gbm
workflow against one :class:`GBMExecutor` per frame and returns the exported model with the
context (rounds, checkpoints, bytes on the wire per task kind).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from fedsilo.data.dataset import LocalDataset
from fedsilo.packages.gbm import PACKAGE, GBMExecutor, GBMModel
from fedsilo.runners.inprocess import InProcessContext, SimulationStopped
from fedsilo.wire import (
    DatasetSummary,
)

_SUMMARY = DatasetSummary(train_rows=0, test_rows=0, columns=[])


@dataclass
class Federated:
    model: GBMModel
    ctx: InProcessContext


def federate(
    model_config: Mapping[str, Any],
    data_config: Mapping[str, Any],
    frames: Sequence[pd.DataFrame],
    *,
    num_rounds: int = 20,
    tests: Sequence[pd.DataFrame | None] | None = None,
    ctx: InProcessContext | None = None,
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
        ctx = InProcessContext(executors, num_rounds)
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
def gbm_context() -> type[InProcessContext]:
    return InProcessContext


@pytest.fixture
def gbm_crash() -> type[SimulationStopped]:
    return SimulationStopped
