"""Fixtures of the glm tests: three unequal silos per family and an in-process session.

``silos(task)`` draws 500 / 2,000 / 7,000 rows (non-IID: each silo's predictors are shifted)
with an ``exposure`` column (``expo``), an offset column (``off``) and sample weights (``w``),
so one dataset serves the plain, offset, exposure and weighted cases; ``pooled`` is their
concatenation, what statsmodels and scikit-learn fit as the reference.

``federate(model_config, data_config, frames)`` runs the real server workflow against an
in-process context whose every task and reply goes through the wire codec, as the engine
does, and returns the exported model with the context (rounds, logs, checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.dataset import LocalDataset
from fedsilo.federation import get_package
from fedsilo.packages.glm import GLMExecutor, GLMModel
from fedsilo.runners.inprocess import InProcessContext, SimulationStopped
from fedsilo.wire import (
    DatasetSummary,
)

PREDICTORS = ["x0", "x1", "x2", "x3"]
SIZES = (500, 2000, 7000)
_TRUE_BETA = np.array([0.3, 0.5, -0.25, 0.1, 0.0])  # x3 is noise
_SUMMARY = DatasetSummary(train_rows=0, test_rows=0, columns=[])


def draw_silos(task: str, seed: int = 0, power: float = 1.5) -> list[pd.DataFrame]:
    """Three silos of SIZES rows whose target follows ``task`` with log(expo) + off in eta."""
    rng = np.random.default_rng(seed)
    frames = []
    for n, shift in zip(SIZES, (-0.5, 0.0, 0.4), strict=True):
        x = rng.normal(shift, 1.0, size=(n, len(PREDICTORS)))
        frame = pd.DataFrame(x, columns=PREDICTORS)
        frame["expo"] = rng.uniform(0.5, 2.0, n)
        frame["off"] = rng.normal(0.0, 0.2, n)
        frame["w"] = rng.uniform(0.2, 3.0, n)
        eta = _TRUE_BETA[0] + x @ _TRUE_BETA[1:] + frame["off"] + np.log(frame["expo"])
        mu = np.exp(eta)
        if task == "logistic":
            y = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta))).astype(float)
        elif task == "normal":
            y = eta + rng.normal(0.0, 1.0, n)
        elif task == "poisson":
            y = rng.poisson(mu).astype(float)
        elif task == "gamma":
            y = rng.gamma(2.0, mu / 2.0)
        elif task == "inverseGaussian":
            y = rng.wald(mu, 4.0)
        elif task == "tweedie":
            # Compound Poisson-gamma: a point mass at 0 and a continuous positive part.
            counts = rng.poisson(mu)
            y = np.array([rng.gamma(2.0, 0.5, size=c).sum() for c in counts])
        else:
            raise ValueError(task)
        frame["y"] = y
        frames.append(frame)
    return frames


@pytest.fixture
def silos() -> Callable[..., list[pd.DataFrame]]:
    return draw_silos


@dataclass
class Federated:
    model: GLMModel
    ctx: InProcessContext
    executors: dict[str, GLMExecutor] = field(default_factory=dict)


def federate(
    model_config: Mapping[str, Any],
    data_config: Mapping[str, Any],
    frames: Sequence[pd.DataFrame],
    *,
    num_rounds: int = 50,
    tests: Sequence[pd.DataFrame] | None = None,
    batch_size: int = 256,
) -> Federated:
    """Fit over one executor per frame with the real workflow; see the module docstring."""
    package = get_package("glm")
    mc, dc = package.parse_configs(model_config, data_config)
    executors = {
        f"silo{i}": GLMExecutor(
            mc, dc, LocalDataset(frame, None if tests is None else tests[i], batch_size)
        )
        for i, frame in enumerate(frames)
    }
    ctx = InProcessContext(executors, num_rounds)
    package.workflow(ctx, mc, dc)
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    return Federated(GLMModel(mc, dc, arrays, meta), ctx, executors)


@pytest.fixture
def run_federated() -> Callable[..., Federated]:
    return federate


@pytest.fixture
def fake_context() -> type[InProcessContext]:
    return InProcessContext


@pytest.fixture
def crash() -> type[SimulationStopped]:
    return SimulationStopped


def glm_config(
    task: str, alpha: float = 0.0, l1_ratio: float = 0.0, **extra: Any
) -> dict[str, Any]:
    """A glm model_config for the four PREDICTORS."""
    params: dict[str, Any] = {"alpha": alpha, "l1_ratio": l1_ratio}
    if "power" in extra:
        params["power"] = extra.pop("power")
    model_params: dict[str, Any] = {"input_size": len(PREDICTORS)}
    if "output_activation" in extra:
        model_params["output_activation"] = extra.pop("output_activation")
    return {"model": {"params": model_params}, "ml_task": {"type": task, "params": params}, **extra}


@pytest.fixture
def config() -> Callable[..., dict[str, Any]]:
    return glm_config
