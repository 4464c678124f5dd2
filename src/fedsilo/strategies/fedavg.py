"""Federated Averaging (McMahan et al. 2017, https://arxiv.org/abs/1602.05629).

The next global model is the mean of the clients' models weighted by how many training
examples each used: ``w = sum_k n_k w_k / sum_k n_k``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from fedsilo.federation import Reply
from fedsilo.strategies.aggregation import weighted_average
from fedsilo.strategies.base import Strategy, StrategyParams
from fedsilo.wire import Arrays

__all__ = ["FedAvg", "FedAvgParams"]


class FedAvgParams(StrategyParams):
    """FedAvg takes only the shared parameters (see :class:`StrategyParams`)."""


class FedAvg(Strategy):
    """Example-weighted averaging of the clients' models; keeps no state across rounds."""

    name = "FedAvg"
    # Annotated so FedProx(FedAvg) may narrow it to its own params.
    params_type: ClassVar[type[StrategyParams]] = FedAvgParams

    def aggregate_fit(self, server_round: int, current: Arrays, replies: Iterable[Reply]) -> Arrays:
        """The ``meta["num_examples"]``-weighted mean of the replies (streamed, see
        :func:`fedsilo.strategies.aggregation.weighted_average`)."""
        return weighted_average(current, replies)
