"""The gbm package's model_config and data_config.

The model_config takes the seed documentation's GBM tutorial config as written::

    {
      "strategy": {"name": "HistGradientBoosting", "params": {}},
      "model": {"params": {"max_depth": 4, "learning_rate": 0.05, "random_state": 23,
                           "max_bins": 128, "sketch_relative_accuracy": 0.001}},
      "ml_task": {"type": "classification", "params": {}},
      "save_best_model": {"metric": null, "mode": "min"}
    }

``model.params`` also takes ``l2_regularization``, ``min_samples_leaf`` and
``max_leaf_nodes`` (scikit-learn's names and meanings). ``num_rounds`` of the session is the
number of trees. Every level refuses unknown keys, and every error names its field and value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedsilo.config import PositiveInt, PredictorsTargetConfig, Strict

__all__ = ["TASK_METRICS", "GBMDataConfig", "GBMModelConfig"]

#: the federated metrics each task reports per tree (``save_best_model.metric`` picks one)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy", "roc_auc"),
    "regression": ("loss", "r2"),
}


class GBMStrategy(Strict):
    """``strategy``: histogram boosting is the only way gbm combines clients."""

    name: Literal["HistGradientBoosting"] = "HistGradientBoosting"
    params: dict[str, object] = Field(default_factory=dict, max_length=0)


class GBMParams(Strict):
    """``model.params``: scikit-learn's HistGradientBoosting hyperparameters.

    Attributes
    ----------
    max_depth : int >= 1 or None
        Edges from the root to the deepest leaf (None: unlimited).
    learning_rate : float > 0
        Shrinkage multiplying every leaf value.
    random_state : int >= 0
        Accepted for the seed's configs; federated binning and growth are deterministic.
    max_bins : int in [2, 255]
        Most bins per predictor (from the merged quantile sketch).
    sketch_relative_accuracy : float in (0, 0.5)
        ``alpha`` of the DDSketch every client sends in round 0.
    l2_regularization : float >= 0
        ``lambda`` in leaf values ``-G / (H + lambda)`` and in the split gain.
    min_samples_leaf : int >= 1
        Fewest training rows (over all silos) a leaf may hold.
    max_leaf_nodes : int >= 2 or None
        None grows level by level to ``max_depth``; a number grows best-first (largest gain
        first) as scikit-learn does, one split per round.
    """

    max_depth: PositiveInt | None = 4
    learning_rate: float = Field(default=0.1, gt=0.0, allow_inf_nan=False)
    random_state: int = Field(default=23, ge=0)
    max_bins: int = Field(default=255, ge=2, le=255)
    sketch_relative_accuracy: float = Field(default=0.001, gt=0.0, lt=0.5)
    l2_regularization: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    min_samples_leaf: PositiveInt = 20
    max_leaf_nodes: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _bounded(self) -> GBMParams:
        if self.max_depth is None and self.max_leaf_nodes is None:
            raise ValueError(
                "max_depth and max_leaf_nodes cannot both be null: a tree needs a bound"
            )
        return self


class ModelSection(Strict):
    type: Literal["GBM", "gbm"] | None = None
    params: GBMParams = Field(default_factory=GBMParams)


class MLTask(Strict):
    type: Literal["classification", "regression"]
    params: dict[str, object] = Field(default_factory=dict, max_length=0)


class SaveBestModel(Strict):
    """``save_best_model``: the per-tree federated metric that picks how many trees to keep.

    ``metric`` null keeps every tree. ``mode`` defaults to ``min`` for loss, ``max`` otherwise.
    """

    metric: Literal["loss", "accuracy", "roc_auc", "r2"] | None = None
    mode: Literal["min", "max"] | None = None

    def resolved_mode(self) -> Literal["min", "max"]:
        if self.mode is not None:
            return self.mode
        return "min" if self.metric in (None, "loss") else "max"


class GBMModelConfig(Strict):
    """The gbm model_config (see the module docstring)."""

    experiment_name: str = ""
    experiment_description: str = ""
    strategy: GBMStrategy = Field(default_factory=GBMStrategy)
    model: ModelSection = Field(default_factory=ModelSection)
    ml_task: MLTask
    save_best_model: SaveBestModel | None = None

    @model_validator(mode="after")
    def _metric_of_task(self) -> GBMModelConfig:
        best = self.save_best_model
        known = TASK_METRICS[self.ml_task.type]
        if best is not None and best.metric is not None and best.metric not in known:
            raise ValueError(
                f"save_best_model.metric must be one of {', '.join(known)} for "
                f"{self.ml_task.type}. Got {best.metric!r}"
            )
        return self


class GBMDataConfig(PredictorsTargetConfig):
    """Numeric ``predictors`` and a ``target`` (0/1 for classification, a number otherwise)."""
