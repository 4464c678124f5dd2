"""The server half of glm: the exact federated Newton workflow (and dispatch to sgd).

Newton (the default solver) runs as follows; every round asks *every* client, because the
pooled statistics need all rows (a client failure fails the session rather than silently
fitting a different dataset)::

    round 0   target_summary       -> intercept-only start beta_0 (exact MLE with no predictors
                                      for the log and identity links)
              newton_stats(beta_0) -> accepted point (beta_a, its summed statistics, F(beta_a))
    round r   trial = beta_a + t * d,  d = newton_point(beta_a) - beta_a,  t = 1
              newton_stats(trial)  -> statistics and test metrics of the trial; recorded
              F(trial) <= F(beta_a)?  accept: beta_a = trial, t = 1, d recomputed
                                      else: t = t / 2 (step halving; a round per halving)
              stop when the next step moves no coefficient by more than tol * (1 + |beta_a|)

so the model saved is the last accepted point, with the statistics *at* it: its Fisher
matrix (for standard errors) and deviance are exact, not one step stale. ``num_rounds`` is
the most rounds Newton may take; it usually needs 3-8.

Federated metrics of each round (``ctx.record_round``):

* ``loss``, ``accuracy`` -- test-weight-weighted means of the clients' values: exactly the
  pooled values;
* ``roc_auc_client_mean``, ``r2_client_mean`` -- weighted means of the clients' values;
* ``r2`` -- the exact pooled R^2 (from each client's SSE, target mean and M2);
* ``train_loss`` -- exact pooled training loss of the round's coefficients (same kind as
  ``loss``), ``train_deviance`` (the summed deviance) and ``objective`` (the penalized mean
  half deviance the solver minimises).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Checkpoint, Participant, Reply, SessionContext
from fedsilo.packages.glm.config import GLMDataConfig, GLMModelConfig, check_consistency
from fedsilo.packages.glm.tanh import GLMFamily
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.regression.families import Family
from fedsilo.regression.newton import (
    ACCEPT_SLACK,
    MAX_HALVINGS,
    NewtonStatistics,
    Penalty,
    newton_point,
    objective,
    step_size,
)
from fedsilo.workflows.metrics import PooledMetrics, client_metrics
from fedsilo.workflows.secure import secure_sum

__all__ = [
    "EVALUATE_METRICS",
    "intercept_only_start",
    "run",
    "run_newton",
]

#: the glm workflows' federated metrics: every known one, weighted by the test rows' sample
#: weights (so ``loss`` and ``accuracy`` are the exact pooled weighted values)
EVALUATE_METRICS = PooledMetrics(weight_key="test_weight_sum")


def run(ctx: SessionContext, mc: GLMModelConfig, dc: GLMDataConfig) -> None:
    """Fit the GLM over the session's clients with the configured solver.

    Raises
    ------
    ConfigError
        When the configs disagree (checked before any client is asked anything).
    TaskError
        When a client fails, or the pooled problem has no unique solution.
    """
    check_consistency(mc, dc)
    if mc.solver == "sgd":
        from fedsilo.packages.glm.sgd import run_sgd

        run_sgd(ctx, mc, dc)
        return
    if mc.differential_privacy_params is not None:
        from fedsilo.packages.glm.private_newton import run_private_newton

        run_private_newton(ctx, mc, dc)
        return
    run_newton(ctx, mc, dc)


@dataclass(frozen=True)
class _Accepted:
    """The last accepted point of the Newton iteration and where to go next."""

    beta: np.ndarray
    stats: NewtonStatistics
    objective: float
    direction: np.ndarray
    scale: float  # the step fraction t of the next trial
    round: int
    halvings: int
    metrics: dict[str, float]


def run_newton(ctx: SessionContext, mc: GLMModelConfig, dc: GLMDataConfig) -> None:
    """The exact Newton / IRLS workflow (see the module docstring)."""
    family = mc.newton_family()
    penalty = Penalty(mc.ml_task.params.alpha, mc.ml_task.params.l1_ratio)
    k = 1 + len(dc.predictors)
    participants = ctx.wait_for_clients(ctx.session.min_num_clients)
    if mc.optimizer is not None:
        ctx.log(
            "solver 'newton' fits exactly and uses no optimizer or strategy; set solver "
            "'sgd' to train with them"
        )
    checkpoint = ctx.restore()
    state = None if checkpoint is None else _restore(checkpoint, k)
    start = 1 if checkpoint is None else checkpoint.round + 1
    secure = mc.secure_aggregation if mc.secure_aggregation.enabled else None
    if state is None:
        beta, _ = intercept_only_start(ctx, participants, family, k, secure=secure)
        stats, _ = _ask_stats(ctx, participants, beta, 0, k, evaluate=False, secure=secure)
        value = objective(stats, beta, penalty)
        if not math.isfinite(value):
            raise TaskError("The deviance of the intercept-only start is not finite.")
        direction = newton_point(beta, stats, penalty) - beta
        state = _Accepted(beta, stats, value, direction, 1.0, 0, 0, {})

    converged = False
    last_round = state.round
    for server_round in range(start, ctx.session.num_rounds + 1):
        trial = state.beta + state.scale * state.direction
        stats, replies = _ask_stats(
            ctx, participants, trial, server_round, k, evaluate=True, secure=secure
        )
        value = objective(stats, trial, penalty)
        federated = EVALUATE_METRICS(replies)
        federated.update(_train_metrics(family, stats, value))
        ctx.record_round(server_round, federated=federated, per_client=client_metrics(replies))
        last_round = server_round
        if value <= state.objective + ACCEPT_SLACK * abs(state.objective):
            target = newton_point(trial, stats, penalty)
            state = _Accepted(trial, stats, value, target - trial, 1.0, server_round, 0, federated)
            converged = step_size(trial, target) <= mc.tol
        else:
            state = replace(state, scale=state.scale / 2, halvings=state.halvings + 1)
            ctx.log(f"round {server_round}: the objective rose to {value:.6g}; halving the step")
        _checkpoint(ctx, server_round, state)
        if converged or state.halvings >= MAX_HALVINGS:
            break
    if converged:
        ctx.log(f"newton converged in {last_round} round(s) (tol={mc.tol:g})")
    elif state.halvings >= MAX_HALVINGS:
        ctx.log("newton stopped: no step along the Newton direction decreases the objective")
    else:
        ctx.log(f"newton did not converge within num_rounds={ctx.session.num_rounds}")
    _save(ctx, mc, family, penalty, state, converged, last_round)


# ----------------------------------------------------------------------- rounds


def intercept_only_start(
    ctx: SessionContext,
    participants: Sequence[Participant],
    family: GLMFamily,
    k: int,
    *,
    secure: SecAggSpec | None = None,
) -> tuple[np.ndarray, float]:
    """Ask every client's ``target_summary`` and return the intercept-only start (under
    ``secure``, only their sum reaches the server: :func:`fedsilo.workflows.secure.secure_sum`).

    Returns
    -------
    beta : ndarray of shape (k,)
        Zeros but the intercept: ``log(sum s y / sum s e^offset)`` for the log link (the
        exact intercept-only MLE), the logit of the weighted mean target, or the weighted
        mean of ``y - offset`` for the identity link. A tanh model starts at zeros: its
        intercept-only least-squares fit has no closed form, and tanh is steepest at 0.
    weight_sum : float
        The sum of the sample weights of all training rows.

    Raises
    ------
    TaskError
        When the weights sum to 0, or the targets leave the intercept undefined (all 0 for
        the log link, one class only for logistic).
    """
    totals = np.zeros(4)
    if secure is not None:
        summed = secure_sum(
            ctx,
            participants,
            "target_summary",
            {},
            {},
            {"summary": totals},
            secure,
            scale=_secure_scale(participants),
            round=0,
        )
        replies: list[Reply] = []
        totals = summed.arrays["summary"]
    else:
        replies = ctx.ask(
            participants,
            "target_summary",
            round=0,
            accept_failures=False,
            min_replies=len(participants),
        )
    for reply in replies:
        summary = reply.arrays.get("summary")
        if summary is None or np.shape(summary) != (4,):
            raise TaskError(
                f"The target_summary reply of client {reply.participant.client_name!r} must "
                "carry array 'summary' of shape (4,)."
            )
        totals += np.asarray(summary, dtype=np.float64)
    weight_sum, target_sum, exp_offset_sum, offset_sum = (float(v) for v in totals)
    if weight_sum <= 0:
        raise TaskError(
            f"The sample weights of all clients' training rows sum to {weight_sum:g}; "
            "expected a sum > 0."
        )
    beta = np.zeros(k)
    mean = target_sum / weight_sum
    if family.activation == "tanh":
        pass
    elif family.activation == "exp":
        if target_sum <= 0:
            raise TaskError(
                "Every training target of every client is 0, so the log-link mean has no "
                "maximum-likelihood estimate."
            )
        beta[0] = math.log(target_sum / exp_offset_sum)
    elif family.activation == "sigmoid":
        if not 0.0 < mean < 1.0:
            raise TaskError(
                f"Every training target of every client is {mean:g}; logistic regression "
                "needs rows of both classes."
            )
        beta[0] = family.link_of(mean)
    else:
        beta[0] = (target_sum - offset_sum) / weight_sum
    return beta, weight_sum


def _ask_stats(
    ctx: SessionContext,
    participants: Sequence[Participant],
    beta: np.ndarray,
    server_round: int,
    k: int,
    *,
    evaluate: bool,
    secure: SecAggSpec | None = None,
) -> tuple[NewtonStatistics, list[Reply]]:
    if secure is not None:
        return _secure_stats(ctx, participants, beta, server_round, k, evaluate, secure)
    replies = ctx.ask(
        participants,
        "newton_stats",
        arrays={"beta": beta},
        meta={"round": server_round, "evaluate": evaluate},
        round=server_round,
        accept_failures=False,
        min_replies=len(participants),
    )
    total: NewtonStatistics | None = None
    for reply in replies:
        who = f"The newton_stats reply of client {reply.participant.client_name!r}"
        stats = NewtonStatistics.from_arrays(reply.arrays, k, who=who)
        total = stats if total is None else total + stats
    if total is None:
        raise TaskError("Cannot take a Newton step: no client replied.")
    return total, replies


def _secure_scale(participants: Sequence[Participant]) -> float:
    # Sums of rows scaled by one over the declared rows are means: within clip_range for
    # features and targets of moderate size (declared rows are public).
    return 1.0 / max(1, sum(p.dataset.train_rows for p in participants))


def _secure_stats(
    ctx: SessionContext,
    participants: Sequence[Participant],
    beta: np.ndarray,
    server_round: int,
    k: int,
    evaluate: bool,
    spec: SecAggSpec,
) -> tuple[NewtonStatistics, list[Reply]]:
    """The pooled statistics as one secure sum; each silo's own never reaches the server.
    The replies returned carry only each client's clear meta (its test metrics)."""
    like = NewtonStatistics(np.zeros(k), np.zeros((k, k)), 0.0, 0.0, 0.0, 0).to_arrays()
    summed = secure_sum(
        ctx,
        participants,
        "newton_stats",
        {"round": server_round, "evaluate": evaluate},
        {"beta": beta},
        like,
        spec,
        scale=_secure_scale(participants),
        round=server_round,
    )
    arrays = dict(summed.arrays)
    # A count, summed within the quantization error: the nearest integer.
    arrays["scalars"] = np.asarray(arrays["scalars"], dtype=np.float64).copy()
    arrays["scalars"][3] = np.rint(arrays["scalars"][3])
    total = NewtonStatistics.from_arrays(arrays, k, who="The secure sum of newton_stats")
    replies = [
        Reply(p, summed.clear.get(p.client_name, {}), {}, kind="newton_stats", round=server_round)
        for p in summed.contributors
    ]
    return total, replies


