"""The base every aggregation strategy builds on: paired configure / aggregate hooks.

A strategy decides, each round, which participants train (:meth:`Strategy.configure_fit`) and
what the server sends them besides the weights (:meth:`Strategy.fit_config`), how their updates
become the next global model (:meth:`Strategy.aggregate_fit`), and which participants evaluate
it (:meth:`Strategy.configure_evaluate`, :meth:`Strategy.evaluate_config`), how their
evaluations become the round's federated metrics (:meth:`Strategy.aggregate_evaluate`) and,
optionally, how the server evaluates the new model itself (:meth:`Strategy.evaluate`). The
round loop (:func:`fedsilo.workflows.run_rounds`) calls the hooks in that order; the engine
only moves tasks. :meth:`Strategy.initial_arrays` gives the model of round 1
(``initial_parameters`` when the user set them).

Per-round hooks, with Flower's names and shapes, are keyword arguments of every strategy
(Python callables, so they come from code that builds the strategy, never from a JSON
config): ``on_fit_config_fn(server_round) -> dict`` and ``on_evaluate_config_fn(server_round)
-> dict`` add to the fit and evaluate tasks' meta; ``evaluate_fn(server_round, arrays,
config) -> (loss, metrics) | None`` evaluates the global model on the server;
``evaluate_metrics_aggregation_fn(replies) -> dict`` pools the clients' evaluations
(default: :class:`fedsilo.workflows.metrics.PooledMetrics`).

State that must survive a server restart (server-side momentum, Adam moments, ...) lives in
arrays so it rides in the session checkpoint: :meth:`Strategy.state_arrays` and
:meth:`Strategy.load_state_arrays`. A strategy declares its :attr:`Strategy.state_slots`
(``("m", "v")`` for FedAdam) and keeps one float64 array per slot and floating-point model
array; plain FedAvg has none.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, TypeAlias

import numpy as np
from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import Participant, Reply
from fedsilo.strategies.aggregation import is_trainable, reply_weight, weighted_average
from fedsilo.wire import Arrays

__all__ = [
    "PARAMETER_ALIASES",
    "ConfigFn",
    "EvaluateFn",
    "MetricsAggregationFn",
    "Strategy",
    "StrategyParams",
    "reply_weight",
    "weighted_average",
]

#: ``on_fit_config_fn(server_round) -> dict``: meta added to a round's fit (or evaluate) tasks
ConfigFn: TypeAlias = Callable[[int], Mapping[str, Any]]
#: ``evaluate_fn(server_round, arrays, config) -> (loss, metrics) | None``: server-side
#: evaluation of the global model after round ``server_round``
EvaluateFn: TypeAlias = Callable[
    [int, Arrays, dict[str, Any]], tuple[float, Mapping[str, float]] | None
]
#: ``aggregation_fn(replies) -> federated metrics``: pools the clients' evaluate replies
MetricsAggregationFn: TypeAlias = Callable[[Iterable[Reply]], dict[str, float]]


def _numeric_array(value: Any) -> Any:
    # Parsed once here so a ragged or non-numeric list fails at config time, not in round 1.
    try:
        array = np.asarray(value)
    except ValueError:  # numpy refuses ragged nested lists
        array = np.asarray(None)
    if array.dtype.kind not in "iuf":
        raise PydanticCustomError(
            "initial_parameters",
            "expected a number or a rectangular nested list of numbers",
        )
    if not np.isfinite(array).all():
        raise PydanticCustomError("initial_parameters", "values must be finite")
    return value


InitialArray = Annotated[Any, AfterValidator(_numeric_array)]

#: the seed's parameter names -> Flower's newer names, accepted as aliases
PARAMETER_ALIASES: dict[str, str] = {
    "fraction_eval": "fraction_evaluate",
    "min_eval_clients": "min_evaluate_clients",
}


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
        Share of the participants sampled to evaluate each round (same reasoning). Flower's
        newer name ``fraction_evaluate`` is accepted as an alias.
    min_fit_clients : int >= 1, default 1
        Fewest participants that train in a round; also the fewest successful replies a
        round accepts.
    min_eval_clients : int >= 1, default 1
        Fewest participants that evaluate in a round, and the fewest replies accepted.
        Alias: ``min_evaluate_clients`` (Flower's newer name).
    min_available_clients : int >= 1, default 1
        Fewest participants that must have joined before the first round.
    accept_failures : bool, default True
        When True a round goes on without the clients whose task failed (as long as the
        minimum of replies came back); when False one failure fails the session.
    initial_parameters : dict of str to nested list, optional
        The global model of round 1, one entry per array of the package's model (for ffnet
        the ``state_dict`` names, e.g. ``"hidden0.weight"``), each a number or a nested
        list of numbers of that array's shape. Default: the package's seeded
        initialisation. Named rather than positional (the seed's list of weights) so a
        reordered or missing array is an error naming it, not a silent mix-up.
    """

    # Strict: ``min_fit_clients: true`` or ``"2"`` is an error naming the field, not 1 or 2.
    model_config = ConfigDict(extra="forbid", strict=True)

    fraction_fit: float = Field(default=1.0, ge=0.0, le=1.0)
    fraction_eval: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("fraction_eval", "fraction_evaluate"),
    )
    min_fit_clients: int = Field(default=1, ge=1)
    min_eval_clients: int = Field(
        default=1, ge=1, validation_alias=AliasChoices("min_eval_clients", "min_evaluate_clients")
    )
    min_available_clients: int = Field(default=1, ge=1)
    accept_failures: bool = True
    initial_parameters: dict[str, InitialArray] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for name, alias in PARAMETER_ALIASES.items():
                if name in value and alias in value:
                    raise PydanticCustomError(
                        "strategy_alias",
                        "{name} and {alias} are the same parameter (the seed's name and "
                        "Flower's newer one); give one of them",
                        {"name": name, "alias": alias},
                    )
        return value


