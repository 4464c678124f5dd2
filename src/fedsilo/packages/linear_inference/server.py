"""The server half of linear_inference: every model of the bundle by federated Newton at once.

Each round asks every client for the bundle's statistics at the current trial coefficients
(one (n_chunked, k) array), sums them, and per model either accepts the trial (its deviance
did not rise) and takes the next Newton step with
:func:`fedsilo.regression.newton.batched_newton_point` (one batched solve for all models),
or halves that model's step -- the glm workflow's iteration, vectorised over models::

    round 1   trial = 0 for every model (the seed's first-round loss is log 2 for logit)
    round r   accepted models: direction = newton_point(trial) - trial, converged when the
              step is <= tol * (1 + |beta|); rejected models: step halved
    stop      when every model has converged, is singular, or failed

OLS (``LinearRegInference``) is quadratic, so the first Newton step from 0 solves the normal
equations exactly; the second round measures the residual sum of squares at that solution
(directly, not as y'y - b'X'y, which cancels) and the test metrics, and confirms convergence.

A model whose pooled Fisher matrix is singular (a constant chunk, a duplicate of a shared
predictor) gets NaN coefficients and a reason; the others are unaffected. Federated metrics
per round: ``loss`` (and ``accuracy`` for logit), the bundle's mean pooled test value;
``train_loss`` from the summed deviances; ``roc_auc_client_mean`` / ``r2_client_mean``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import Reply, SessionContext
from fedsilo.packages.linear_inference.config import (
    LinearInferenceDataConfig,
    LinearInferenceModelConfig,
)
from fedsilo.regression.families import make_family
from fedsilo.regression.newton import (
    ACCEPT_SLACK,
    MAX_HALVINGS,
    batched_newton_point,
    batched_step_size,
)
from fedsilo.workflows.metrics import PooledMetrics, client_metrics

__all__ = ["run"]

#: the bundle's test means, weighted by the clients' test rows (train_loss comes apart)
_EVALUATE_METRICS = PooledMetrics(("loss", "accuracy", "roc_auc_client_mean", "r2_client_mean"))
_CHECKPOINT_KIND = "linear-inference-newton"
_SINGULAR = (
    "singular design: the chunk is constant or collinear with the shared predictors "
    "across all silos"
)


def run(ctx: SessionContext, mc: LinearInferenceModelConfig, dc: LinearInferenceDataConfig) -> None:
    """Fit the bundle over the session's clients and save it (see the module docstring).

    Raises
    ------
    ConfigError
        When ``num_rounds < 2`` (one round fits, one measures the fit).
    TaskError
        When a client fails or the clients disagree on the columns.
    """
    if ctx.session.num_rounds < 2:
        raise ConfigError(
            f"num_rounds must be >= 2 for linear_inference (the first round fits from 0, "
            f"the second measures the fit). Got {ctx.session.num_rounds}."
        )
    family = make_family(mc.task)
    participants = ctx.wait_for_clients(ctx.session.min_num_clients)
    m = len(dc.chunked_predictors)
    k = 2 + len(dc.shared_predictors)
    beta = np.zeros((m, k))
    fisher = np.zeros((m, k, k))
    accepted_deviance = np.full(m, np.inf)
    direction = np.zeros((m, k))
    scale = np.ones(m)
    halvings = np.zeros(m, dtype=np.int64)
    converged = np.zeros(m, dtype=bool)
    reasons: dict[int, str] = {}
    columns: dict[str, Any] = {}
    num_rows = 0
    metrics: dict[str, float] = {}
    last_round = 0
    checkpoint = ctx.restore()
    if checkpoint is not None:  # resume after a server restart, exactly where it stopped
        saved, meta = checkpoint.arrays, checkpoint.meta
        if meta.get("kind") != _CHECKPOINT_KIND or np.shape(saved.get("beta", ())) != (m, k):
            raise TaskError(
                f"The checkpoint of round {checkpoint.round} was not written by this "
                "linear_inference workflow; cannot resume from it."
            )
        beta, fisher = np.array(saved["beta"]), np.array(saved["fisher"])
        accepted_deviance, direction = np.array(saved["deviance"]), np.array(saved["direction"])
        scale = np.array(saved["scale"])
        halvings = np.asarray(saved["halvings"]).astype(np.int64)
        converged = np.asarray(saved["converged"]) > 0.5
        reasons = {int(j): str(why) for j, why in meta["reasons"].items()}
        columns, num_rows = dict(meta["columns"]), int(meta["num_rows"])
        metrics, last_round = dict(meta["metrics"]), checkpoint.round
    for server_round in range(last_round + 1, ctx.session.num_rounds + 1):
        failed = np.zeros(m, dtype=bool)
        failed[list(reasons)] = True
        trial = np.where(failed[:, None], 0.0, beta + scale[:, None] * direction)
        replies = ctx.ask(
            participants,
            "bundle_stats",
            arrays={"betas": trial, "active": (~failed).astype(np.float64)},
            meta={"round": server_round, "evaluate": True},
            round=server_round,
            accept_failures=False,
            min_replies=len(participants),
        )
        gradient, trial_fisher, deviance, num_rows, columns = _sum(replies, m, k)
        metrics = federated_metrics(replies, family.loss_factor() * deviance[~failed] / num_rows)
        ctx.record_round(server_round, federated=metrics, per_client=client_metrics(replies))
        last_round = server_round
        # inf before a model's first acceptance, so round 1 is always accepted.
        bound = accepted_deviance + ACCEPT_SLACK * np.abs(accepted_deviance)
        accept = ~failed & np.isfinite(deviance) & (deviance <= bound)
        reject = ~failed & ~accept
        beta[accept] = trial[accept]
        fisher[accept] = trial_fisher[accept]
        accepted_deviance[accept] = deviance[accept]
        target, singular = batched_newton_point(
            trial[accept], gradient[accept], trial_fisher[accept]
        )
        accepted_index = np.flatnonzero(accept)
        for j in accepted_index[singular]:
            reasons[int(j)] = _SINGULAR
        direction[accept] = np.where(singular[:, None], 0.0, target - trial[accept])
        steps = batched_step_size(trial[accept], np.where(singular[:, None], trial[accept], target))
        converged[accept] = ~singular & (steps <= mc.tol)
        scale[accept] = 1.0
        halvings[accept] = 0
        scale[reject] /= 2.0
        halvings[reject] += 1
        for j in np.flatnonzero(halvings >= MAX_HALVINGS):
            reasons.setdefault(
                int(j), "no Newton step decreases the deviance (perfect separation?)"
            )
        done = converged | np.isin(np.arange(m), list(reasons))
        arrays = {
            "beta": beta,
            "fisher": fisher,
            "deviance": accepted_deviance,
            "direction": direction,
            "scale": scale,
            "halvings": halvings.astype(np.float64),
            "converged": converged.astype(np.float64),
        }
        state: dict[str, Any] = {"reasons": {str(j): why for j, why in reasons.items()}}
        state.update({"columns": columns})
        state.update({"kind": _CHECKPOINT_KIND, "num_rows": num_rows, "metrics": metrics})
        ctx.checkpoint(server_round, arrays=arrays, meta=state)
        if np.all(done) and server_round >= 2:
            break
    for j in np.flatnonzero(~converged):
        reasons.setdefault(int(j), f"did not converge within num_rounds={ctx.session.num_rounds}")
    ctx.log(
        f"linear_inference: {int(converged.sum())} of {m} model(s) converged in "
        f"{last_round} round(s); {len(reasons)} left out"
    )
    _save(ctx, mc, beta, fisher, accepted_deviance, reasons, columns, num_rows, metrics, last_round)


def _sum(
    replies: Sequence[Reply], m: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, dict[str, Any]]:
    gradient = np.zeros((m, k))
    fisher = np.zeros((m, k, k))
    deviance = np.zeros(m)
    num_rows = 0
    columns: dict[str, Any] | None = None
    for reply in replies:
        who = f"The bundle_stats reply of client {reply.participant.client_name!r}"
        for name, shape in (("gradient", (m, k)), ("fisher", (m, k, k)), ("deviance", (m,))):
            array = reply.arrays.get(name)
            if array is None or np.shape(array) != shape:
                got = "missing" if array is None else f"shape {np.shape(array)}"
                raise TaskError(f"{who} must carry array {name!r} of shape {shape}; got {got}.")
        gradient += reply.arrays["gradient"]
        fisher += reply.arrays["fisher"]
        deviance += reply.arrays["deviance"]
        num_rows += int(reply.meta.get("num_rows", 0))
        got_columns = reply.meta.get("columns")
        if columns is None:
            columns = got_columns
        elif got_columns != columns:
            raise TaskError(
                f"{who} resolves the data_config to other columns than the first client "
                f"({got_columns!r} vs {columns!r}); every silo must have the same columns."
            )
    if not isinstance(columns, dict):
        raise TaskError("No bundle_stats reply named its columns.")
    return gradient, fisher, deviance, num_rows, columns


def federated_metrics(replies: Sequence[Reply], train_losses: np.ndarray) -> dict[str, float]:
    """The round's federated metrics: pooled test means over the bundle, train loss.

    Every client averages over the same active models, so the test-row-weighted mean of the
    clients' bundle means is the bundle mean of the pooled values.
    """
    result = _EVALUATE_METRICS(replies)
    if train_losses.size and np.all(np.isfinite(train_losses)):
        result["train_loss"] = float(train_losses.mean())
    return result


def _save(
    ctx: SessionContext,
    mc: LinearInferenceModelConfig,
    beta: np.ndarray,
    fisher: np.ndarray,
    deviance: np.ndarray,
    reasons: dict[int, str],
    columns: dict[str, Any],
    num_rows: int,
    metrics: dict[str, float],
    last_round: int,
) -> None:
    beta = beta.copy()
    failed = sorted(reasons)
    beta[failed] = np.nan
    names = list(columns.get("chunked", []))
    loss = metrics.get("loss")
    meta: dict[str, Any] = {
        "strategy": mc.strategy.name,
        "rounds": last_round,
        "num_rows": num_rows,
        "df_resid": num_rows - beta.shape[1],
        "target": columns.get("target"),
        "shared_predictors": list(columns.get("shared", [])),
        "chunked_predictors": names,
        "reasons": {names[j]: reasons[j] for j in failed},
        "federated_loss": loss if loss is not None and math.isfinite(loss) else None,
        "federated_metrics": metrics,
    }
    arrays = {
        "beta": beta,
        "fisher": fisher,
        "deviance": np.where(np.isfinite(deviance), deviance, np.nan),
    }
    ctx.save_model(arrays, meta=meta, round=last_round)
