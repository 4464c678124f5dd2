"""The server half of ffnet: the federated training workflow, on the shared round loop.

Each round the strategy samples clients, they ``fit`` from the global weights, the strategy
aggregates their models as the replies stream in, a sample of clients ``evaluate`` the new
global model, and the round's metrics and a checkpoint are persisted; after the last round
the best (per ``save_best_model``) or the last model is saved
(:func:`fedsilo.workflows.run_rounds`). The first global model is the strategy's
``initial_parameters`` when set, else one client's seeded initialisation (an ``init``
task): the server never builds the network, so it never imports torch.

Federated metrics (``ctx.record_round``), from the evaluate replies
(:class:`fedsilo.workflows.PooledMetrics`, weighted by ``test_num_examples``):

* ``loss`` -- the exact pooled mean loss over all the clients' test rows;
* ``accuracy`` -- likewise the exact pooled accuracy;
* ``roc_auc_client_mean`` -- test-example-weighted mean of the clients' AUCs. This is *not*
  the AUC of the pooled test rows (an AUC ranks all scores together, which would need the
  scores themselves), hence the name. ``save_best_model.metric = "roc_auc"`` selects on it;
* ``r2`` -- the pooled R^2, exact: clients send their test SSE and their target's mean and
  sum of squared deviations, which combine (Chan et al.) into the pooled total sum of squares;
* ``train_loss`` -- example-weighted mean of the fit replies' ``train_loss`` (absent under
  differential privacy, where clients do not release it).

Under ``differential_privacy_params`` each fitting client's per-client metrics carry
``epsilon_spent`` (its budget used after the round), and the saved model's meta a
``privacy`` entry with the budget and every client's final ``epsilon_spent``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedsilo.federation import Participant, SessionContext
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig, check_consistency
from fedsilo.strategies import get_strategy
from fedsilo.wire import Arrays
from fedsilo.workflows import PooledMetrics, RoundPlan, Start, ask_initial_arrays, run_rounds

__all__ = ["model_template", "run"]


def run(ctx: SessionContext, model_config: FFNetModelConfig, data_config: FFNetDataConfig) -> None:
    """Train an ffnet model over the session's clients; see the module docstring.

    Raises
    ------
    ConfigError
        When the configs disagree, or ``initial_parameters`` do not fit the network (checked
        before any client is asked anything).
    TaskError
        When a round cannot go on (too many failed clients, malformed replies).
    """
    check_consistency(model_config, data_config)
    metrics: tuple[str, ...] = ("loss", "accuracy", "roc_auc_client_mean")
    if model_config.ml_task.type == "regression" and "r2" in model_config.reported_metrics():
        metrics += ("r2",)
    strategy = get_strategy(
        model_config.strategy.name,
        model_config.strategy.params,
        evaluate_metrics_aggregation_fn=PooledMetrics(metrics, weight_key="test_num_examples"),
    )
    template = model_template(model_config)
    # Checked before waiting, so a bad initial_parameters fails the session at once.
    given = strategy.initial_arrays(template)
    explicit = strategy.params.initial_parameters is not None

    def start(participants: Sequence[Participant]) -> Start:
        if explicit:
            return Start(given)
        return Start(ask_initial_arrays(ctx, participants, template))

    best = model_config.save_best_model
    run_rounds(
        ctx,
        RoundPlan(
            strategy=strategy,
            start=start,
            seed=model_config.seed,
            fit_meta={"local_epochs": model_config.local_epochs},
            save_best_metric=best.metric if best is not None else None,
            save_best_mode=best.resolved_mode() if best is not None else "min",
            privacy=model_config.differential_privacy_params,
            # The executor's fit evaluates the received weights first when asked: a round
            # costs one exchange instead of two.
            fit_evaluates=True,
        ),
    )


def model_template(model_config: FFNetModelConfig) -> Arrays:
    """Zeros in the names, shapes and dtype (float32) of the network's ``state_dict``.

    The layout of :func:`fedsilo.packages.ffnet.model.build_module` (``hidden<i>.weight`` of
    shape (width, fan_in), ``hidden<i>.bias``, ..., ``output.*``), computed without torch.
    """
    params = model_config.model.params
    arrays: Arrays = {}
    width = params.input_size
    layers = [(f"hidden{i}", size) for i, size in enumerate(params.hidden_layer_sizes)]
    for name, size in [*layers, ("output", params.output_size)]:
        arrays[f"{name}.weight"] = np.zeros((size, width), dtype=np.float32)
        arrays[f"{name}.bias"] = np.zeros(size, dtype=np.float32)
        width = size
    return arrays
