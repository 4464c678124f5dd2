"""Server half of ``arrays``: the shared round loop over arrays the clients' code defines.

The server never knows the model: the first global model is one client's ``get_parameters``
(an ``init`` task, as Flower asks one client), or the strategy's ``initial_parameters``
checked against that client's names, shapes and dtypes. Every round then runs
:func:`fedsilo.workflows.run_rounds` with the session's strategy -- any of
:mod:`fedsilo.strategies` -- so sampling (``fraction_fit``), failure policy, checkpoints and
restarts are those of every other training package.

Federated metrics: every ``test_<name>`` the clients' ``evaluate`` reports pools into
``<name>``, the mean weighted by the clients' ``test_num_examples`` (exactly the pooled mean
for means such as loss and accuracy; for any other metric the weighted client mean).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fedsilo.federation import Participant, Reply, SessionContext
from fedsilo.packages.arrays.config import ArraysDataConfig, ArraysModelConfig
from fedsilo.packages.arrays.driver import serve_driver
from fedsilo.strategies import get_strategy
from fedsilo.workflows import RoundPlan, Start, ask_initial_arrays, run_rounds
from fedsilo.workflows.metrics import STATISTIC_KEYS, WeightedMean

__all__ = ["PoolEveryMetric", "run"]

_TEST = "test_"
_WEIGHT = "test_num_examples"


class PoolEveryMetric:
    """Pools every ``test_<name>`` of a round's evaluate replies into ``<name>``, weighted by
    ``test_num_examples`` (the strategy's ``evaluate_metrics_aggregation_fn``)."""

    def __call__(self, replies: Iterable[Reply]) -> dict[str, float]:
        means: dict[str, WeightedMean] = {}
        for reply in replies:
            for key in reply.meta:
                if key.startswith(_TEST) and key != _WEIGHT and key not in STATISTIC_KEYS:
                    means.setdefault(key, WeightedMean(key, _WEIGHT)).add(reply)
        return {
            key[len(_TEST) :]: value
            for key, mean in means.items()
            if (value := mean.result()) is not None
        }


def run(
    ctx: SessionContext, model_config: ArraysModelConfig, data_config: ArraysDataConfig
) -> None:
    """Train the clients' own model over the session's rounds; see the module docstring.

    Raises
    ------
    TaskError
        When the init client fails or its arrays do not match ``initial_parameters``, or a
        round cannot go on.
    ConfigError
        When ``initial_parameters`` names arrays the clients' model does not have.
    """
    if model_config.driver:
        serve_driver(ctx)
        return
    strategy = get_strategy(
        model_config.strategy.name,
        model_config.strategy.params,
        evaluate_metrics_aggregation_fn=PoolEveryMetric(),
    )

    def start(participants: Sequence[Participant]) -> Start:
        # Asked even with initial_parameters: the client's layout fixes names, shapes and
        # dtypes, so a JSON initial model is cast to them (a reply must match its task).
        template = ask_initial_arrays(ctx, participants)
        return Start(strategy.initial_arrays(template))

    run_rounds(
        ctx,
        RoundPlan(
            strategy=strategy,
            start=start,
            seed=model_config.seed,
            fit_meta={"local_epochs": model_config.local_epochs},
            model_meta={"strategy": model_config.strategy.name},
        ),
    )