class Strategy(ABC):
    """How a federation samples clients and combines their updates.

    Subclasses set :attr:`name` and :attr:`params_type` and implement :meth:`aggregate_fit`;
    the sampling hooks are shared. Register a new strategy in ``fedsilo.strategies``.

    Parameters
    ----------
    params : StrategyParams, optional
        Validated parameters (an instance of the subclass's :attr:`params_type`); its
        defaults when omitted, so ``FedAvg(evaluate_fn=...)`` reads as in Flower.
    on_fit_config_fn : callable(server_round) -> dict, optional
        Extra meta for every fit task of a round (Flower's hook of the same name).
    on_evaluate_config_fn : callable(server_round) -> dict, optional
        Extra meta for every evaluate task of a round, also the ``config`` handed to
        ``evaluate_fn``.
    evaluate_fn : callable(server_round, arrays, config) -> (loss, metrics) or None, optional
        Server-side evaluation of each round's global model (e.g. on a held-out set the
        server owns). None, or a None result, skips it.
    evaluate_metrics_aggregation_fn : callable(replies) -> dict, optional
        Turns a round's evaluate replies into federated metrics. Default:
        :class:`~fedsilo.workflows.metrics.PooledMetrics` over every known metric, weighted
        by ``test_num_examples``.
    """

    #: the name users put in ``model_config["strategy"]["name"]``
    name: ClassVar[str]
    #: the pydantic model of this strategy's ``params``
    params_type: ClassVar[type[StrategyParams]] = StrategyParams
    #: the per-array state kept across rounds (checkpoint keys are ``"<slot>/<array>"``)
    state_slots: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        params: StrategyParams | None = None,
        *,
        on_fit_config_fn: ConfigFn | None = None,
        on_evaluate_config_fn: ConfigFn | None = None,
        evaluate_fn: EvaluateFn | None = None,
        evaluate_metrics_aggregation_fn: MetricsAggregationFn | None = None,
    ) -> None:
        if params is None:
            # Flower's spelling: FedAvg(evaluate_fn=...) takes the defaults of every param.
            params = self.params_type()
        if not isinstance(params, self.params_type):
            raise TypeError(
                f"{type(self).__name__} takes {self.params_type.__name__}, "
                f"not {type(params).__name__}."
            )
        self.params = params
        self.on_fit_config_fn = on_fit_config_fn
        self.on_evaluate_config_fn = on_evaluate_config_fn
        self.evaluate_fn = evaluate_fn
        if evaluate_metrics_aggregation_fn is None:
            # Imported here: fedsilo.workflows builds on the strategies, not the reverse.
            from fedsilo.workflows.metrics import PooledMetrics

            evaluate_metrics_aggregation_fn = PooledMetrics()
        self.evaluate_metrics_aggregation_fn = evaluate_metrics_aggregation_fn
        # slot -> model array name -> float64 array; empty until the first aggregation
        self._state: dict[str, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------------ sampling

    def num_fit_clients(self, num_available: int) -> int:
        """How many participants train in a round, out of ``num_available``."""
        return _sample_size(num_available, self.params.fraction_fit, self.params.min_fit_clients)

    def num_evaluate_clients(self, num_available: int) -> int:
        """How many participants evaluate in a round, out of ``num_available``."""
        return _sample_size(num_available, self.params.fraction_eval, self.params.min_eval_clients)

    def configure_fit(
        self, server_round: int, participants: Sequence[Participant], rng: np.random.Generator
    ) -> list[Participant]:
        """The participants that train in round ``server_round``.

        Parameters
        ----------
        server_round : int
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
        self, server_round: int, participants: Sequence[Participant], rng: np.random.Generator
    ) -> list[Participant]:
        """The participants that evaluate the global model of round ``server_round``.

        Same contract as :meth:`configure_fit`, with ``fraction_eval`` and
        ``min_eval_clients``.
        """
        self._check_available(participants, "min_eval_clients", self.params.min_eval_clients)
        return _sample(participants, self.num_evaluate_clients(len(participants)), rng)

    def fit_config(self, server_round: int) -> dict[str, Any]:
        """What the server adds to every fit task's meta in round ``server_round`` (JSON-able).

        ``on_fit_config_fn(server_round)`` when given, else empty; FedProx adds
        ``{"proximal_mu": mu}``. The package's client reads the keys it knows.
        """
        return _config(self.on_fit_config_fn, server_round, "on_fit_config_fn")

    def evaluate_config(self, server_round: int) -> dict[str, Any]:
        """What the server adds to every evaluate task's meta in round ``server_round``:
        ``on_evaluate_config_fn(server_round)`` when given, else empty."""
        return _config(self.on_evaluate_config_fn, server_round, "on_evaluate_config_fn")

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Reply]) -> dict[str, float]:
        """The federated metrics of round ``server_round`` from its evaluate replies.

        Parameters
        ----------
        server_round : int
        replies : iterable of Reply
            Successful evaluate replies, consumed once (they may stream in).

        Returns
        -------
        dict of str to float
            What ``evaluate_metrics_aggregation_fn`` makes of them; finite values only.
        """
        return self.evaluate_metrics_aggregation_fn(replies)

    def evaluate(self, server_round: int, arrays: Arrays) -> tuple[float, dict[str, float]] | None:
        """Evaluate the global model of round ``server_round`` on the server.

        Returns
        -------
        (loss, metrics) or None
            ``evaluate_fn(server_round, arrays, evaluate_config(server_round))``; None
            without an ``evaluate_fn`` or when it returns None.
        """
        if self.evaluate_fn is None:
            return None
        result = self.evaluate_fn(server_round, arrays, self.evaluate_config(server_round))
        if result is None:
            return None
        loss, metrics = result
        return float(loss), {name: float(value) for name, value in metrics.items()}

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

    def initial_arrays(self, template: Arrays) -> Arrays:
        """The global model of round 1.

        Parameters
        ----------
        template : dict of str to ndarray
            The package's freshly initialised model; fixes names, shapes and dtypes.

        Returns
        -------
        dict of str to ndarray
            ``initial_parameters`` cast to the template's dtypes when set, else ``template``.

        Raises
        ------
        ConfigError
            When ``initial_parameters`` misses an array of the model, names one it does
            not have, or gives one in the wrong shape.
        """
        given = self.params.initial_parameters
        if given is None:
            return template
        problems = [f"{name!r} is missing" for name in template if name not in given]
        problems += [f"{name!r} is not part of the model" for name in given if name not in template]
        arrays = {name: np.asarray(given[name]) for name in template if name in given}
        for name, array in arrays.items():
            expected = np.shape(template[name])
            if array.shape != expected:
                problems.append(f"{name!r} has shape {array.shape}, expected {expected}")
        if problems:
            raise ConfigError(
                f"strategy.params.initial_parameters does not match the {self.name} "
                f"session's model: {'; '.join(problems)}."
            )
        result: Arrays = {}
        for name, ref in template.items():
            array = arrays[name] if is_trainable(ref) else np.rint(arrays[name])
            result[name] = array.astype(np.asarray(ref).dtype)
        return result

    @abstractmethod
    def aggregate_fit(self, server_round: int, current: Arrays, replies: Iterable[Reply]) -> Arrays:
        """The next global model from the current one and the clients' fit replies.

        Parameters
        ----------
        server_round : int
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
        """State that persists across rounds, as named float64 arrays for the checkpoint.

        Keys are ``"<slot>/<model array name>"``; empty before the first aggregation and
        for strategies without state.
        """
        return {
            f"{slot}/{name}": array.copy()
            for slot, arrays in self._state.items()
            for name, array in arrays.items()
        }

    def load_state_arrays(self, arrays: Arrays) -> None:
        """Restore what :meth:`state_arrays` returned (after a server restart).

        Raises
        ------
        TaskError
            When the arrays are not this strategy's state (unknown slot, a slot missing,
            slots naming different model arrays).
        """
        if not arrays:
            self._state = {}
            return
        if not self.state_slots:
            raise TaskError(
                f"The {self.name} strategy keeps no state across rounds, but the checkpoint "
                f"holds strategy arrays {sorted(arrays)}."
            )
        state: dict[str, dict[str, np.ndarray]] = {}
        for key, array in arrays.items():
            slot, _, name = key.partition("/")
            if slot not in self.state_slots or not name:
                raise TaskError(
                    f"The {self.name} strategy keeps state arrays named '<slot>/<array>' with "
                    f"slot one of {list(self.state_slots)}; the checkpoint holds {key!r}."
                )
            state.setdefault(slot, {})[name] = np.array(array, dtype=np.float64)
        names = {slot: sorted(state.get(slot, {})) for slot in self.state_slots}
        if any(listed != names[self.state_slots[0]] for listed in names.values()):
            raise TaskError(
                f"The {self.name} strategy's checkpointed state is incomplete: arrays per "
                f"slot {names}."
            )
        self._state = state

    def _slot_state(self, slot: str, current: Arrays) -> dict[str, np.ndarray] | None:
        """The ``slot`` arrays, checked against ``current``; None before the first round.

        Raises
        ------
        TaskError
            When the state (e.g. restored from a checkpoint) does not match the model.
        """
        arrays = self._state.get(slot)
        if arrays is None:
            return None
        expected = {name: np.shape(ref) for name, ref in current.items() if is_trainable(ref)}
        got = {name: array.shape for name, array in arrays.items()}
        if got != expected:
            raise TaskError(
                f"The {self.name} strategy's {slot!r} state does not match the global model: "
                f"state shapes {got}, model shapes {expected}."
            )
        return arrays


# ------------------------------------------------------------------------- helpers


def _config(hook: ConfigFn | None, server_round: int, name: str) -> dict[str, Any]:
    if hook is None:
        return {}
    config = hook(server_round)
    if not isinstance(config, Mapping):
        raise TypeError(f"{name} must return a dict of task meta. Got {type(config).__name__}.")
    return dict(config)


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
