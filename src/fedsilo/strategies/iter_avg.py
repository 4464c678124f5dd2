"""Unweighted averaging: the seed's ``iter_avg`` fusion (IBM Federated Learning).

The next global model is the plain mean of the clients' models, ``w = (1/K) sum_k w_k``:
every silo counts once whatever its size. Use it when silos should have an equal say (or
when row counts are sensitive and clients report none); FedAvg weighs by rows instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedsilo.federation import Reply
from fedsilo.strategies.aggregation import unit_weight, weighted_average
from fedsilo.strategies.base import Strategy, StrategyParams
from fedsilo.wire import Arrays

__all__ = ["UnweightedAverage", "UnweightedAverageParams"]


class UnweightedAverageParams(StrategyParams):
    """``iter_avg`` takes only the shared parameters (see :class:`StrategyParams`)."""


class UnweightedAverage(Strategy):
    """The unweighted mean of the clients' models (``"iter_avg"``); no state across rounds.

    ``meta["num_examples"]`` is ignored: a client reporting 0 rows still counts once.
    """

    name = "iter_avg"
    params_type = UnweightedAverageParams

    def aggregate_fit(self, server_round: int, current: Arrays, replies: Iterable[Reply]) -> Arrays:
        """The plain mean of the replies' arrays (streamed), in ``current``'s dtypes."""
        return weighted_average(current, replies, weight=unit_weight)
