"""Aggregation strategies, one per module, registered by name in :data:`STRATEGIES`.

Every strategy derives from :class:`Strategy` (``strategies/base.py``) and is built from the
``{"name": ..., "params": {...}}`` block of a model_config by :func:`get_strategy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from fedsilo.errors import ConfigError
from fedsilo.strategies.base import Strategy, StrategyParams
from fedsilo.strategies.fedavg import FedAvg, FedAvgParams
from fedsilo.wire import format_validation_error

__all__ = [
    "STRATEGIES",
    "FedAvg",
    "FedAvgParams",
    "Strategy",
    "StrategyParams",
    "get_strategy",
    "strategy_names",
]

#: strategy name (as users spell it in model_config) -> class
STRATEGIES: dict[str, type[Strategy]] = {
    FedAvg.name: FedAvg,
}


def strategy_names() -> list[str]:
    return sorted(STRATEGIES)


def get_strategy(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """The strategy registered as ``name``, built from its ``params``.

    Parameters
    ----------
    name : str
        E.g. ``"FedAvg"`` (case-sensitive, as in the seed documentation).
    params : mapping, optional
        The strategy's parameters; unknown keys are refused.

    Raises
    ------
    ConfigError
        When the name is unknown (the message lists the known ones) or a parameter is
        invalid (the message names the field and the value).
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        known = ", ".join(strategy_names())
        raise ConfigError(f"Unknown strategy name {name!r}. Known strategies: {known}.")
    try:
        validated = cls.params_type.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise ConfigError(
            f"strategy {name!r} params are invalid: {format_validation_error(exc)}"
        ) from exc
    return cls(validated)