def _train_metrics(family: Family, stats: NewtonStatistics, value: float) -> dict[str, float]:
    if not math.isfinite(stats.deviance) or stats.weight_sum <= 0:
        return {}
    return {
        "train_loss": family.loss_factor() * stats.deviance / stats.weight_sum,
        "train_deviance": stats.deviance,
        "objective": value,
    }


# ------------------------------------------------------------ checkpoint and model

_CHECKPOINT_KIND = "glm-newton"


def _checkpoint(ctx: SessionContext, server_round: int, state: _Accepted) -> None:
    arrays = {
        "beta": state.beta,
        "direction": state.direction,
        **state.stats.to_arrays("stats/"),
    }
    meta: dict[str, Any] = {
        "kind": _CHECKPOINT_KIND,
        "objective": state.objective,
        "scale": state.scale,
        "accepted_round": state.round,
        "halvings": state.halvings,
        "metrics": state.metrics,
    }
    ctx.checkpoint(server_round, arrays=arrays, meta=meta)


def _restore(checkpoint: Checkpoint, k: int) -> _Accepted:
    meta = checkpoint.meta
    if meta.get("kind") != _CHECKPOINT_KIND:
        raise TaskError(
            f"The checkpoint of round {checkpoint.round} was not written by the glm newton "
            "workflow; cannot resume from it."
        )
    arrays = checkpoint.arrays
    stats = NewtonStatistics.from_arrays(arrays, k, prefix="stats/", who="The checkpoint")
    return _Accepted(
        beta=np.asarray(arrays["beta"], dtype=np.float64),
        stats=stats,
        objective=float(meta["objective"]),
        direction=np.asarray(arrays["direction"], dtype=np.float64),
        scale=float(meta["scale"]),
        round=int(meta["accepted_round"]),
        halvings=int(meta["halvings"]),
        metrics=dict(meta.get("metrics") or {}),
    )


def _save(
    ctx: SessionContext,
    mc: GLMModelConfig,
    family: Family,
    penalty: Penalty,
    state: _Accepted,
    converged: bool,
    last_round: int,
) -> None:
    stats = state.stats
    df_resid = stats.num_rows - state.beta.shape[0]
    if family.estimates_scale:
        # statsmodels' and R's default: Pearson chi^2 over the residual degrees of freedom.
        scale = stats.pearson / df_resid if df_resid > 0 else math.nan
    else:
        scale = 1.0
    meta: dict[str, Any] = {
        "solver": "newton",
        "round": state.round,
        "rounds": last_round,
        "converged": converged,
        "federated_loss": state.metrics.get("loss"),
        "federated_metrics": state.metrics,
        "selected_by": "last accepted newton step",
        "num_rows": stats.num_rows,
        "weight_sum": stats.weight_sum,
        "deviance": stats.deviance,
        "pearson_chi2": stats.pearson,
        "df_resid": df_resid,
        "scale": scale if math.isfinite(scale) else None,
        "objective": state.objective,
        "penalized": penalty.alpha > 0,
    }
    arrays = {"beta": state.beta, "fisher": stats.fisher}
    ctx.save_model(arrays, meta=meta, round=state.round)
