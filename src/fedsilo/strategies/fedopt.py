"""Adaptive federated optimization (Reddi et al. 2021, https://arxiv.org/abs/2003.00295).

The server treats the change the clients propose as a pseudo-gradient and feeds it to an
adaptive optimizer, Algorithm 2 of the paper::

    Delta_t = sum_k n_k x_k / sum_k n_k - x_t              weighted mean of the client models
                                                           minus the current global model
    m_t = beta_1 * m_{t-1} + (1 - beta_1) * Delta_t        m_{-1} = 0
    v_t = second_moment(v_{t-1}, Delta_t^2)                v_{-1} = tau^2
    x_{t+1} = x_t + eta * m_t / (sqrt(v_t) + tau)

elementwise. :class:`FedOptBase` holds this skeleton; FedAdam, FedAdagrad and FedYogi (and
FedOpt itself) differ only in ``second_moment``. The paper allows any ``v_{-1} >= tau^2``; the
smallest is taken. As in the paper there is no bias correction (Flower's FedAdam >= 1.5 adds
one), and the mean is weighted by ``num_examples`` where the paper averages uniformly over
the sampled clients, so that equal weights give the paper's update. The client learning rate
(the paper's ``eta_l``) is the package's own ``optimizer.params.learning_rate``.

Both moments are float64 arrays, one per floating-point model array, checkpointed as
``m/<name>`` and ``v/<name>`` so a resumed session continues bit for bit. Integer arrays take
the rounded mean instead.

:class:`FedOpt` (the name users pick) uses the exponential moving average of Adam,
``v_t = beta_2 v_{t-1} + (1 - beta_2) Delta_t^2``, with the seed's defaults
``beta_1 = beta_2 = 0``: each coordinate then moves by about ``eta * sign(Delta)``
(``eta * Delta / (|Delta| + tau)``), a normalised server step. FedAdam is the same rule with
Adam's defaults.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable

import numpy as np
from pydantic import Field

from fedsilo.federation import Reply
from fedsilo.strategies.aggregation import cast_like, is_trainable, streamed_mean
from fedsilo.strategies.base import Strategy, StrategyParams
from fedsilo.wire import Arrays

__all__ = ["AdaptiveParams", "FedOpt", "FedOptBase", "FedOptParams", "exponential_average"]


class AdaptiveParams(StrategyParams):
    """The shared parameters plus those of every adaptive server optimizer.

    Parameters
    ----------
    eta : float > 0, default 0.1
        Server learning rate.
    beta_1 : float in [0, 1), default 0.0
        Decay of the first moment (server momentum); 0 uses this round's Delta alone.
    tau : float > 0, default 1e-3
        Adaptivity: the floor under ``sqrt(v)``. Smaller means more adaptive steps.
    """

    eta: float = Field(default=0.1, gt=0.0, allow_inf_nan=False)
    beta_1: float = Field(default=0.0, ge=0.0, lt=1.0)
    tau: float = Field(default=1e-3, gt=0.0, allow_inf_nan=False)


class FedOptParams(AdaptiveParams):
    """:class:`AdaptiveParams` plus the second-moment decay.

    Parameters
    ----------
    beta_2 : float in [0, 1), default 0.0
        Decay of the second moment.
    """

    beta_2: float = Field(default=0.0, ge=0.0, lt=1.0)


class FedOptBase(Strategy):
    """Algorithm 2 of Reddi et al.; subclasses implement :meth:`update_second_moment`."""

    params: AdaptiveParams
    state_slots = ("m", "v")

    @abstractmethod
    def update_second_moment(self, v: np.ndarray, delta_squared: np.ndarray) -> None:
        """Turn ``v_{t-1}`` into ``v_t`` in place, given ``Delta_t ** 2`` (float64 arrays)."""

    def aggregate_fit(self, server_round: int, current: Arrays, replies: Iterable[Reply]) -> Arrays:
        """One server optimizer step (see the module docstring), in ``current``'s dtypes."""
        mean = streamed_mean(current, replies)
        p = self.params
        first = self._slot_state("m", current)
        second = self._slot_state("v", current)
        new_first: dict[str, np.ndarray] = {}
        new_second: dict[str, np.ndarray] = {}
        result: dict[str, np.ndarray] = {}
        for name, ref in current.items():
            if not is_trainable(ref):
                result[name] = mean[name]
                continue
            x = np.asarray(ref, dtype=np.float64)
            delta = mean[name] - x
            m = (1.0 - p.beta_1) * delta
            if first is not None:
                m += p.beta_1 * first[name]
            v = np.full(delta.shape, p.tau**2) if second is None else second[name].copy()
            self.update_second_moment(v, delta * delta)
            new_first[name], new_second[name] = m, v
            result[name] = x + p.eta * m / (np.sqrt(v) + p.tau)
        self._state = {"m": new_first, "v": new_second}
        return cast_like(current, result)


def exponential_average(v: np.ndarray, delta_squared: np.ndarray, beta_2: float) -> None:
    """Adam's second moment in place: ``v = beta_2 * v + (1 - beta_2) * Delta^2``."""
    v *= beta_2
    v += (1.0 - beta_2) * delta_squared


class FedOpt(FedOptBase):
    """Algorithm 2 with Adam's exponential second moment and the seed's FedOpt defaults."""

    name = "FedOpt"
    params_type = FedOptParams
    params: FedOptParams

    def update_second_moment(self, v: np.ndarray, delta_squared: np.ndarray) -> None:
        """``v_t = beta_2 v_{t-1} + (1 - beta_2) Delta_t^2``."""
        exponential_average(v, delta_squared, self.params.beta_2)
