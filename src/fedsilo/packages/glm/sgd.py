"""The glm ``sgd`` solver: a strategy over local SGD epochs, as the seed's GLM tutorial runs it.

The model is the seed's "single-layer neural net with an output activation": a
``Linear(n_features, 1)`` whose output plus the offset is ``eta``, trained on each client by
the shared loop (:func:`fedsilo.training.train_local`) on the batch estimate of the same
objective Newton minimises::

    sum_batch s_i * d_i / 2 / (rows_in_batch * mean_s)  +  alpha * (l1_ratio |w|_1
                                                          + (1 - l1_ratio)/2 |w|^2)

(``mean_s`` the client's mean sample weight, so a full batch gives the client's mean half
deviance). The server combines the clients' coefficients with the configured strategy
(FedAvg, FedAdam, FedProx, ...). The result approaches the Newton fit as rounds, epochs and a
decaying step allow; it is not exact, and no standard errors come with it.

Coefficients travel as the same ``beta`` array Newton uses, so the client's ``evaluate``
task and the export are shared.

Under ``differential_privacy_params`` each client trains with DP-SGD
(:mod:`fedsilo.privacy.dpsgd`), planned over the session's ``num_rounds``; the batch loss is
then the plain mean of ``s_i * d_i / 2`` (not divided by the silo's mean weight, a statistic
of its rows that would tie each row's gradient to the others), the penalty's gradient is
added after the noise, and clients send neither ``train_loss`` nor ``weight_sum``. The start
is zeros (or ``strategy.params.initial_parameters``) instead of the exact target sums, and
the export's ``W`` is the pooled row count.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.errors import TaskError
from fedsilo.federation import SessionContext
from fedsilo.packages.glm.config import GLMDataConfig, GLMModelConfig
from fedsilo.packages.glm.families import Activation, Family
from fedsilo.packages.glm.newton import DesignData, local_statistics
from fedsilo.packages.glm.server import (
    federated_metrics,
    intercept_only_start,
    per_client_metrics,
)
from fedsilo.packages.metrics import finite_number, weighted_mean
from fedsilo.privacy import DPSGDPlan, plan_dpsgd
from fedsilo.privacy.ledger import ReleaseLedger, privacy_report
from fedsilo.strategies import get_strategy
from fedsilo.training import train_local

__all__ = ["Exp", "LocalSGD", "half_deviance", "inverse_link_module", "run_sgd"]

_GLOBAL = "global/"
_STRATEGY = "strategy/"
_SPENT = "epsilon_spent"


class Exp(nn.Module):
    """``exp`` as a module: the inverse of the log link."""

    def forward(self, eta: torch.Tensor) -> torch.Tensor:
        return torch.exp(eta)


def inverse_link_module(activation: Activation) -> nn.Module:
    """The torch module of an ``output_activation``: Sigmoid, :class:`Exp` or Identity."""
    if activation == "sigmoid":
        return nn.Sigmoid()
    if activation == "exp":
        return Exp()
    return nn.Identity()


def half_deviance(family: Family, y: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """Half the unit deviance per row, in torch (differentiable in ``eta``).

    Parameters
    ----------
    family : Family
    y, eta : torch.Tensor of shape (n_rows,)

    Returns
    -------
    torch.Tensor of shape (n_rows,)
        Equal to ``family.unit_deviance(y, eta) / 2`` (numpy); the terms free of ``eta`` are
        kept so the reported loss is the deviance, not just its gradient.
    """
    if family.task == "logistic":
        return torch.nn.functional.softplus(eta) - y * eta
    if family.activation == "identity":
        return 0.5 * (y - eta) ** 2
    p = family.power
    assert p is not None
    if p == 0.0:
        return 0.5 * (y - torch.exp(eta)) ** 2
    if p == 1.0:
        return torch.exp(eta) - y * eta + torch.xlogy(y, y) - y
    if p == 2.0:
        return eta + y * torch.exp(-eta) - torch.log(y) - 1.0
    y_term = torch.clamp(y, min=0.0) ** (2.0 - p) / ((1.0 - p) * (2.0 - p))
    return (
        y_term - y * torch.exp((1.0 - p) * eta) / (1.0 - p) + torch.exp((2.0 - p) * eta) / (2.0 - p)
    )


class LocalSGD:
    """One client's SGD state: float64 tensors of its rows and a Linear module.

    Parameters
    ----------
    model_config : GLMModelConfig
    family : Family
    data : DesignData
        The client's training rows.
    batch_size : int
    """

    def __init__(
        self, model_config: GLMModelConfig, family: Family, data: DesignData, batch_size: int
    ) -> None:
        self.model_config = model_config
        self.family = family
        self.data = data
        self.batch_size = batch_size
        # torch.tensor copies: the frames' arrays may be read-only (pandas copy-on-write).
        self.x = torch.tensor(data.features, dtype=torch.float64)
        # Offset and weight ride along as extra target columns (train_local indexes both).
        self.y = torch.tensor(
            np.column_stack([data.target, data.offset, data.weight]), dtype=torch.float64
        )
        mean_weight = float(data.weight.mean()) if data.num_rows else 0.0
        self.mean_weight = mean_weight if mean_weight > 0 else 1.0
        self.module = nn.Linear(data.features.shape[1], 1, dtype=torch.float64)
        params = model_config.ml_task.params
        self.l1 = params.alpha * params.l1_ratio
        self.l2 = params.alpha * (1.0 - params.l1_ratio)
        self.privacy: ReleaseLedger[DPSGDPlan] | None = None
        dp = model_config.differential_privacy_params
        if dp is not None:
            self.privacy = ReleaseLedger(
                lambda rounds: plan_dpsgd(
                    dp,
                    n_rows=data.num_rows,
                    batch_size=batch_size,
                    rounds=rounds,
                    local_epochs=model_config.local_epochs,
                )
            )

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch objective (see the module docstring)."""
        eta = outputs[:, 0] + targets[:, 1]
        rows = targets.shape[0]
        data = (targets[:, 2] * half_deviance(self.family, targets[:, 0], eta)).sum() / (
            rows * self.mean_weight
        )
        w = self.module.weight
        return data + self.l1 * w.abs().sum() + 0.5 * self.l2 * (w * w).sum()

    def private_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch objective under DP-SGD: the mean of per-row terms, without the penalty."""
        eta = outputs[:, 0] + targets[:, 1]
        return (targets[:, 2] * half_deviance(self.family, targets[:, 0], eta)).mean()

    def penalty(self) -> torch.Tensor:
        """The elastic-net penalty on the weights (data-free: added after DP-SGD's noise)."""
        w = self.module.weight
        return self.l1 * w.abs().sum() + 0.5 * self.l2 * (w * w).sum()

    def fit(self, meta: dict[str, Any], beta: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """Train from ``beta`` for ``meta["local_epochs"]`` epochs.

        Returns
        -------
        meta : dict
            ``num_examples``, ``weight_sum`` and ``train_loss`` (the family's loss of the
            new coefficients on all training rows).
        beta : ndarray of shape (1 + n_features,)
        """
        from fedsilo.packages.ffnet.client import shuffle_seed

        if self.privacy is not None:
            return self._fit_private(self.privacy, meta, beta)
        rnd = _meta_number(meta, "round", 0)
        epochs = int(_meta_number(meta, "local_epochs", self.model_config.local_epochs, low=1))
        proximal_mu = _meta_number(meta, "proximal_mu", 0.0)
        with torch.no_grad():
            self.module.bias.copy_(torch.as_tensor(beta[:1]))
            self.module.weight.copy_(torch.as_tensor(beta[1:]).reshape(1, -1))
        optimizer = self.model_config.optimizer
        if optimizer is None:  # the config refuses sgd without one
            raise TaskError("The glm sgd solver needs model_config.optimizer.")
        result = train_local(
            self.module,
            self.loss,
            self.x,
            self.y,
            learning_rate=optimizer.params.learning_rate,
            momentum=optimizer.params.momentum,
            epochs=epochs,
            batch_size=self.batch_size,
            generator=torch.Generator().manual_seed(shuffle_seed(self.model_config.seed, int(rnd))),
            proximal_mu=proximal_mu,
        )
        with torch.no_grad():
            new_beta = np.concatenate(
                [self.module.bias.numpy(), self.module.weight.numpy().reshape(-1)]
            ).astype(np.float64)
        stats = local_statistics(self.family, self.data, new_beta)
        loss = (
            self.family.loss_factor() * stats.deviance / stats.weight_sum
            if stats.weight_sum > 0 and math.isfinite(stats.deviance)
            else math.nan
        )
        reply = {
            "num_examples": result.num_examples,
            "weight_sum": stats.weight_sum,
            "train_loss": loss,
        }
        return reply, new_beta

    def _fit_private(
        self, ledger: ReleaseLedger[DPSGDPlan], meta: dict[str, Any], beta: np.ndarray
    ) -> tuple[dict[str, Any], np.ndarray]:
        """``fit`` under DP-SGD: planned for the session, each round released once."""
        plan = ledger.plan(meta)
        rnd = int(_meta_number(meta, "round", 1, low=1))
        released = ledger.replay(plan, rnd)
        if released is not None:
            return released[0], released[1]["beta"]
        epochs = int(_meta_number(meta, "local_epochs", plan.local_epochs, low=1))
        if epochs != plan.local_epochs:
            raise TaskError(
                f"Under differential privacy every round trains model_config.local_epochs = "
                f"{plan.local_epochs} epoch(s), as the budget was planned. Got {epochs}."
            )
        optimizer = self.model_config.optimizer
        if optimizer is None:  # the config refuses sgd without one
            raise TaskError("The glm sgd solver needs model_config.optimizer.")
        with torch.no_grad():
            self.module.bias.copy_(torch.as_tensor(beta[:1]))
            self.module.weight.copy_(torch.as_tensor(beta[1:]).reshape(1, -1))
        result = train_local(
            self.module,
            self.private_loss,
            self.x,
            self.y,
            learning_rate=optimizer.params.learning_rate,
            momentum=optimizer.params.momentum,
            epochs=epochs,
            batch_size=self.batch_size,
            generator=torch.Generator(),  # unused: DP-SGD draws from a secret generator
            proximal_mu=_meta_number(meta, "proximal_mu", 0.0),
            regularizer=self.penalty,
            privacy=plan,
        )
        with torch.no_grad():
            new_beta = np.concatenate(
                [self.module.bias.numpy(), self.module.weight.numpy().reshape(-1)]
            ).astype(np.float64)
        reply = {"num_examples": result.num_examples, **privacy_report(plan, rnd)}
        ledger.record(rnd, reply, {"beta": new_beta})
        return reply, new_beta


def _meta_number(meta: dict[str, Any], key: str, default: float, low: float = 0.0) -> float:
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise TaskError(f"Task meta {key!r} must be a number >= {low:g}. Got {value!r}.")
    return float(value)


# ------------------------------------------------------------------------ workflow


def run_sgd(ctx: SessionContext, mc: GLMModelConfig, dc: GLMDataConfig) -> None:
    """Train the GLM with the configured strategy over local SGD (see the module docstring).

    Round 0 asks every client for its ``target_summary`` (the intercept-only start, unless
    ``strategy.params.initial_parameters`` gives one, and the pooled weight sum the
    scikit-learn export needs). Each round then runs ``fit`` on the strategy's sample,
    aggregates, ``evaluate`` on its evaluation sample, records metrics and checkpoints. The
    last round's model is saved.
    """
    family = mc.family()
    k = 1 + len(dc.predictors)
    strategy = get_strategy(mc.strategy.name, mc.strategy.params)
    params = strategy.params
    needed = max(
        ctx.session.min_num_clients,
        params.min_available_clients,
        params.min_fit_clients,
        params.min_eval_clients,
    )
    participants = ctx.wait_for_clients(needed)
    privacy = mc.differential_privacy_params
    spent: dict[str, float] = {}  # each client's latest epsilon_spent (DP only)
    checkpoint = ctx.restore()
    if checkpoint is not None:
        spent = dict(checkpoint.meta.get(_SPENT) or {})
        weights = {"beta": np.asarray(checkpoint.arrays[_GLOBAL + "beta"], dtype=np.float64)}
        strategy.load_state_arrays(
            {
                n[len(_STRATEGY) :]: a
                for n, a in checkpoint.arrays.items()
                if n.startswith(_STRATEGY)
            }
        )
        weight_sum = float(checkpoint.meta["weight_sum"])
        metrics: dict[str, float] = dict(checkpoint.meta.get("metrics") or {})
        start = checkpoint.round + 1
    elif privacy is not None:
        # No exact target sums under DP: start from zeros, normalise by the row count.
        weight_sum = float(sum(p.dataset.train_rows for p in participants))
        weights = strategy.initial_arrays({"beta": np.zeros(k)})
        metrics = {}
        start = 1
    else:
        beta, weight_sum = intercept_only_start(ctx, participants, family, k)
        weights = strategy.initial_arrays({"beta": beta})
        metrics = {}
        start = 1

    last_round = start - 1
    for rnd in range(start, ctx.session.num_rounds + 1):
        # Seeded by round, not carried over, so a resumed session samples as it would have.
        rng = np.random.default_rng([mc.seed, rnd])
        fit_replies = ctx.ask(
            strategy.configure_fit(rnd, participants, rng),
            "fit",
            arrays=weights,
            meta={
                "round": rnd,
                "local_epochs": mc.local_epochs,
                "num_rounds": ctx.session.num_rounds,  # DP clients plan their budget on it
                **strategy.fit_config(rnd),
            },
            round=rnd,
            accept_failures=params.accept_failures,
            min_replies=params.min_fit_clients,
        )
        round_spent = {
            r.participant.client_name: value
            for r in fit_replies
            if (value := finite_number(r.meta, "epsilon_spent")) is not None
        }
        spent.update(round_spent)
        train_losses = {
            r.participant.client_name: finite_number(r.meta, "train_loss") for r in fit_replies
        }
        train_loss = weighted_mean(fit_replies, "train_loss", "weight_sum")
        weights = strategy.aggregate_fit(rnd, weights, fit_replies)
        del fit_replies
        if not np.all(np.isfinite(weights["beta"])):
            raise TaskError(
                f"Round {rnd} produced non-finite coefficients: SGD diverged. Lower "
                "optimizer.params.learning_rate."
            )
        eval_replies = ctx.ask(
            strategy.configure_evaluate(rnd, participants, rng),
            "evaluate",
            arrays=weights,
            meta={"round": rnd, **strategy.evaluate_config(rnd)},
            round=rnd,
            accept_failures=params.accept_failures,
            min_replies=params.min_eval_clients,
        )
        metrics = federated_metrics(eval_replies)
        if train_loss is not None:
            metrics["train_loss"] = train_loss
        per_client = per_client_metrics(eval_replies)
        for name, value in train_losses.items():
            if value is not None:
                per_client.setdefault(name, {})["train_loss"] = value
        for name, epsilon in round_spent.items():
            per_client.setdefault(name, {})["epsilon_spent"] = epsilon
        ctx.record_round(rnd, federated=metrics, per_client=per_client)
        ctx.checkpoint(
            rnd,
            arrays={
                _GLOBAL + "beta": weights["beta"],
                **{_STRATEGY + n: a for n, a in strategy.state_arrays().items()},
            },
            meta={"weight_sum": weight_sum, "metrics": metrics, _SPENT: spent},
        )
        last_round = rnd
    meta: dict[str, Any] = {
        "solver": "sgd",
        "round": last_round,
        "rounds": last_round,
        "converged": None,
        "federated_loss": metrics.get("loss"),
        "federated_metrics": metrics,
        "selected_by": "last round",
        "weight_sum": weight_sum,
        "penalized": mc.ml_task.params.alpha > 0,
    }
    if privacy is not None:
        meta["privacy"] = {
            "epsilon": privacy.epsilon,
            "max_grad_norm": privacy.max_grad_norm,
            "epsilon_spent": spent,
        }
    ctx.save_model({"beta": weights["beta"]}, meta=meta, round=last_round)
