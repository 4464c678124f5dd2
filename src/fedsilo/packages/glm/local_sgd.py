"""The client half of glm's ``sgd`` solver: local epochs on a silo's rows (torch).

The model is the seed's "single-layer neural net with an output activation": a
``Linear(n_features, 1)`` whose output plus the offset is ``eta``, trained by the shared loop
(:func:`fedsilo.training.train_local`) on the batch estimate of the objective Newton
minimises (see :mod:`fedsilo.packages.glm.sgd` for the objective and the workflow), with
the model_config's ``optimizer`` (:func:`fedsilo.training.build_optimizer`). Under
``differential_privacy_params`` it trains with DP-SGD (:mod:`fedsilo.privacy.dpsgd`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.errors import TaskError
from fedsilo.packages.glm.config import GLMActivation, GLMModelConfig
from fedsilo.packages.glm.tanh import GLMFamily
from fedsilo.privacy import DPSGDPlan, plan_dpsgd
from fedsilo.privacy.ledger import ReleaseLedger, privacy_report
from fedsilo.regression.families import Family
from fedsilo.regression.newton import DesignData, local_statistics
from fedsilo.training import LocalTrainingResult, shuffle_seed, train_local

__all__ = ["Exp", "LocalSGD", "half_deviance", "inverse_link_module"]


class Exp(nn.Module):
    """``exp`` as a module: the inverse of the log link."""

    def forward(self, eta: torch.Tensor) -> torch.Tensor:
        return torch.exp(eta)


def inverse_link_module(activation: GLMActivation) -> nn.Module:
    """The torch module of an ``output_activation``: Sigmoid, :class:`Exp`, Tanh or
    Identity."""
    if activation == "sigmoid":
        return nn.Sigmoid()
    if activation == "tanh":
        return nn.Tanh()
    if activation == "exp":
        return Exp()
    return nn.Identity()


def half_deviance(family: GLMFamily, y: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
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
    if family.activation == "tanh":
        return 0.5 * (y - torch.tanh(eta)) ** 2
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
    family : Family or TanhOutput
    data : DesignData
        The client's training rows.
    batch_size : int
    """

    def __init__(
        self, model_config: GLMModelConfig, family: GLMFamily, data: DesignData, batch_size: int
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
        if self.privacy is not None:
            return self._fit_private(self.privacy, meta, beta)
        server_round = _meta_number(meta, "round", 0)
        epochs = int(_meta_number(meta, "local_epochs", self.model_config.local_epochs, low=1))
        proximal_mu = _meta_number(meta, "proximal_mu", 0.0)
        result, new_beta = self._train(
            beta,
            self.loss,
            epochs,
            generator=torch.Generator().manual_seed(
                shuffle_seed(self.model_config.seed, int(server_round))
            ),
            proximal_mu=proximal_mu,
        )
        deviance, weight_sum = self._deviance(new_beta)
        loss = (
            self.family.loss_factor() * deviance / weight_sum
            if weight_sum > 0 and math.isfinite(deviance)
            else math.nan
        )
        reply = {
            "num_examples": result.num_examples,
            "weight_sum": weight_sum,
            "train_loss": loss,
        }
        return reply, new_beta

    def _deviance(self, beta: np.ndarray) -> tuple[float, float]:
        """The weighted deviance of ``beta`` on the training rows, and the weight sum."""
        if isinstance(self.family, Family):
            stats = local_statistics(self.family, self.data, beta)
            return stats.deviance, stats.weight_sum
        deviance = self.family.unit_deviance(self.data.target, self.data.linear_predictor(beta))
        return float(np.dot(self.data.weight, deviance)), float(self.data.weight.sum())

    def _fit_private(
        self, ledger: ReleaseLedger[DPSGDPlan], meta: dict[str, Any], beta: np.ndarray
    ) -> tuple[dict[str, Any], np.ndarray]:
        """``fit`` under DP-SGD: planned for the session, each round released once.

        A repeated identical ``fit`` never gets here: the client's release-once mod
        (:func:`fedsilo.client.mods.release_once`) replays the reply it sent.
        """
        plan = ledger.plan(meta)
        server_round = int(_meta_number(meta, "round", 1, low=1))
        ledger.admit(plan, server_round)
        epochs = int(_meta_number(meta, "local_epochs", plan.local_epochs, low=1))
        if epochs != plan.local_epochs:
            raise TaskError(
                f"Under differential privacy every round trains model_config.local_epochs = "
                f"{plan.local_epochs} epoch(s), as the budget was planned. Got {epochs}."
            )
        result, new_beta = self._train(
            beta,
            self.private_loss,
            epochs,
            generator=torch.Generator(),  # unused: DP-SGD draws from a secret generator
            proximal_mu=_meta_number(meta, "proximal_mu", 0.0),
            regularizer=self.penalty,
            privacy=plan,
        )
        reply = {"num_examples": result.num_examples, **privacy_report(plan, server_round)}
        ledger.mark_released(server_round)
        return reply, new_beta

    def _train(
        self,
        beta: np.ndarray,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        epochs: int,
        **options: Any,
    ) -> tuple[LocalTrainingResult, np.ndarray]:
        """Load ``beta``, run :func:`train_local` with ``options``, return the new ``beta``."""
        optimizer = self.model_config.optimizer
        if optimizer is None:  # the config refuses sgd without one
            raise TaskError("The glm sgd solver needs model_config.optimizer.")
        with torch.no_grad():
            self.module.bias.copy_(torch.as_tensor(beta[:1]))
            self.module.weight.copy_(torch.as_tensor(beta[1:]).reshape(1, -1))
        result = train_local(
            self.module,
            loss,
            self.x,
            self.y,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=self.batch_size,
            **options,
        )
        with torch.no_grad():
            new_beta = np.concatenate(
                [self.module.bias.numpy(), self.module.weight.numpy().reshape(-1)]
            ).astype(np.float64)
        return result, new_beta


def _meta_number(meta: dict[str, Any], key: str, default: float, low: float = 0.0) -> float:
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise TaskError(f"Task meta {key!r} must be a number >= {low:g}. Got {value!r}.")
    return float(value)
