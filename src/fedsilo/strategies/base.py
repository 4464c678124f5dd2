"""The base every aggregation strategy builds on: paired configure / aggregate hooks.

A strategy decides, each round, which participants train (:meth:`Strategy.configure_fit`), how
their updates become the next global model (:meth:`Strategy.aggregate_fit`) and which
participants evaluate it (:meth:`Strategy.configure_evaluate`). The workflow calls the hooks in
that order; the engine only moves tasks.

State that must survive a server restart (server-side momentum, Adam moments, ...) lives in
arrays so it rides in the session checkpoint: :meth:`Strategy.state_arrays` and
:meth:`Strategy.load_state_arrays`. Plain FedAvg has none.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedsilo.errors import TaskError
from fedsilo.packages.base import Participant, Reply
from fedsilo.wire import Arrays

__all__ = ["Strategy", "StrategyParams", "reply_weight", "weighted_average"]


class StrategyParams(BaseModel):
    """Parameters every strategy shares (the seed's FedAvg names).

    Parameters
    ----------
    fraction_fit : float in [0, 1], default 1.0
        Share of the participants sampled to train each round. The seed defaults to 0.1,
        which suits cross-device federations of thousands of phones; fedsilo sessions are
        cross-silo with a handful of clients, where 0.1 would train on ``min_fit_clients``
        (one) silo per round and waste the others, so every participant trains by default.
    fraction_eval : float in [0, 1], default 1.0
        Share of the participants sampled to evaluate each round (same reasoning).
    min_fit_clients : int >= 1, default 1
        Fewest participants that train in a round; also the fewest successful replies a
        round accepts.
    min_eval_clients : int >= 1, default 1
        Fewest participants that evaluate in a round, and the fewest replies accepted.
    min_available_clients : int >= 1, default 1
        Fewest participants that must have joined before the first round.
    accept_failures : bool, default True
        When True a round goes on without the clients whose task failed (as long as the
        minimum of replies came back); when False one failure fails the session.
    """

    model_config = ConfigDict(extra="forbid")

    fraction_fit: float = Field(default=1.0, ge=0.0, le=1.0)
    fraction_eval: float = Field(default=1.0, ge=0.0, le=1.0)
    min_fit_clients: int = Field(default=1, ge=1)
    min_eval_clients: int = Field(default=1, ge=1)
    min_available_clients: int = Field(default=1, ge=1)
    accept_failures: bool = True


class Strategy(ABC):
    """How a federation samples clients and combines their updates.

    Subclasses set :attr:`name` and :attr:`params_type` and implement :meth:`aggregate_fit`;
    the sampling hooks are shared. Register a new strategy in ``fedsilo.strategies``.

    Parameters
    ----------
    params : StrategyParams
        Validated parameters (an instance of the subclass's :attr:`params_type`).
    """

    #: the name users put in ``model_config["strategy"]["name"]``
    name: ClassVar[str]
    #: the pydantic model of this strategy's ``params``
    params_type: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, params: StrategyParams) -> None:
        self.params = params

    # ------------------------------------------------------------------ sampling

    def num_fit_clients(self, num_available: int) -> int:
        """How many participants train in a round, out of ``num_available``."""
        return _sample_size(num_available, self.params.fraction_fit, self.params.min_fit_clients)

    def num_evaluate_clients(self, num_available: int) -> int:
        """How many participants evaluate in a round, out of ``num_available``."""
        return _sample_size(num_available, self.params.fraction_eval, self.params.min_eval_clients)

    def configure_fit(
        self, rnd: int, participants: Sequence[Participant], rng: np.random.Generator
    ) -> list[Participant]:
        """The participants that train in round ``rnd``.

        Parameters
        ----------
        rnd : int
            The round, starting at 1.
        participants : sequence of Participant
            Everyone available, in join order.
        rng : numpy.random.Generator
            The source of randomness; seed it from the session seed and the round so a
            resumed session samples the same clients again.

        Returns
        -------
        list of Participant
            ``max(floor(fraction_fit * n), min_fit_clients)`` participants, in join order.

        Raises
        ------
        TaskError
            When fewer than ``min_available_clients`` or ``min_fit_clients`` participants
            are available.
        """
        self._check_available(participants, "min_fit_clients", self.params.min_fit_clients)
        return _sample(participants, self.num_fit_clients(len(participants)), rng)

    def configure_evaluate(
        self, rnd: int, participants: Sequence[Participant], rng: np.random.Generator
    ) -> list[Participant]:
        """The participants that evaluate the global model of round ``rnd``.

        Same contract as :meth:`configure_fit`, with ``fraction_eval`` and
        ``min_eval_clients``.
        """
        self._check_available(participants, "min_eval_clients", self.params.min_eval_clients)
        return _sample(participants, self.num_evaluate_clients(len(participants)), rng)

    def _check_available(
        self, participants: Sequence[Participant], field: str, minimum: int
    ) -> None:
        checks = (("min_available_clients", self.params.min_available_clients), (field, minimum))
        for name, needed in checks:
            if len(participants) < needed:
                raise TaskError(
                    f"The {self.name} strategy needs {name}={needed} participants; "
                    f"only {len(participants)} are available."
                )

    # --------------------------------------------------------------- aggregation

    @abstractmethod
    def aggregate_fit(self, rnd: int, current: Arrays, replies: Iterable[Reply]) -> Arrays:
        """The next global model from the current one and the clients' fit replies.

        Parameters
        ----------
        rnd : int
            The round the replies belong to.
        current : dict of str to ndarray
            The global model the clients started from; it fixes the names, shapes and
            dtypes of the result.
        replies : iterable of Reply
            Successful fit replies; ``meta["num_examples"]`` weighs each one. Consumed once,
            so a caller may stream them.

        Returns
        -------
        dict of str to ndarray
            Same names, shapes and dtypes as ``current``.
        """

    # --------------------------------------------------------------------- state

    def state_arrays(self) -> Arrays:
        """State that persists across rounds, as named arrays for the checkpoint."""
        return {}

    def load_state_arrays(self, arrays: Arrays) -> None:
        """Restore what :meth:`state_arrays` returned (after a server restart)."""
        if arrays:
            raise TaskError(
                f"The {self.name} strategy keeps no state across rounds, but the checkpoint "
                f"holds strategy arrays {sorted(arrays)}."
            )


# ------------------------------------------------------------------------- helpers


def _sample_size(num_available: int, fraction: float, minimum: int) -> int:
    # Flower's rule: the floor of the fraction, raised to the minimum, capped by what exists.
    return min(num_available, max(math.floor(fraction * num_available), minimum))


def _sample(
    participants: Sequence[Participant], k: int, rng: np.random.Generator
) -> list[Participant]:
    if k >= len(participants):
        return list(participants)
    chosen = np.sort(rng.choice(len(participants), size=k, replace=False))
    return [participants[int(i)] for i in chosen]


def reply_weight(reply: Reply, key: str = "num_examples") -> float:
    """The aggregation weight a reply declares in ``meta[key]``.

    Raises
    ------
    TaskError
        When the key is missing, not a number, negative or not finite.
    """
    who = reply.participant.client_name
    value: Any = reply.meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskError(
            f"The reply of client {who!r} must carry meta[{key!r}] as a number >= 0. Got {value!r}."
        )
    weight = float(value)
    if not math.isfinite(weight) or weight < 0:
        raise TaskError(
            f"The reply of client {who!r} must carry meta[{key!r}] >= 0. Got {value!r}."
        )
    return weight


def weighted_average(current: Arrays, replies: Iterable[Reply]) -> Arrays:
    """The example-weighted mean of the replies' arrays, computed as a running sum.

    Only one float64 accumulator per array is held, whatever the number of replies, so
    memory stays at about twice the model size instead of N copies.

    Parameters
    ----------
    current : dict of str to ndarray
        Names, shapes and dtypes the result must have.
    replies : iterable of Reply
        Each reply's arrays must match ``current`` name for name and shape for shape.

    Returns
    -------
    dict of str to ndarray
        ``sum_i w_i * x_i / sum_i w_i`` per name, cast back to ``current``'s dtype (integer
        arrays are rounded to the nearest integer first).

    Raises
    ------
    TaskError
        On no replies, a total weight of 0, or arrays that do not match ``current``.
    """
    sums = {name: np.zeros(np.shape(ref), dtype=np.float64) for name, ref in current.items()}
    total = 0.0
    count = 0
    for reply in replies:
        weight = reply_weight(reply)
        _check_arrays(reply, current)
        for name, acc in sums.items():
            # One temporary of one array's size, never a stack of all clients.
            acc += np.multiply(reply.arrays[name], weight, dtype=np.float64)
        total += weight
        count += 1
    if count == 0:
        raise TaskError("Cannot aggregate a round with no replies.")
    if total <= 0:
        raise TaskError(
            f"Cannot aggregate: the {count} replies declare meta['num_examples'] summing to 0."
        )
    result: Arrays = {}
    for name, acc in sums.items():
        acc /= total
        dtype = np.asarray(current[name]).dtype
        if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
            np.rint(acc, out=acc)
        result[name] = acc.astype(dtype, copy=False)
    return result


def _check_arrays(reply: Reply, current: Arrays) -> None:
    who = reply.participant.client_name
    missing = sorted(set(current) - set(reply.arrays))
    unexpected = sorted(set(reply.arrays) - set(current))
    if missing or unexpected:
        raise TaskError(
            f"The reply of client {who!r} does not match the global model: "
            f"missing arrays {missing}, unexpected arrays {unexpected}."
        )
    for name, ref in current.items():
        got = np.shape(reply.arrays[name])
        if got != np.shape(ref):
            raise TaskError(
                f"The reply of client {who!r} has array {name!r} of shape {got}; "
                f"expected {np.shape(ref)}."
            )
