"""The server half of linear_inference: every model of the bundle by federated Newton at once.

Each round asks every client for the bundle's statistics at the current trial coefficients
(one (n_chunked, k) array), sums them, and per model either accepts the trial (its deviance
did not rise) and takes the next Newton step with
:func:`fedsilo.regression.newton.batched_newton_point` (one batched solve for all models),
or halves that model's step -- the glm workflow's iteration, vectorised over models::

    round 1   trial = 0 for every model (the seed's first-round loss is log 2 for logit);
              logit models then start from the LDA estimate the round-1 statistics give
              (:func:`fedsilo.regression.start.batched_discriminant_start`), not from
              Newton's first iterate -- one round fewer to converge
    round 2   a start is kept only when its deviance is at most D(0) - g' F(0)^-1 g, the
              deviance Newton's first iterate is guaranteed not to exceed (at 0 the
              Fisher matrix X'X/4 bounds the logistic Hessian, so the quadratic model there
              majorizes the deviance; Boehning & Lindsay 1988); otherwise that iterate is
              the next trial (a fallback, not a halving)
    round r   accepted models: direction = newton_point(trial) - trial, converged when the
              step is <= tol * (1 + |beta|); rejected models: step halved
    stop      when every model has converged, is singular, or stalled

OLS (``LinearRegInference``) is quadratic, so the first Newton step from 0 solves the normal
equations exactly; the second round measures the residual sum of squares at that solution
(directly, not as y'y - b'X'y, which cancels) and the test metrics, and confirms convergence.

A model whose pooled Fisher matrix is singular (a constant chunk, a duplicate of a shared
predictor) gets NaN coefficients and a reason; the others are unaffected. A model that has
not converged when the rounds run out (or whose step halvings are exhausted) keeps its last
accepted iterate -- coefficients, and the Fisher matrix measured there for the standard
errors and p-values -- flagged ``converged: false`` with a warning in the saved model's meta
and the session log, as statsmodels returns the last iterate with a ``ConvergenceWarning``.
Federated metrics per round: ``loss`` (and ``accuracy`` for logit), the bundle's mean pooled
test value; ``train_loss`` from the summed deviances; ``roc_auc_client_mean`` /
``r2_client_mean``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import Checkpoint, Participant, Reply, SessionContext
from fedsilo.packages.linear_inference.config import (
    LinearInferenceDataConfig,
    LinearInferenceModelConfig,
)
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.regression.families import make_family
from fedsilo.regression.newton import (
    ACCEPT_SLACK,
    MAX_HALVINGS,
    batched_newton_point,
    batched_step_size,
)
from fedsilo.regression.start import batched_discriminant_start
from fedsilo.workflows.metrics import PooledMetrics, client_metrics
from fedsilo.workflows.secure import secure_sum

__all__ = ["run"]

#: the bundle's test means, weighted by the clients' test rows (train_loss comes apart)
_EVALUATE_METRICS = PooledMetrics(("loss", "accuracy", "roc_auc_client_mean", "r2_client_mean"))
_CHECKPOINT_KIND = "linear-inference-newton"
_SINGULAR = (
    "singular design: the chunk is constant or collinear with the shared predictors "
    "across all silos"
)
_STALLED = "no Newton step decreases the deviance (perfect separation?)"
# Below this mean unit deviance the fitted probability of the observed class averages above
# 1 - 5e-5: the signature of a separating predictor, whose coefficient grows every round.
_SEPARATED_DEVIANCE = 1e-4
#: the arrays of the state, as checkpointed (bool and int arrays travel as float64)
_ARRAYS = ("beta", "fisher", "deviance", "direction", "scale", "halvings", "converged")
_START_ARRAYS = ("fallback", "start_bound", "on_start")


@dataclass
class _Bundle:
    """The Newton state of every model of the bundle (n_chunked models of k coefficients).

    ``beta`` / ``fisher`` / ``deviance`` are each model's last accepted iterate and what was
    measured there; the next trial is ``beta + scale * direction``. ``fallback`` is the Newton
    step from 0 of a model still on its LDA start (``on_start``), ``start_bound`` the deviance
    that step is guaranteed to reach, which the start must match. ``left_out`` maps a model to
    why it has no estimate (singular); ``stalled`` to why it stopped before converging.
    """

    beta: np.ndarray
    fisher: np.ndarray
    deviance: np.ndarray
    direction: np.ndarray
    scale: np.ndarray
    halvings: np.ndarray
    converged: np.ndarray
    fallback: np.ndarray
    start_bound: np.ndarray
    on_start: np.ndarray
    left_out: dict[int, str] = field(default_factory=dict)
    stalled: dict[int, str] = field(default_factory=dict)

    @classmethod
    def zeros(cls, m: int, k: int) -> _Bundle:
        return cls(
            beta=np.zeros((m, k)),
            fisher=np.zeros((m, k, k)),
            deviance=np.full(m, np.inf),  # inf before a model's first acceptance
            direction=np.zeros((m, k)),
            scale=np.ones(m),
            halvings=np.zeros(m, dtype=np.int64),
            converged=np.zeros(m, dtype=bool),
            fallback=np.zeros((m, k)),
            start_bound=np.full(m, np.inf),
            on_start=np.zeros(m, dtype=bool),
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, m: int, k: int) -> _Bundle:
        saved, meta = checkpoint.arrays, checkpoint.meta
        if meta.get("kind") != _CHECKPOINT_KIND or np.shape(saved.get("beta", ())) != (m, k):
            raise TaskError(
                f"The checkpoint of round {checkpoint.round} was not written by this "
                "linear_inference workflow; cannot resume from it."
            )
        state = cls.zeros(m, k)  # checkpoints of before the LDA start lack its arrays
        for name in (*_ARRAYS, *_START_ARRAYS):
            if name in saved:
                kind = getattr(state, name).dtype
                value = np.asarray(saved[name])
                setattr(state, name, value > 0.5 if kind == np.bool_ else value.astype(kind))
        state.left_out = {int(j): str(why) for j, why in meta["reasons"].items()}
        state.stalled = {int(j): str(why) for j, why in meta.get("stalled", {}).items()}
        return state

    def checkpoint_arrays(self) -> dict[str, np.ndarray]:
        return {
            name: np.asarray(getattr(self, name), dtype=np.float64)
            for name in (*_ARRAYS, *_START_ARRAYS)
        }

    @property
    def stopped(self) -> np.ndarray:
        """Models no longer fitted (left out or stalled); bool (n_chunked,)."""
        result = np.zeros(self.beta.shape[0], dtype=bool)
        result[[*self.left_out, *self.stalled]] = True
        return result

    def update(
        self,
        trial: np.ndarray,
        gradient: np.ndarray,
        fisher: np.ndarray,
        deviance: np.ndarray,
        tol: float,
        logistic: bool,
    ) -> None:
        """Accept or reject every model's trial and set its next direction."""
        stopped = self.stopped
        first = ~np.isfinite(self.deviance)
        bound = self.deviance + ACCEPT_SLACK * np.abs(self.deviance)
        bound = np.where(self.on_start, np.minimum(bound, self.start_bound), bound)
        accept = ~stopped & np.isfinite(deviance) & (deviance <= bound)
        reject = ~stopped & ~accept
        self.beta[accept] = trial[accept]
        self.fisher[accept] = fisher[accept]
        self.deviance[accept] = deviance[accept]
        target, singular = batched_newton_point(trial[accept], gradient[accept], fisher[accept])
        accepted_index = np.flatnonzero(accept)
        for j in accepted_index[singular]:
            self.left_out[int(j)] = _SINGULAR
        step = np.where(singular[:, None], 0.0, target - trial[accept])
        steps = batched_step_size(trial[accept], np.where(singular[:, None], trial[accept], target))
        self.direction[accept] = step
        self.converged[accept] = ~singular & (steps <= tol)
        self.scale[accept] = 1.0
        self.halvings[accept] = 0
        self.on_start[accept] = False
        if logistic:
            # A model's first accepted point is 0 (round 1): start from the LDA estimate of
            # the same statistics instead of Newton's first iterate, keeping that as fallback.
            left = np.zeros(len(accept), dtype=bool)
            left[list(self.left_out)] = True
            fresh = accept & first & ~self.converged & ~left
            if np.any(fresh):
                start, usable = batched_discriminant_start(gradient[fresh], fisher[fresh])
                index = np.flatnonzero(fresh)[usable]
                newton = self.direction[index]
                self.fallback[index] = newton
                # D(0) - g' F^-1 g = D(0) + g . step: the majorizer's value at the Newton point.
                guaranteed = deviance[index] + np.einsum("mi,mi->m", gradient[index], newton)
                self.start_bound[index] = guaranteed + ACCEPT_SLACK * np.abs(guaranteed)
                self.direction[index] = start[usable] - trial[index]
                self.on_start[index] = True
        # A start worse than that bound gives way to the Newton step from 0; others halve.
        back = reject & self.on_start
        self.direction[back] = self.fallback[back]
        self.on_start[back] = False
        halve = reject & ~back
        self.scale[halve] /= 2.0
        self.halvings[halve] += 1
        for j in np.flatnonzero(self.halvings >= MAX_HALVINGS):
            self.stalled.setdefault(int(j), _STALLED)

    @property
    def done(self) -> bool:
        return bool(np.all(self.converged | self.stopped))


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
    secure = mc.secure_aggregation if mc.secure_aggregation.enabled else None
    m = len(dc.chunked_predictors)
    k = 2 + len(dc.shared_predictors)
    state = _Bundle.zeros(m, k)
    columns: dict[str, Any] = {}
    num_rows = 0
    metrics: dict[str, float] = {}
    last_round = 0
    checkpoint = ctx.restore()
    if checkpoint is not None:  # resume after a server restart, exactly where it stopped
        state = _Bundle.from_checkpoint(checkpoint, m, k)
        meta = checkpoint.meta
        columns, num_rows = dict(meta["columns"]), int(meta["num_rows"])
        metrics, last_round = dict(meta["metrics"]), checkpoint.round
    for server_round in range(last_round + 1, ctx.session.num_rounds + 1):
        stopped = state.stopped
        trial = np.where(stopped[:, None], 0.0, state.beta + state.scale[:, None] * state.direction)
        arrays = {"betas": trial, "active": (~stopped).astype(np.float64)}
        meta = {"round": server_round, "evaluate": True}
        if secure is None:
            replies = ctx.ask(
                participants,
                "bundle_stats",
                arrays=arrays,
                meta=meta,
                round=server_round,
                accept_failures=False,
                min_replies=len(participants),
            )
        else:
            replies = _secure_replies(ctx, participants, arrays, meta, m, k, secure)
        gradient, trial_fisher, deviance, num_rows, columns = _sum(replies, m, k)
        metrics = federated_metrics(replies, family.loss_factor() * deviance[~stopped] / num_rows)
        ctx.record_round(server_round, federated=metrics, per_client=client_metrics(replies))
        last_round = server_round
        state.update(trial, gradient, trial_fisher, deviance, mc.tol, family.task == "logistic")
        meta_state: dict[str, Any] = {
            "reasons": {str(j): why for j, why in state.left_out.items()},
            "stalled": {str(j): why for j, why in state.stalled.items()},
            "columns": columns,
            "kind": _CHECKPOINT_KIND,
            "num_rows": num_rows,
            "metrics": metrics,
        }
        ctx.checkpoint(server_round, arrays=state.checkpoint_arrays(), meta=meta_state)
        if state.done and server_round >= 2:
            break
    _save(ctx, mc, state, columns, num_rows, metrics, last_round)


