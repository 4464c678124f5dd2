"""Aggregation for silos that are not all trusted: median, trimmed mean, clipped updates.

FedAvg's mean follows any single client anywhere: one silo that sends its weights times
1000, or a large sign-flipped update, moves the global model by ``w_k / sum w`` of whatever
it sent. These strategies bound that influence:

============= ==========================================================================
name          the next global model
============= ==========================================================================
FedMedian     coordinate-wise median of the client models (Yin et al. 2018,
              https://arxiv.org/abs/1803.01498); each coordinate stays within the
              range of the honest clients' values while fewer than half are poisoned
FedTrimmedAvg coordinate-wise mean after dropping the ``floor(beta * n)`` largest and
              smallest values (Yin et al. 2018); within the honest range while at most
              ``floor(beta * n)`` clients are poisoned
FedClippedAvg FedAvg of the updates ``local - global``, each first scaled down to an L2
              norm of at most ``clip_norm`` over the whole model (as DP-FedAvg clips,
              McMahan et al. 2018, https://arxiv.org/abs/1710.06963), so a client moves
              the model by at most ``w_k / sum w * clip_norm``
============= ==========================================================================

Median and trimmed mean count every client once: a weight by ``num_examples`` would hand the
majority back to whoever declares the most rows. Both take ``clip_norm`` too (clip first, then
take the order statistic). Only floating-point arrays are clipped; integer arrays (BatchNorm's
``num_batches_tracked``) take the same statistic unclipped and are rounded.

Memory: an order statistic needs every value of a coordinate at once, so FedMedian and
FedTrimmedAvg hold the round's replies (the received frames, no copy) and one array name's
``(n_clients, size)`` float64 stack at a time -- about ``n_clients`` models, fine for the
handful of silos of a cross-silo session, not for thousands of clients. FedClippedAvg streams
like FedAvg.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import ClassVar, cast

import numpy as np
from pydantic import Field

from fedsilo.errors import TaskError
from fedsilo.federation import Reply
from fedsilo.strategies.aggregation import cast_like, check_arrays, is_trainable, reply_weight
from fedsilo.strategies.base import Strategy, StrategyParams
from fedsilo.wire import Arrays

__all__ = [
    "FedClippedAvg",
    "FedClippedAvgParams",
    "FedMedian",
    "FedMedianParams",
    "FedTrimmedAvg",
    "FedTrimmedAvgParams",
    "clip_factor",
]


class FedMedianParams(StrategyParams):
    """FedMedian's parameters: the shared ones and

    Parameters
    ----------
    clip_norm : float > 0, optional
        Scale each client's update ``local - global`` to an L2 norm (over every
        floating-point array together) of at most this before the median. Default: no
        clipping.
    """

    clip_norm: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class FedTrimmedAvgParams(FedMedianParams):
    """FedTrimmedAvg's parameters: FedMedian's and

    Parameters
    ----------
    beta : float in [0, 0.5), default 0.2
        Fraction of the clients trimmed from each end of every coordinate: the
        ``floor(beta * n)`` largest and smallest values are dropped (Flower's default 0.2;
        with 5 clients one from each end). 0 is the plain unweighted mean.
    """

    beta: float = Field(default=0.2, ge=0.0, lt=0.5)


class FedClippedAvgParams(StrategyParams):
    """FedClippedAvg's parameters: the shared ones and

    Parameters
    ----------
    clip_norm : float > 0
        The largest L2 norm (over every floating-point array together) a client's update
        ``local - global`` keeps; longer updates are scaled down to it. Required: its scale
        is the model's (a typical honest update's norm, from a trial round, is a good start).
    """

    clip_norm: float = Field(gt=0, allow_inf_nan=False)


def clip_factor(current: Arrays, arrays: Mapping[str, np.ndarray], clip_norm: float) -> float:
    """``min(1, clip_norm / ||arrays - current||)`` over the floating-point arrays.

    Parameters
    ----------
    current : dict of str to ndarray
        The global model the update started from.
    arrays : mapping of str to ndarray
        A client's model, same names and shapes.
    clip_norm : float > 0

    Returns
    -------
    float in (0, 1]
        The scale that brings the update's L2 norm down to ``clip_norm`` (1 when it is
        already within).
    """
    squared = 0.0
    for name, ref in current.items():
        if is_trainable(ref):
            delta = np.subtract(arrays[name], ref, dtype=np.float64)
            squared += float(np.dot(delta.ravel(), delta.ravel()))
    norm = math.sqrt(squared)
    return 1.0 if norm <= clip_norm else clip_norm / norm


class _OrderStatistic(Strategy):
    """A coordinate-wise statistic of the (optionally clipped) client models."""

    def aggregate_fit(self, server_round: int, current: Arrays, replies: Iterable[Reply]) -> Arrays:
        clip_norm: float | None = getattr(self.params, "clip_norm", None)
        held: list[tuple[Mapping[str, np.ndarray], float]] = []
        for reply in replies:
            check_arrays(reply, current)
            factor = 1.0 if clip_norm is None else clip_factor(current, reply.arrays, clip_norm)
            held.append((reply.arrays, factor))  # the frame's views: no copy
            del reply
        if not held:
            raise TaskError("Cannot aggregate a round with no replies.")
        result: dict[str, np.ndarray] = {}
        for name, ref in current.items():
            base = np.asarray(ref, dtype=np.float64)
            stack = np.stack([np.asarray(arrays[name], dtype=np.float64) for arrays, _ in held])
            if clip_norm is not None and is_trainable(ref):
                factors = np.array([f for _, f in held]).reshape((-1,) + (1,) * base.ndim)
                stack = base + (stack - base) * factors
            result[name] = self._statistic(stack)
            del stack
        return cast_like(current, result)

    def _statistic(self, stack: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class FedMedian(_OrderStatistic):
    """The coordinate-wise median of the client models; every client counts once."""

    name = "FedMedian"
    params_type: ClassVar[type[StrategyParams]] = FedMedianParams

    def _statistic(self, stack: np.ndarray) -> np.ndarray:
        return np.asarray(np.median(stack, axis=0))


class FedTrimmedAvg(_OrderStatistic):
    """The coordinate-wise ``beta``-trimmed mean of the client models (``scipy.stats.
    trim_mean`` with ``proportiontocut=beta``); every client counts once."""

    name = "FedTrimmedAvg"
    params_type: ClassVar[type[StrategyParams]] = FedTrimmedAvgParams

    def _statistic(self, stack: np.ndarray) -> np.ndarray:
        params = cast(FedTrimmedAvgParams, self.params)  # checked by Strategy.__init__
        n = stack.shape[0]
        cut = math.floor(params.beta * n)
        if cut == 0:
            return np.asarray(stack.mean(axis=0))
        # A partition, not a sort: only the values at the cut points must be in place.
        ordered = np.partition(stack, (cut, n - cut - 1), axis=0)
        return np.asarray(ordered[cut : n - cut].mean(axis=0))


class FedClippedAvg(Strategy):
    """FedAvg of the clients' updates, each clipped to ``clip_norm`` first; streamed."""

    name = "FedClippedAvg"
    params_type: ClassVar[type[StrategyParams]] = FedClippedAvgParams

    def aggregate_fit(self, server_round: int, current: Arrays, replies: Iterable[Reply]) -> Arrays:
        clip_norm = cast(FedClippedAvgParams, self.params).clip_norm
        bases = {name: np.asarray(ref, dtype=np.float64) for name, ref in current.items()}
        sums = {name: np.zeros_like(base) for name, base in bases.items()}
        total, count = 0.0, 0
        for reply in replies:
            weight = reply_weight(reply)
            check_arrays(reply, current)
            factor = clip_factor(current, reply.arrays, clip_norm)
            for name, acc in sums.items():
                value = np.asarray(reply.arrays[name], dtype=np.float64)
                if is_trainable(current[name]):
                    # the clipped update, so the mean is base + mean of clipped updates
                    acc += weight * factor * (value - bases[name])
                else:
                    acc += weight * value
                del value  # may be the reply's own array (float64 in, no copy)
            total += weight
            count += 1
            del reply
        if count == 0:
            raise TaskError("Cannot aggregate a round with no replies.")
        if total <= 0:
            raise TaskError(
                f"Cannot aggregate: the {count} replies declare meta['num_examples'] summing to 0."
            )
        result = {
            name: (bases[name] + acc / total) if is_trainable(current[name]) else acc / total
            for name, acc in sums.items()
        }
        return cast_like(current, result)
