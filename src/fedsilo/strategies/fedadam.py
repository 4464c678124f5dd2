"""FedAdam (Reddi et al. 2021, https://arxiv.org/abs/2003.00295): Adam on the server.

Algorithm 2 (see :mod:`fedsilo.strategies.fedopt`) with Adam's second moment::

    v_t = beta_2 * v_{t-1} + (1 - beta_2) * Delta_t^2

and the seed's defaults ``eta = 0.1``, ``beta_1 = 0.9``, ``beta_2 = 0.99``, ``tau = 1e-3``.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from fedsilo.strategies.fedopt import FedOptBase, FedOptParams, exponential_average

__all__ = ["FedAdam", "FedAdamParams"]


class FedAdamParams(FedOptParams):
    """FedOpt's parameters with Adam's defaults (``beta_1 = 0.9``, ``beta_2 = 0.99``)."""

    beta_1: float = Field(default=0.9, ge=0.0, lt=1.0)
    beta_2: float = Field(default=0.99, ge=0.0, lt=1.0)


class FedAdam(FedOptBase):
    """Adaptive server optimizer with Adam's exponentially averaged second moment."""

    name = "FedAdam"
    params_type = FedAdamParams
    params: FedAdamParams

    def update_second_moment(self, v: np.ndarray, delta_squared: np.ndarray) -> None:
        """``v_t = beta_2 v_{t-1} + (1 - beta_2) Delta_t^2``."""
        exponential_average(v, delta_squared, self.params.beta_2)