def _secure_replies(
    ctx: SessionContext,
    participants: Sequence[Participant],
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    m: int,
    k: int,
    spec: SecAggSpec,
) -> list[Reply]:
    """The round's statistics as ONE reply holding their secure sum (each silo's own never
    reaches the server), then one array-less reply per client with its clear meta (row
    count, resolved columns, test metrics), so :func:`_sum` reads both as it reads plain
    replies. Values are scaled by one over the declared rows to fit ``clip_range``."""
    like = {"gradient": np.zeros((m, k)), "fisher": np.zeros((m, k, k)), "deviance": np.zeros(m)}
    rows = max(1, sum(p.dataset.train_rows for p in participants))
    round_ = int(meta["round"])
    summed = secure_sum(
        ctx, participants, "bundle_stats", meta, arrays, like, spec, scale=1.0 / rows, round=round_
    )
    zeros = {name: np.zeros_like(value) for name, value in like.items()}
    replies = [
        Reply(p, summed.clear.get(p.client_name, {}), zeros, kind="bundle_stats", round=round_)
        for p in summed.contributors
    ]
    first = replies[0]
    replies[0] = Reply(first.participant, first.meta, summed.arrays, kind=first.kind, round=round_)
    return replies


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
    state: _Bundle,
    columns: dict[str, Any],
    num_rows: int,
    metrics: dict[str, float],
    last_round: int,
) -> None:
    beta = state.beta.copy()
    left_out = sorted(state.left_out)
    beta[left_out] = np.nan  # no estimate exists; an unconverged model keeps its last iterate
    names = list(columns.get("chunked", []))
    converged = state.converged.copy()
    converged[left_out] = False
    limit = f"did not converge within num_rounds={ctx.session.num_rounds}"
    warnings: dict[str, str] = {}
    for j in np.flatnonzero(~converged):
        if int(j) in state.left_out:
            continue
        why = state.stalled.get(int(j), limit)
        per_row = state.deviance[j] / max(num_rows, 1)
        if mc.task == "logistic" and per_row < _SEPARATED_DEVIANCE:
            why += (
                f" (deviance per row {per_row:.1e}: the model (quasi-)separates the classes, "
                "so the maximum-likelihood estimate may not exist)"
            )
        warnings[names[j]] = f"{why}; the estimates are the last iterate's"
    ctx.log(
        f"linear_inference: {int(converged.sum())} of {len(names)} model(s) converged in "
        f"{last_round} round(s); {len(left_out)} left out (singular)"
    )
    if warnings:
        shown = ", ".join(list(warnings)[:10]) + (", ..." if len(warnings) > 10 else "")
        ctx.log(
            f"warning: {len(warnings)} model(s) did not converge ({shown}): "
            f"{next(iter(warnings.values()))}; they are flagged converged: false"
        )
    loss = metrics.get("loss")
    meta: dict[str, Any] = {
        "strategy": mc.strategy.name,
        "rounds": last_round,
        "num_rows": num_rows,
        "df_resid": num_rows - beta.shape[1],
        "target": columns.get("target"),
        "shared_predictors": list(columns.get("shared", [])),
        "chunked_predictors": names,
        "reasons": {names[j]: state.left_out[j] for j in left_out},
        "converged": {name: bool(converged[j]) for j, name in enumerate(names)},
        "convergence_warnings": warnings,
        "federated_loss": loss if loss is not None and math.isfinite(loss) else None,
        "federated_metrics": metrics,
    }
    arrays = {
        "beta": beta,
        "fisher": state.fisher,
        "deviance": np.where(np.isfinite(state.deviance), state.deviance, np.nan),
    }
    ctx.save_model(arrays, meta=meta, round=last_round)
