"""Best-model selection across rounds (the seed's ``save_best_model``).

:class:`BestModel` follows one federated metric round after round and keeps the round (and,
when given, the arrays) where it scored best; its state rides in the checkpoint meta so a
resumed session selects as an uninterrupted one would. Without a metric the last round wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from fedsilo.errors import TaskError
from fedsilo.wire import Arrays

__all__ = ["SELECTION_KEYS", "BestModel"]

#: ``save_best_model.metric`` (as users write it) -> the federated metric it selects on.
#: ROC AUC does not pool (a rank statistic), so "roc_auc" selects on the clients' mean.
SELECTION_KEYS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "roc_auc": "roc_auc_client_mean",
    "r2": "r2",
}


class BestModel:
    """The round whose federated ``metric`` was best so far, and the last round.

    Parameters
    ----------
    metric : str or None
        A ``save_best_model.metric`` name (see :data:`SELECTION_KEYS`); None keeps the last
        round.
    mode : {"min", "max"}
    """

    def __init__(self, metric: str | None, mode: Literal["min", "max"] = "min") -> None:
        self.metric = metric
        self.mode = mode
        self.key = SELECTION_KEYS.get(metric or "")
        self.best_round: int | None = None
        self.best_value: float | None = None
        self.best_metrics: dict[str, float] = {}
        self.arrays: Arrays = {}
        self.last_round: int | None = None
        self.last_metrics: dict[str, float] = {}

    def update(
        self, server_round: int, federated: Mapping[str, float], arrays: Arrays | None = None
    ) -> bool:
        """Consider round ``server_round``; return whether it is the new best.

        ``arrays`` (the round's global model) are copied when the round wins; a workflow
        that can rebuild the model from the round number (gbm's tree prefix) passes none.
        """
        self.last_round, self.last_metrics = server_round, dict(federated)
        if self.key is None:
            return False
        value = federated.get(self.key)
        if value is None or not math.isfinite(value):
            return False  # an undefined metric never wins
        better = self.best_value is None or (
            value < self.best_value if self.mode == "min" else value > self.best_value
        )
        if better:
            self.best_round, self.best_value = server_round, value
            self.best_metrics = dict(federated)
            self.arrays = {k: v.copy() for k, v in (arrays or {}).items()}
        return better

    def selected(self, last_round: int) -> tuple[int, dict[str, float], str]:
        """``(round, its federated metrics, how it was selected)`` of the model to save."""
        if self.best_round is not None:
            return self.best_round, self.best_metrics, f"best {self.metric} ({self.mode})"
        return self.last_round or last_round, self.last_metrics, "last round"

    def meta(self) -> dict[str, Any]:
        """The state to keep in a checkpoint's meta (JSON)."""
        return {
            "best_round": self.best_round,
            "best_value": self.best_value,
            "best_metrics": self.best_metrics,
            "selected_by_metric": self.metric,
            "mode": self.mode,
            "last_round": self.last_round,
            "last_metrics": self.last_metrics,
        }

    def restore(self, meta: Mapping[str, Any], arrays: Arrays | None = None) -> None:
        """Take back the state of :meth:`meta` (and the best arrays) after a restart.

        Raises
        ------
        TaskError
            When arrays are expected (``arrays`` is not None) but the checkpoint names a
            best round without holding them.
        """
        self.best_round = meta.get("best_round")
        self.best_value = meta.get("best_value")
        self.best_metrics = dict(meta.get("best_metrics") or {})
        self.last_round = meta.get("last_round")
        self.last_metrics = dict(meta.get("last_metrics") or {})
        self.arrays = dict(arrays or {})
        if arrays is not None and self.best_round is not None and not arrays:
            raise TaskError(
                f"The checkpoint names round {self.best_round} as the best model but holds "
                "no 'best/' arrays; it is incomplete."
            )
