"""FedProx (Li et al. 2020, https://arxiv.org/abs/1812.06127).

Clients minimise their local loss plus a proximal term that keeps them near the round's
global model ``w_t``::

    min_w  F_k(w) + (mu / 2) * ||w - w_t||^2

which limits client drift when silos differ (non-IID data, unequal local work). The server
side is FedAvg's weighted mean; the strategy's only job is to send ``proximal_mu`` with every
fit task (:meth:`FedProx.fit_config`). Clients apply it in the shared training loop
(:func:`fedsilo.training.train_local`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fedsilo.strategies.fedavg import FedAvg, FedAvgParams

__all__ = ["FedProx", "FedProxParams"]


class FedProxParams(FedAvgParams):
    """FedAvg's parameters plus the proximal weight.

    Parameters
    ----------
    proximal_mu : float >= 0, required
        ``mu`` of the proximal term. 0 is plain FedAvg; the paper tunes it over
        {0.001, 0.01, 0.1, 1}. Required (as in Flower) because no single value suits every
        model and learning rate.
    """

    proximal_mu: float = Field(ge=0.0, allow_inf_nan=False)


class FedProx(FedAvg):
    """FedAvg aggregation; clients train with the proximal term ``(mu/2)||w - w_t||^2``."""

    name = "FedProx"
    params_type = FedProxParams
    params: FedProxParams

    def fit_config(self, server_round: int) -> dict[str, Any]:
        """``{"proximal_mu": mu}`` (read by the client's training loop) on top of
        ``on_fit_config_fn``'s meta."""
        return {**super().fit_config(server_round), "proximal_mu": self.params.proximal_mu}
