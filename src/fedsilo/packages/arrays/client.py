"""Client half of ``arrays``: an executor adapting the user's own client object.

The user's client is a :class:`NumPyClient` (Flower's ``NumPyClient`` shape, any ML library
behind it)::

    get_parameters(config) -> parameters
    fit(parameters, config) -> (parameters, num_examples, metrics)
    evaluate(parameters, config) -> (loss, num_examples, metrics)

``parameters`` is a list of numpy arrays (as in Flower) or a dict of named arrays. On the wire
a list travels as arrays named ``"0"``, ``"1"``, ...; a client receives a list back when every
name is a number, else a dict. The adapter casts what ``fit`` returns to the dtypes it was
sent (a scikit-learn float64 coefficient answers a float64 global model) and refuses another
set of names or shapes with a message naming the array.

Reply meta: ``fit`` -> ``num_examples``, its metrics as ``fit_<name>`` (``train_loss`` as
itself); ``evaluate`` -> ``test_loss``, ``test_num_examples`` and ``test_<name>`` -- the keys
the round loop records per client and the server pools.

The user's object comes from the runtime's ``package_options["client"]``
(:func:`fedsilo.client.start_client` puts it there). Without one, the package's reference
client (:class:`~fedsilo.packages.arrays.reference.LeastSquaresClient`) trains on the bound
table, given the data_config's ``predictors`` and ``target``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, TaskError
from fedsilo.federation import ExecutorContext
from fedsilo.packages.arrays.config import ArraysDataConfig, ArraysModelConfig
from fedsilo.wire import Arrays

__all__ = [
    "CLIENT_OPTION",
    "KINDS",
    "ArraysExecutor",
    "NumPyClient",
    "Parameters",
    "from_parameters",
    "to_parameters",
]

KINDS = ("init", "fit", "evaluate")
#: the ``package_options`` key holding the user's client object
CLIENT_OPTION = "client"

#: what a user's client exchanges: a list of arrays, or a dict of named arrays
Parameters = list[np.ndarray] | dict[str, np.ndarray]


@runtime_checkable
class NumPyClient(Protocol):
    """A user's own client code (see the module docstring)."""

    def get_parameters(self, config: dict[str, Any]) -> Any: ...

    def fit(self, parameters: Any, config: dict[str, Any]) -> tuple[Any, int, dict[str, Any]]: ...

    def evaluate(
        self, parameters: Any, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]: ...


def to_parameters(arrays: Arrays) -> Parameters:
    """Wire arrays as the user's client takes them: a list when every name is a number."""
    if arrays and all(name.isdecimal() for name in arrays):
        return [arrays[name] for name in sorted(arrays, key=int)]
    return dict(arrays)


def from_parameters(value: Any, where: str) -> Arrays:
    """The user's parameters (list or dict of array-likes) as wire arrays.

    Raises
    ------
    TaskError
        When ``value`` is neither, or an entry is not numeric.
    """
    if isinstance(value, Mapping):
        items = [(str(name), array) for name, array in value.items()]
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = [(str(i), array) for i, array in enumerate(value)]
    else:
        raise TaskError(
            f"{where} must return a list of numpy arrays or a dict of named arrays. "
            f"Got {type(value).__name__}."
        )
    arrays: Arrays = {}
    for name, item in items:
        array = np.asarray(item)
        if array.dtype.kind not in "biuf":
            raise TaskError(
                f"{where} returned parameter {name!r} of dtype {array.dtype}; expected numbers."
            )
        arrays[name] = np.ascontiguousarray(array)
    return arrays


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise TaskError(f"{what} must be an integer >= 0. Got {value!r}.")
    return int(value)


def _metrics(value: Any, what: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TaskError(f"{what} must be a dict of numbers. Got {type(value).__name__}.")
    metrics: dict[str, float] = {}
    for name, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float | np.number):
            raise TaskError(f"{what}[{name!r}] must be a number. Got {number!r}.")
        metrics[str(name)] = float(number)
    return metrics


class ArraysExecutor:
    """Serves ``init``, ``fit`` and ``evaluate`` with the user's client object."""

    def __init__(
        self,
        model_config: ArraysModelConfig,
        data_config: ArraysDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> None:
        options = context.package_options if context is not None else {}
        client = options.get(CLIENT_OPTION)
        if client is None:
            if data_config.target is None:
                raise ConfigError(
                    "Sessions of package 'arrays' run the clients' own code: join with "
                    "fedsilo.client.start_client(url, token, session_id, client=MyClient()), "
                    "or set the data_config's predictors and target for the reference client."
                )
            from fedsilo.packages.arrays.reference import LeastSquaresClient

            client = LeastSquaresClient(dataset, data_config)
        missing = [
            m
            for m in ("get_parameters", "fit", "evaluate")
            if not callable(getattr(client, m, None))
        ]
        if missing:
            raise ConfigError(
                f"The client object ({type(client).__name__}) must implement get_parameters, "
                f"fit and evaluate; it lacks {', '.join(missing)}."
            )
        self.client: NumPyClient = client

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        config = dict(meta)
        if kind == "init":
            return {}, from_parameters(self.client.get_parameters(config), "get_parameters")
        if kind == "fit":
            return self._fit(config, arrays)
        if kind == "evaluate":
            return self._evaluate(config, arrays)
        raise TaskError(f"arrays clients handle task kinds {', '.join(KINDS)}; got {kind!r}")

    def _fit(self, config: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        result = self.client.fit(to_parameters(arrays), config)
        if not isinstance(result, tuple | list) or len(result) != 3:
            raise TaskError(
                f"fit must return (parameters, num_examples, metrics). Got {type(result).__name__}."
            )
        parameters, num_examples, metrics = result
        returned = from_parameters(parameters, "fit")
        if set(returned) != set(arrays):
            raise TaskError(
                f"fit returned parameters {sorted(returned)}; the global model has "
                f"{sorted(arrays)}."
            )
        cast: Arrays = {}
        for name, sent in arrays.items():
            array = returned[name]
            if array.shape != sent.shape:
                raise TaskError(
                    f"fit returned parameter {name!r} of shape {array.shape}; the global model's "
                    f"is {sent.shape}."
                )
            cast[name] = np.ascontiguousarray(array, dtype=sent.dtype)
        reply: dict[str, Any] = {"num_examples": _count(num_examples, "fit's num_examples")}
        for name, value in _metrics(metrics, "fit's metrics").items():
            key = name if name == "train_loss" else f"fit_{name}"
            reply[key] = value if math.isfinite(value) else None
        return reply, cast

    def _evaluate(self, config: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        result = self.client.evaluate(to_parameters(arrays), config)
        if not isinstance(result, tuple | list) or len(result) != 3:
            raise TaskError(
                f"evaluate must return (loss, num_examples, metrics). Got {type(result).__name__}."
            )
        loss, num_examples, metrics = result
        if isinstance(loss, bool) or not isinstance(loss, int | float | np.number):
            raise TaskError(f"evaluate's loss must be a number. Got {loss!r}.")
        reply: dict[str, Any] = {
            "test_loss": float(loss) if math.isfinite(float(loss)) else None,
            "test_num_examples": _count(num_examples, "evaluate's num_examples"),
        }
        for name, value in _metrics(metrics, "evaluate's metrics").items():
            # a metric named "loss" or "num_examples" does not replace the returned ones
            reply.setdefault(f"test_{name}", value if math.isfinite(value) else None)
        return reply, {}
