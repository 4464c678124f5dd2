"""Aggregation strategies, one per module, registered by name in :data:`STRATEGIES`.

Every strategy derives from :class:`Strategy` (``strategies/base.py``) and is built from the
``{"name": ..., "params": {...}}`` block of a model_config by :func:`get_strategy`.

============= ==========================================================================
name          what the server does with the clients' models
============= ==========================================================================
FedAvg        example-weighted mean (McMahan et al. 2017)
FedAvgM       FedAvg plus a server momentum step (Hsu et al. 2019)
FedOpt        adaptive server step, Algorithm 2 of Reddi et al. 2021 (EMA second moment)
FedAdam       FedOpt with Adam's second moment and defaults
FedAdagrad    FedOpt with Adagrad's accumulated second moment
FedYogi       FedOpt with Yogi's second moment
FedProx       FedAvg; clients add the proximal term (mu/2)||w - w_t||^2 (Li et al. 2020)
iter_avg      unweighted mean, every client counts once (IBM FL's ``iter_avg``)
FedMedian     coordinate-wise median, for silos not all trusted (``robust.py``)
FedTrimmedAvg coordinate-wise ``beta``-trimmed mean (``robust.py``)
FedClippedAvg FedAvg of updates clipped to ``clip_norm`` (``robust.py``)
============= ==========================================================================

Names are matched case-insensitively (seed 002's ``fedavg`` is FedAvg) and normalised to
the spelling above by :func:`canonical_strategy_name`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from fedsilo.errors import ConfigError
from fedsilo.strategies.base import (
    PARAMETER_ALIASES,
    ConfigFn,
    EvaluateFn,
    MetricsAggregationFn,
    Strategy,
    StrategyParams,
)
from fedsilo.strategies.fedadagrad import FedAdagrad, FedAdagradParams
from fedsilo.strategies.fedadam import FedAdam, FedAdamParams
from fedsilo.strategies.fedavg import FedAvg, FedAvgParams
from fedsilo.strategies.fedavgm import FedAvgM, FedAvgMParams
from fedsilo.strategies.fedopt import AdaptiveParams, FedOpt, FedOptBase, FedOptParams
from fedsilo.strategies.fedprox import FedProx, FedProxParams
from fedsilo.strategies.fedyogi import FedYogi, FedYogiParams
from fedsilo.strategies.iter_avg import UnweightedAverage, UnweightedAverageParams
from fedsilo.strategies.robust import (
    FedClippedAvg,
    FedClippedAvgParams,
    FedMedian,
    FedMedianParams,
    FedTrimmedAvg,
    FedTrimmedAvgParams,
)
from fedsilo.wire import format_validation_error

__all__ = [
    "PARAMETER_ALIASES",
    "STRATEGIES",
    "AdaptiveParams",
    "ConfigFn",
    "EvaluateFn",
    "FedAdagrad",
    "FedAdagradParams",
    "FedAdam",
    "FedAdamParams",
    "FedAvg",
    "FedAvgM",
    "FedAvgMParams",
    "FedAvgParams",
    "FedClippedAvg",
    "FedClippedAvgParams",
    "FedMedian",
    "FedMedianParams",
    "FedOpt",
    "FedOptBase",
    "FedOptParams",
    "FedProx",
    "FedProxParams",
    "FedTrimmedAvg",
    "FedTrimmedAvgParams",
    "FedYogi",
    "FedYogiParams",
    "MetricsAggregationFn",
    "Strategy",
    "StrategyParams",
    "UnweightedAverage",
    "UnweightedAverageParams",
    "canonical_strategy_name",
    "get_strategy",
    "strategy_names",
]

#: strategy name (as users spell it in model_config) -> class
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedAvgM,
        FedOpt,
        FedAdam,
        FedAdagrad,
        FedYogi,
        FedProx,
        UnweightedAverage,
        FedMedian,
        FedTrimmedAvg,
        FedClippedAvg,
    )
}


_BY_LOWER: dict[str, str] = {name.lower(): name for name in STRATEGIES}


def strategy_names() -> list[str]:
    """The registered strategy names, sorted."""
    return sorted(STRATEGIES)


def canonical_strategy_name(name: str) -> str | None:
    """The registered spelling of ``name``, matched case-insensitively; None if unknown.

    >>> canonical_strategy_name("fedavg"), canonical_strategy_name("ITER_AVG")
    ('FedAvg', 'iter_avg')
    """
    return _BY_LOWER.get(name.strip().lower())


def get_strategy(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    on_fit_config_fn: ConfigFn | None = None,
    on_evaluate_config_fn: ConfigFn | None = None,
    evaluate_fn: EvaluateFn | None = None,
    evaluate_metrics_aggregation_fn: MetricsAggregationFn | None = None,
) -> Strategy:
    """The strategy registered as ``name``, built from its ``params`` and per-round hooks.

    Parameters
    ----------
    name : str
        E.g. ``"FedAvg"``, matched case-insensitively (``"fedavg"``, seed 002's spelling).
    params : mapping, optional
        The strategy's parameters; unknown keys are refused.
    on_fit_config_fn, on_evaluate_config_fn, evaluate_fn, evaluate_metrics_aggregation_fn
        The per-round hooks of :class:`Strategy` (Python callables).

    Raises
    ------
    ConfigError
        When the name is unknown (the message lists the known ones) or a parameter is
        invalid (the message names the field and the value).
    """
    canonical = canonical_strategy_name(name)
    cls = STRATEGIES.get(canonical) if canonical is not None else None
    if cls is None:
        known = ", ".join(strategy_names())
        raise ConfigError(f"Unknown strategy name {name!r}. Known strategies: {known}.")
    try:
        validated = cls.params_type.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise ConfigError(
            f"strategy {cls.name!r} params are invalid: {format_validation_error(exc)}"
        ) from exc
    return cls(
        validated,
        on_fit_config_fn=on_fit_config_fn,
        on_evaluate_config_fn=on_evaluate_config_fn,
        evaluate_fn=evaluate_fn,
        evaluate_metrics_aggregation_fn=evaluate_metrics_aggregation_fn,
    )
