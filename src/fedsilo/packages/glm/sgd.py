"""The glm ``sgd`` solver: a strategy over local epochs, as the seed's GLM tutorial runs it.

The model is the seed's "single-layer neural net with an output activation": a
``Linear(n_features, 1)`` whose output plus the offset is ``eta``, trained on each client by
the shared loop (:func:`fedsilo.training.train_local`, in :mod:`fedsilo.packages.glm.local_sgd`)
with the configured ``torch.optim`` optimizer (the tutorial's SGD with momentum, or any
other) on the batch estimate of the same objective Newton minimises::

    sum_batch s_i * d_i / 2 / (rows_in_batch * mean_s)  +  alpha * (l1_ratio |w|_1
                                                          + (1 - l1_ratio)/2 |w|^2)

(``mean_s`` the client's mean sample weight, so a full batch gives the client's mean half
deviance; for ``output_activation: "tanh"`` ``d_i`` is the squared error of ``tanh(eta)``,
see :mod:`fedsilo.packages.glm.tanh`). The server combines the clients' coefficients with
the configured strategy (FedAvg, FedAdam, FedProx, ...) on the shared round loop
(:func:`fedsilo.workflows.run_rounds`).
The result approaches the Newton fit as rounds, epochs and a decaying step allow; it is not
exact, and no standard errors come with it.

Coefficients travel as the same ``beta`` array Newton uses, so the client's ``evaluate``
task and the export are shared.

Under ``differential_privacy_params`` each client trains with DP-SGD
(:mod:`fedsilo.privacy.dpsgd`), planned over the session's ``num_rounds``; the batch loss is
then the plain mean of ``s_i * d_i / 2`` (not divided by the silo's mean weight, a statistic
of its rows that would tie each row's gradient to the others), the penalty's gradient is
added after the noise, and clients send neither ``train_loss`` nor ``weight_sum``. The start
is zeros (or ``strategy.params.initial_parameters``) instead of the exact target sums, and
the export's ``W`` is the pooled row count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedsilo.federation import Participant, SessionContext
from fedsilo.packages.glm.config import GLMDataConfig, GLMModelConfig
from fedsilo.packages.glm.server import EVALUATE_METRICS, intercept_only_start
from fedsilo.strategies import get_strategy
from fedsilo.workflows import RoundPlan, Start, run_rounds

__all__ = ["run_sgd"]


def run_sgd(ctx: SessionContext, model_config: GLMModelConfig, data_config: GLMDataConfig) -> None:
    """Train the GLM with the configured strategy over local SGD (see the module docstring).

    Round 0 asks every client for its ``target_summary`` (the intercept-only start, unless
    ``strategy.params.initial_parameters`` gives one, and the pooled weight sum the
    scikit-learn export needs) -- except under differential privacy or secure aggregation,
    which start from zeros with the declared row count. The rounds then run on
    :func:`fedsilo.workflows.run_rounds`; the last round's model is saved.
    """
    family = model_config.family()
    k = 1 + len(data_config.predictors)
    strategy = get_strategy(
        model_config.strategy.name,
        model_config.strategy.params,
        evaluate_metrics_aggregation_fn=EVALUATE_METRICS,
    )
    privacy = model_config.differential_privacy_params

    def start(participants: Sequence[Participant]) -> Start:
        if privacy is not None or model_config.secure_aggregation.enabled:
            # No exact target sums under DP, nor under secure aggregation (they would be each
            # silo's own sums, in clear): start from zeros, normalise by the row count.
            weight_sum = float(sum(p.dataset.train_rows for p in participants))
            return Start(strategy.initial_arrays({"beta": np.zeros(k)}), {"weight_sum": weight_sum})
        beta, weight_sum = intercept_only_start(ctx, participants, family, k)
        return Start(strategy.initial_arrays({"beta": beta}), {"weight_sum": weight_sum})

    run_rounds(
        ctx,
        RoundPlan(
            strategy=strategy,
            start=start,
            seed=model_config.seed,
            fit_meta={"local_epochs": model_config.local_epochs},
            train_weight_key="weight_sum",
            privacy=privacy,
            model_meta={
                "solver": "sgd",
                "converged": None,
                "penalized": model_config.ml_task.params.alpha > 0,
            },
        ),
    )
