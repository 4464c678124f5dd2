"""The glm Newton workflow: what it asks, when it stops, step halving, resume, refusals."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import TaskError
from fedsilo.federation import get_package
from fedsilo.packages.glm import GLMExecutor

PREDICTORS = ["x0", "x1", "x2", "x3"]
DATA = {"predictors": PREDICTORS, "target": "y"}
PACKAGE = get_package("glm")


def contexts(
    fake_context: Any, config: dict[str, Any], frames: list[pd.DataFrame], **kwargs: Any
) -> Any:
    mc, dc = PACKAGE.parse_configs(config, DATA)
    executors = {
        f"silo{i}": GLMExecutor(mc, dc, LocalDataset(f, None, 64)) for i, f in enumerate(frames)
    }
    return mc, dc, fake_context(executors, **kwargs)


def test_every_client_answers_every_round_and_newton_stops_early(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    fit = run_federated(config("poisson"), DATA, silos("poisson"), num_rounds=50)
    asked = fit.ctx.asked
    everyone = ["silo0", "silo1", "silo2"]
    assert asked[0] == ("target_summary", 0, everyone)
    assert asked[1] == ("newton_stats", 0, everyone)
    rounds = fit.model.meta["rounds"]
    assert 2 <= rounds <= 8
    assert asked[2:] == [("newton_stats", r, everyone) for r in range(1, rounds + 1)]
    assert sorted(fit.ctx.rounds) == list(range(1, rounds + 1))
    assert fit.ctx.logs[-1] == f"newton converged in {rounds} round(s) (tol=1e-10)"
    assert fit.ctx.saved is not None and fit.ctx.saved[2] == rounds == fit.model.meta["round"]
    objectives = [fit.ctx.rounds[r][0]["objective"] for r in sorted(fit.ctx.rounds)]
    assert all(b <= a * (1 + 1e-10) for a, b in itertools.pairwise(objectives))


def test_num_rounds_is_the_maximum(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    fit = run_federated(config("gamma"), DATA, silos("gamma"), num_rounds=2)
    assert fit.model.meta["converged"] is False
    assert fit.model.meta["rounds"] == 2
    assert fit.ctx.logs[-1] == "newton did not converge within num_rounds=2"
    assert sorted(fit.ctx.rounds) == [1, 2]


def test_step_halving_recovers_from_an_overshooting_newton_step(
    run_federated: Any, config: Any
) -> None:
    # A strong effect on a log scale: the first Fisher step from the intercept-only start
    # overshoots by orders of magnitude, so the workflow must halve it.
    rng = np.random.default_rng(0)
    frames = []
    for n in (500, 2000, 7000):
        frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=PREDICTORS)
        frame["y"] = rng.poisson(np.exp(4 * frame["x0"] - 1)).astype(float)
        frames.append(frame)
    fit = run_federated(config("poisson"), DATA, frames, num_rounds=100)
    assert any("halving the step" in line for line in fit.ctx.logs)
    assert fit.model.meta["converged"] is True
    pooled = pd.concat(frames)
    result = sm.GLM(
        pooled["y"], sm.add_constant(pooled[PREDICTORS]), family=sm.families.Poisson()
    ).fit(tol=1e-13, maxiter=500)
    np.testing.assert_allclose(fit.model.beta, result.params, rtol=1e-6)


def test_a_resumed_session_finishes_as_an_uninterrupted_one(
    silos: Callable[..., list[pd.DataFrame]], fake_context: Any, crash: Any, config: Any
) -> None:
    frames = silos("gamma")
    mc, dc, whole = contexts(fake_context, config("gamma"), frames, num_rounds=50)
    PACKAGE.workflow(whole, mc, dc)

    mc, dc, first = contexts(fake_context, config("gamma"), frames, num_rounds=50, stop_after=3)
    with pytest.raises(crash):
        PACKAGE.workflow(first, mc, dc)
    mc, dc, second = contexts(
        fake_context, config("gamma"), frames, num_rounds=50, checkpoint=first.last_checkpoint
    )
    PACKAGE.workflow(second, mc, dc)
    assert [kind for kind, _, _ in second.asked] == ["newton_stats"] * (len(second.asked))
    assert second.asked[0][1] == 4  # resumes with round 4, asking nothing twice
    assert whole.saved is not None and second.saved is not None
    np.testing.assert_array_equal(whole.saved[0]["beta"], second.saved[0]["beta"])
    np.testing.assert_array_equal(whole.saved[0]["fisher"], second.saved[0]["fisher"])
    assert whole.saved[1] == second.saved[1]


def test_collinear_predictors_fail_with_a_clear_reason(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos("normal")
    for frame in frames:
        frame["x3"] = 2.0 * frame["x1"] - frame["x0"]
    with pytest.raises(TaskError, match=r"pooled Fisher information is singular.*collinear"):
        run_federated(config("normal"), DATA, frames)
    # A ridge penalty makes the same problem well posed.
    fit = run_federated(config("normal", alpha=0.1), DATA, frames)
    assert fit.model.meta["converged"] is True


def test_a_predictor_constant_across_silos_is_collinear_with_the_intercept(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos("poisson")
    for frame in frames:
        frame["x2"] = 1.5
    with pytest.raises(TaskError, match="singular"):
        run_federated(config("poisson"), DATA, frames)


def test_targets_that_leave_the_start_undefined(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos("poisson")
    for frame in frames:
        frame["y"] = 0.0
    with pytest.raises(TaskError, match="Every training target of every client is 0"):
        run_federated(config("poisson"), DATA, frames)
    frames = silos("logistic")
    for frame in frames:
        frame["y"] = 1.0
    with pytest.raises(TaskError, match="needs rows of both classes"):
        run_federated(config("logistic"), DATA, frames)


def test_newton_says_it_does_not_use_the_optimizer(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    optimizer = {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.9}}
    fit = run_federated(config("logistic", optimizer=optimizer), DATA, silos("logistic"))
    assert "uses no optimizer or strategy" in fit.ctx.logs[0]
