"""The server half of custom packages: the generic round loop, no uploaded code.

The server never imports a package's model.py: it only averages whatever arrays the clients
return, with the session's strategy (:func:`fedsilo.workflows.run_rounds`). The first global
model is one client's seeded initialisation (an ``init`` task); a strategy's
``initial_parameters``, when given, replace it after being checked against that layout.
Federated metrics are pooled from the evaluate replies as ffnet's are: ``loss`` and
``accuracy`` (classification) or ``loss`` and ``r2`` (regression), exact over all the
clients' test rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedsilo.federation import Participant, SessionContext
from fedsilo.packages.custom.config import CustomDataConfig, CustomModelConfig
from fedsilo.strategies import get_strategy
from fedsilo.workflows import PooledMetrics, RoundPlan, Start, ask_initial_arrays, run_rounds

__all__ = ["run"]


def run(
    ctx: SessionContext, model_config: CustomModelConfig, data_config: CustomDataConfig
) -> None:
    """Train the session's custom package over its clients (see the module docstring)."""
    metrics = model_config.reported_metrics()
    strategy = get_strategy(
        model_config.strategy.name,
        model_config.strategy.params,
        evaluate_metrics_aggregation_fn=PooledMetrics(metrics, weight_key="test_num_examples"),
    )

    def start(participants: Sequence[Participant]) -> Start:
        arrays = ask_initial_arrays(ctx, participants)
        if strategy.params.initial_parameters is not None:
            return Start(strategy.initial_arrays(arrays))
        return Start(arrays)

    run_rounds(
        ctx,
        RoundPlan(
            strategy=strategy,
            start=start,
            seed=model_config.seed,
            fit_meta={"local_epochs": model_config.local_epochs},
            privacy=model_config.differential_privacy_params,
        ),
    )
