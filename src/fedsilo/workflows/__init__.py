"""Server-side workflow building blocks shared by the model packages.

* :mod:`fedsilo.workflows.rounds` -- the strategy-driven round loop of horizontal federated
  learning (:func:`run_rounds`), which ffnet and glm's ``sgd`` solver run;
* :mod:`fedsilo.workflows.secure` -- a round's fit under secure aggregation (the server
  decodes only the weighted mean of the updates), which the round loop runs when
  ``model_config["secure_aggregation"]["enabled"]``;
* :mod:`fedsilo.workflows.deferred` -- a round's evaluation carried by the next round's fit;
* :mod:`fedsilo.workflows.tasks` -- a group's replies under a failure policy, the first model;
* :mod:`fedsilo.workflows.metrics` -- pooled federated metrics, reduced by metric name;
* :mod:`fedsilo.workflows.selection` -- best-model selection across rounds.

Nothing here imports a deep-learning framework: the server runs these workflows with numpy.
"""

from fedsilo.workflows.metrics import PooledMetrics, WeightedMean, client_metrics
from fedsilo.workflows.rounds import RoundPlan, RoundsResult, Start, run_rounds
from fedsilo.workflows.selection import SELECTION_KEYS, BestModel
from fedsilo.workflows.tasks import ask_initial_arrays, stream

__all__ = [
    "SELECTION_KEYS",
    "BestModel",
    "PooledMetrics",
    "RoundPlan",
    "RoundsResult",
    "Start",
    "WeightedMean",
    "ask_initial_arrays",
    "client_metrics",
    "run_rounds",
    "stream",
]
