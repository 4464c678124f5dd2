"""FedYogi (Reddi et al. 2021, https://arxiv.org/abs/2003.00295): Yogi on the server.

Algorithm 2 (see :mod:`fedsilo.strategies.fedopt`) with Yogi's second moment::

    v_t = v_{t-1} - (1 - beta_2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)

which moves ``v`` toward ``Delta^2`` by a step of fixed size instead of Adam's fraction of
the gap, so a burst of large updates raises it less abruptly. ``v`` stays positive: from
``v_{-1} = tau^2 > 0``, a step down (``v_{t-1} > Delta_t^2``) removes less than
``v_{t-1} - Delta_t^2`` and a step up only adds. Seed defaults: ``eta = 0.1``,
``beta_1 = 0.9``, ``beta_2 = 0.99``, ``tau = 1e-3``.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from fedsilo.strategies.fedopt import FedOptBase, FedOptParams

__all__ = ["FedYogi", "FedYogiParams"]


class FedYogiParams(FedOptParams):
    """FedOpt's parameters with Yogi's defaults (``beta_1 = 0.9``, ``beta_2 = 0.99``)."""

    beta_1: float = Field(default=0.9, ge=0.0, lt=1.0)
    beta_2: float = Field(default=0.99, ge=0.0, lt=1.0)


class FedYogi(FedOptBase):
    """Adaptive server optimizer with Yogi's additive second-moment update."""

    name = "FedYogi"
    params_type = FedYogiParams
    params: FedYogiParams

    def update_second_moment(self, v: np.ndarray, delta_squared: np.ndarray) -> None:
        """``v_t = v_{t-1} - (1 - beta_2) Delta_t^2 sign(v_{t-1} - Delta_t^2)``."""
        v -= (1.0 - self.params.beta_2) * delta_squared * np.sign(v - delta_squared)
