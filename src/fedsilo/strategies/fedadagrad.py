"""FedAdagrad (Reddi et al. 2021, https://arxiv.org/abs/2003.00295): Adagrad on the server.

Algorithm 2 (see :mod:`fedsilo.strategies.fedopt`) with Adagrad's second moment, the running
sum of squared pseudo-gradients::

    v_t = v_{t-1} + Delta_t^2

so each coordinate's step shrinks as its updates accumulate. There is no ``beta_2``; the
seed's defaults are ``eta = 0.1``, ``beta_1 = 0`` (plain Adagrad has no momentum),
``tau = 1e-3``.
"""

from __future__ import annotations

import numpy as np

from fedsilo.strategies.fedopt import AdaptiveParams, FedOptBase

__all__ = ["FedAdagrad", "FedAdagradParams"]


class FedAdagradParams(AdaptiveParams):
    """The adaptive parameters ``eta``, ``beta_1``, ``tau`` (see :class:`AdaptiveParams`)."""


class FedAdagrad(FedOptBase):
    """Adaptive server optimizer with Adagrad's accumulated second moment."""

    name = "FedAdagrad"
    params_type = FedAdagradParams
    params: FedAdagradParams

    def update_second_moment(self, v: np.ndarray, delta_squared: np.ndarray) -> None:
        """``v_t = v_{t-1} + Delta_t^2``."""
        v += delta_squared
