"""Federated Averaging with server momentum (Hsu et al. 2019, https://arxiv.org/abs/1909.06335).

Each round the server treats the gap between its model and the clients' weighted average as
a gradient and takes a heavy-ball (optionally Nesterov) step with it::

    g_t = w_t - sum_k n_k w_k / sum_k n_k          pseudo-gradient
    v_t = beta * v_{t-1} + g_t                     v_0 = 0 (server_momentum = beta)
    d_t = g_t + beta * v_t   if nesterov  else  v_t
    w_{t+1} = w_t - server_learning_rate * d_t

This is ``torch.optim.SGD``'s momentum rule applied to ``g_t``. With the defaults
(``server_learning_rate = 1``, ``server_momentum = 0``) it is exactly FedAvg. Momentum
smooths the direction across rounds, which helps when client updates are noisy or skewed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from fedsilo.federation import Reply
from fedsilo.strategies.aggregation import cast_like, is_trainable, streamed_mean
from fedsilo.strategies.base import Strategy, StrategyParams
from fedsilo.wire import Arrays

__all__ = ["FedAvgM", "FedAvgMParams"]


class FedAvgMParams(StrategyParams):
    """The shared parameters plus the server optimizer's.

    Parameters
    ----------
    server_learning_rate : float > 0, default 1.0
        Step size of the server update; 1.0 with no momentum is vanilla FedAvg.
    server_momentum : float in [0, 1), default 0.0
        Momentum factor ``beta``; 1 or more would let past rounds dominate forever.
    nesterov : bool, default False
        Nesterov momentum; needs ``server_momentum > 0`` (as ``torch.optim.SGD``).
    """

    server_learning_rate: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    server_momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> FedAvgMParams:
        if self.nesterov and self.server_momentum == 0:
            error = PydanticCustomError(
                "nesterov_without_momentum", "nesterov needs server_momentum > 0"
            )
            raise ValidationError.from_exception_data(
                type(self).__name__, [InitErrorDetails(type=error, loc=("nesterov",), input=True)]
            )
        return self


class FedAvgM(Strategy):
    """FedAvg with a momentum step on the server; the momentum rides in the checkpoint."""

    name = "FedAvgM"
    params_type = FedAvgMParams
    params: FedAvgMParams
    state_slots = ("momentum",)

    def aggregate_fit(self, server_round: int, current: Arrays, replies: Iterable[Reply]) -> Arrays:
        """The momentum step from the replies' weighted mean (see the module docstring).

        Integer and bool arrays take the rounded mean (no momentum). Computed in float64,
        returned in ``current``'s dtypes.
        """
        mean = streamed_mean(current, replies)
        lr = self.params.server_learning_rate
        beta = self.params.server_momentum
        velocity = self._slot_state("momentum", current) if beta > 0 else None
        new_velocity: dict[str, np.ndarray] = {}
        result: dict[str, np.ndarray] = {}
        for name, ref in current.items():
            if not is_trainable(ref):
                result[name] = mean[name]
                continue
            weights = np.asarray(ref, dtype=np.float64)
            gradient = weights - mean[name]
            step = gradient
            if beta > 0:
                v = gradient if velocity is None else beta * velocity[name] + gradient
                new_velocity[name] = v
                step = gradient + beta * v if self.params.nesterov else v
            result[name] = weights - lr * step
        if beta > 0:
            self._state = {"momentum": new_velocity}
        return cast_like(current, result)
