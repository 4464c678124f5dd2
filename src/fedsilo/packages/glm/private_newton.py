"""glm's ``newton`` solver under ``differential_privacy_params``: both halves.

Without DP the newton workflow (:mod:`fedsilo.packages.glm.server`) sums exact statistics --
weighted target sums for its start, the deviance for its line search, the Pearson sum for
the dispersion -- none of which may leave a silo exactly under DP. The private workflow
releases only what :mod:`fedsilo.privacy.newton` protects: each round, per silo, one clipped
and noised vector and one clipped and noised symmetric matrix (2 Gaussian releases; the
budget is planned over all ``num_rounds`` rounds up front, ``plan_gaussian``)::

    round 1   IRLS start: v = -sum_i s_i w_i (z_i - offset_i) x_i,  M = sum_i s_i w_i x_i x_i^T
              at mu_0 = a start mean from each row's own target (R's ``mustart``),
              eta_0 = g(mu_0), w = h'(eta_0)^2 / V(mu_0), z = eta_0 + (y - mu_0) / h'(eta_0);
              beta_1 = the penalized weighted least-squares solution (newton_point from 0)
    round r   v = gradient, M = Fisher information of the half deviance at beta_{r-1};
              beta_r = newton_point(beta_{r-1}) with M raised to be positive definite

The start needs no exact target sums, and it lands near the fit for the log link, where a
Newton step from 0 can overshoot by orders of magnitude. There is no line search (the
objective is not released) and no early stop: every planned round runs, so choose
``num_rounds`` small (5-8 rounds converge without noise) -- the budget is split over all of
them. The objective is normalised by the pooled *row count* (public) instead of the pooled
sample-weight sum (which would be one more release); with unit weights they are equal.

The noisy Fisher sum is symmetric but may be indefinite. The server raises its eigenvalues to
at least ``2 * sigma * sqrt(k)``, with ``sigma^2`` the summed noise variance of the clients'
Fisher entries (:func:`fedsilo.privacy.mechanisms.positive_definite`): the noise matrix's
spectral norm is about that (Wigner's semicircle), so no direction keeps less curvature than
the noise could have removed, and the step stays bounded. It is post-processing (free).

Metrics of each round come from the clients' test sets (released exactly; test rows are
outside the guarantee), per-client ``epsilon_spent`` from the stats replies. The saved model
has no Fisher matrix: standard errors from a noisy Fisher would ignore the privacy noise, so
``summary()`` refuses a private fit.

The server imports this module for :func:`run_private_newton` and stays torch-free: the
accountant (Opacus, which imports torch) is imported by the client half,
:class:`PrivateNewton`, when it plans its budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Participant, Reply, SessionContext
from fedsilo.packages.glm.config import GLMDataConfig, GLMModelConfig
from fedsilo.packages.glm.server import EVALUATE_METRICS
from fedsilo.privacy import DifferentialPrivacyParams, resolve_delta
from fedsilo.privacy.ledger import ReleaseLedger, privacy_report
from fedsilo.privacy.mechanisms import noise_spectral_norm, positive_definite
from fedsilo.privacy.newton import private_second_order_sums
from fedsilo.regression.families import Family
from fedsilo.regression.newton import (
    DesignData,
    NewtonStatistics,
    Penalty,
    newton_point,
    row_terms,
)
from fedsilo.wire import Arrays
from fedsilo.workflows.metrics import client_metrics, finite_number

if TYPE_CHECKING:
    from fedsilo.privacy.accounting import GaussianPlan

__all__ = ["RELEASES_PER_ROUND", "PrivateNewton", "run_private_newton", "start_means"]

#: the noisy vector and the noisy matrix
RELEASES_PER_ROUND = 2
_CHECKPOINT_KIND = "glm-newton-private"
_SPENT = "epsilon_spent"


def start_means(family: Family, y: np.ndarray) -> np.ndarray:
    """Each row's IRLS start mean from its own target (R's ``family()$mustart``).

    Returns
    -------
    ndarray of shape (n_rows,)
        Inside the link's domain: ``(y + 1/2) / 2`` for the logit; ``y + 0.1`` for the log
        link where the family allows ``y = 0`` (Poisson, Tweedie; ``max(y, 0) + 0.1`` for a
        normal target with the log link), ``y`` otherwise.
    """
    y = np.asarray(y, dtype=np.float64)
    if family.activation == "sigmoid":
        start: np.ndarray = (y + 0.5) / 2.0
        return start
    if family.activation == "exp":
        if family.task in ("gamma", "inverseGaussian"):
            return y.copy()
        shifted: np.ndarray = np.maximum(y, 0.0) + 0.1
        return shifted
    return y.copy()


class PrivateNewton:
    """The client half: one silo's private releases for the private newton workflow.

    Parameters
    ----------
    params : DifferentialPrivacyParams
    family : Family
    data : DesignData
        The silo's training rows.

    Raises
    ------
    ConfigError
        When ``delta`` is not below ``1 / n_rows`` (before the client joins).
    """

    def __init__(self, params: DifferentialPrivacyParams, family: Family, data: DesignData) -> None:
        resolve_delta(params, data.num_rows)
        self.params = params
        self.family = family
        self.data = data
        # The accountant (Opacus, hence torch) is the client half's: the server imports this
        # module for run_private_newton and must stay torch-free.
        from fedsilo.privacy.accounting import plan_gaussian

        self.ledger: ReleaseLedger[GaussianPlan] = ReleaseLedger(
            lambda rounds: plan_gaussian(
                params,
                n_rows=data.num_rows,
                rounds=rounds,
                releases_per_round=RELEASES_PER_ROUND,
            )
        )

    def reply(
        self, meta: dict[str, Any], beta: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[dict[str, Any], Arrays]:
        """Answer a ``newton_stats`` task: the round's private statistics.

        Parameters
        ----------
        meta : dict
            ``round`` (1 .. num_rounds), ``num_rounds`` and ``start`` (round 1: the IRLS
            start, ``beta`` ignored).
        beta : ndarray of shape (k,)
        rng : numpy.random.Generator, optional
            Tests only (see :func:`fedsilo.privacy.mechanisms.add_gaussian_noise`).

        Returns
        -------
        (dict, dict of str to ndarray)
            Meta ``num_rows``, ``fisher_noise_std`` and the privacy report; arrays as
            :meth:`NewtonStatistics.to_arrays` (deviance and Pearson sum NaN: not released).
        """
        plan = self.ledger.plan(meta)
        server_round = meta.get("round")
        if isinstance(server_round, bool) or not isinstance(server_round, int):
            raise TaskError(f"Task meta 'round' must be an integer >= 1. Got {server_round!r}.")
        self.ledger.admit(plan, server_round)
        start = bool(meta.get("start", False))
        stats = self.statistics(None if start else beta, plan.noise_multiplier, rng)
        reply = {
            "num_rows": self.data.num_rows,
            "fisher_noise_std": plan.sigma(self.params.hessian_norm),
            **privacy_report(plan, server_round),
        }
        self.ledger.mark_released(server_round)
        return reply, stats.to_arrays()

    def statistics(
        self,
        beta: np.ndarray | None,
        noise_multiplier: float,
        rng: np.random.Generator | None = None,
    ) -> NewtonStatistics:
        """The private statistics at ``beta`` (the IRLS start when None).

        Returns
        -------
        NewtonStatistics
            ``gradient`` and ``fisher`` clipped and noised; ``weight_sum`` is the row count.
        """
        data = self.data
        design = np.empty((data.num_rows, 1 + data.features.shape[1]))
        design[:, 0] = 1.0
        design[:, 1:] = data.features
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if beta is None:
                eta0 = _link(self.family, start_means(self.family, data.target))
                terms = self.family.row_terms(data.target, eta0)
                # -(s w (z - offset)) with z - eta0 = (y - mu0) / h' = -gradient_scale / w:
                # newton_point from 0 then solves the weighted least squares of the start.
                vector_scale = -data.weight * (
                    terms.fisher_weight * (eta0 - data.offset) - terms.gradient_scale
                )
            else:
                terms = row_terms(self.family, data, beta)
                vector_scale = data.weight * terms.gradient_scale
            matrix_weight = data.weight * terms.fisher_weight
        sums = private_second_order_sums(
            design,
            vector_scale,
            matrix_weight,
            max_vector_norm=self.params.max_grad_norm,
            max_matrix_norm=self.params.hessian_norm,
            noise_multiplier=noise_multiplier,
            rng=rng,
        )
        return NewtonStatistics(
            gradient=sums.vector,
            fisher=sums.matrix,
            deviance=math.nan,
            pearson=math.nan,
            weight_sum=float(data.num_rows),
            num_rows=data.num_rows,
        )


def _link(family: Family, mu: np.ndarray) -> np.ndarray:
    if family.activation == "sigmoid":
        logit: np.ndarray = np.log(mu / (1.0 - mu))
        return logit
    if family.activation == "exp":
        log: np.ndarray = np.log(mu)
        return log
    return mu


# ------------------------------------------------------------------- server half


def run_private_newton(ctx: SessionContext, mc: GLMModelConfig, dc: GLMDataConfig) -> None:
    """The private newton workflow (see the module docstring).

    Raises
    ------
    TaskError
        When a client fails (every round needs every silo) or sends malformed statistics.
    """
    privacy = mc.differential_privacy_params
    assert privacy is not None  # run() dispatches here only under DP
    penalty = Penalty(mc.ml_task.params.alpha, mc.ml_task.params.l1_ratio)
    k = 1 + len(dc.predictors)
    rounds = ctx.session.num_rounds
    participants = ctx.wait_for_clients(ctx.session.min_num_clients)
    ctx.log(
        f"newton under differential privacy: {rounds} noisy rounds (IRLS start, then Newton "
        "steps), no line search or early stop"
    )
    beta = np.zeros(k)
    spent: dict[str, float] = {}
    metrics: dict[str, float] = {}
    checkpoint = ctx.restore()
    start = 1
    if checkpoint is not None:
        if checkpoint.meta.get("kind") != _CHECKPOINT_KIND:
            raise TaskError(
                f"The checkpoint of round {checkpoint.round} was not written by the private "
                "glm newton workflow; cannot resume from it."
            )
        beta = np.asarray(checkpoint.arrays["beta"], dtype=np.float64)
        spent = dict(checkpoint.meta.get(_SPENT) or {})
        metrics = dict(checkpoint.meta.get("metrics") or {})
        start = checkpoint.round + 1
    num_rows = sum(p.dataset.train_rows for p in participants)
    for server_round in range(start, rounds + 1):
        stats, noise_std, round_spent = _ask_private_stats(ctx, participants, beta, server_round, k)
        fisher = positive_definite(stats.fisher, noise_spectral_norm(noise_std, k))
        num_rows = stats.num_rows
        beta = newton_point(
            np.zeros(k) if server_round == 1 else beta, replace(stats, fisher=fisher), penalty
        )
        spent.update(round_spent)
        eval_replies = ctx.ask(
            participants,
            "evaluate",
            arrays={"beta": beta},
            meta={"round": server_round},
            round=server_round,
            accept_failures=False,
            min_replies=len(participants),
        )
        metrics = EVALUATE_METRICS(eval_replies)
        per_client = client_metrics(eval_replies)
        for name, epsilon in round_spent.items():
            per_client.setdefault(name, {})["epsilon_spent"] = epsilon
        ctx.record_round(server_round, federated=metrics, per_client=per_client)
        ctx.checkpoint(
            server_round,
            arrays={"beta": beta},
            meta={"kind": _CHECKPOINT_KIND, _SPENT: spent, "metrics": metrics},
        )
    meta: dict[str, Any] = {
        "solver": "newton",
        "round": rounds,
        "rounds": rounds,
        "converged": None,
        "federated_loss": metrics.get("loss"),
        "federated_metrics": metrics,
        "selected_by": "last round (differential privacy: every planned round runs)",
        "num_rows": num_rows,
        "weight_sum": float(num_rows),  # the normaliser the private objective used
        "penalized": penalty.alpha > 0,
        "privacy": {
            "epsilon": privacy.epsilon,
            "max_grad_norm": privacy.max_grad_norm,
            "max_hessian_norm": privacy.hessian_norm,
            "epsilon_spent": spent,
        },
    }
    ctx.save_model({"beta": beta}, meta=meta, round=rounds)


def _ask_private_stats(
    ctx: SessionContext,
    participants: Sequence[Participant],
    beta: np.ndarray,
    server_round: int,
    k: int,
) -> tuple[NewtonStatistics, float, dict[str, float]]:
    """Sum one round's private statistics; also the Fisher noise std of the sum and spending."""
    replies: list[Reply] = ctx.ask(
        participants,
        "newton_stats",
        arrays={"beta": beta},
        meta={
            "round": server_round,
            "num_rounds": ctx.session.num_rounds,
            "start": server_round == 1,
        },
        round=server_round,
        accept_failures=False,
        min_replies=len(participants),
    )
    total: NewtonStatistics | None = None
    variance = 0.0
    spent: dict[str, float] = {}
    for reply in replies:
        name = reply.participant.client_name
        who = f"The newton_stats reply of client {name!r}"
        stats = NewtonStatistics.from_arrays(reply.arrays, k, who=who)
        total = stats if total is None else total + stats
        noise_std = finite_number(reply.meta, "fisher_noise_std")
        epsilon = finite_number(reply.meta, "epsilon_spent")
        if noise_std is None or noise_std <= 0 or epsilon is None:
            raise TaskError(
                f"{who} must carry 'fisher_noise_std' (> 0) and 'epsilon_spent' under "
                "differential privacy."
            )
        variance += noise_std**2
        spent[name] = epsilon
    if total is None:
        raise TaskError("Cannot take a Newton step: no client replied.")
    return total, math.sqrt(variance), spent
