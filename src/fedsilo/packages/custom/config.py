"""The model_config and data_config of sessions that train an uploaded custom package.

The model_config is the seed's custom model configuration::

    {
      "experiment_name": "digits cnn",
      "strategy": {"name": "FedAvg", "params": {}},
      "model": {"params": {"channels": 8}},          # keyword arguments of the model class
      "ml_task": {"type": "classification", "params": {}},
      "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1}},
      "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 1},   # optional
      "local_epochs": 1,
      "seed": 23
    }

``model.params`` is handed to the model class as keyword arguments (over the defaults of the
package's ``<classname>.json``); the server never looks inside it. The data_config is handed
to the package's ``dataset.py`` class as keyword arguments (over its JSON's defaults); a
package without ``dataset.py`` reads tables with ``{"predictors": [...], "target": "y"}``.

Supported tasks (the seed's list, restricted to what the generic training flow computes):
``classification`` (cross-entropy on logits) and ``regression`` (mean squared error). The
seed's GLM families (logistic, normal, poisson, gamma, inverseGaussian) are refused naming
the ``glm`` package, which fits them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from fedsilo.config import OptimizerConfig, PositiveInt, StrategyConfig, Strict, select_metrics
from fedsilo.federation import DataConfigBase
from fedsilo.privacy.dp import DifferentialPrivacyParams

__all__ = [
    "GLM_TASKS",
    "TASKS",
    "TASK_METRICS",
    "CustomDataConfig",
    "CustomModelConfig",
    "unsupported_task",
]

#: the ml_task types the generic flow trains
TASKS = ("classification", "regression")
#: the seed's GLM families, fitted by the glm package rather than by a custom module
GLM_TASKS = ("logistic", "normal", "poisson", "gamma", "inverseGaussian")
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy"),
    "regression": ("loss", "r2"),
}


def unsupported_task(task: str) -> str | None:
    """Why ``task`` cannot be trained by a custom package, or None when it can."""
    if task in TASKS:
        return None
    if task in GLM_TASKS:
        return (
            f"ml_task {task!r} is a GLM family: train it with package_name 'glm'; custom "
            f"packages support the tasks {', '.join(TASKS)}"
        )
    return (
        f"ml_task {task!r} is not supported: custom packages train with the generic flow "
        f"(forward, loss, backward) and the losses of the tasks {', '.join(TASKS)}; tasks "
        "needing custom losses (segmentation, detection) are not supported"
    )


class ModelSection(Strict):
    """``model``: the keyword arguments of the package's model class."""

    type: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class MLTask(Strict):
    type: Literal["classification", "regression"]
    params: dict[str, Any] = Field(default_factory=dict)


class CustomModelConfig(Strict):
    """The model_config of a custom-package session (see the module docstring)."""

    experiment_name: str = ""
    experiment_description: str = ""
    job_type: Literal["training"] | None = None
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="FedAvg"))
    model: ModelSection = Field(default_factory=ModelSection)
    ml_task: MLTask
    optimizer: OptimizerConfig
    differential_privacy_params: DifferentialPrivacyParams | None = None
    seed: int = Field(default=23, ge=0)
    eval_metrics: list[str] | None = Field(default=None, min_length=1)
    local_epochs: PositiveInt = 1

    @field_validator("ml_task", mode="before")
    @classmethod
    def _task(cls, value: Any) -> Any:
        # The seed writes "ml_task": "classification" as well as the object form.
        value = {"type": value} if isinstance(value, str) else value
        task = value.get("type") if isinstance(value, dict) else None
        if isinstance(task, str) and (problem := unsupported_task(task)) is not None:
            raise ValueError(problem)
        return value

    def reported_metrics(self) -> tuple[str, ...]:
        return select_metrics(TASK_METRICS[self.ml_task.type], self.eval_metrics)


class CustomDataConfig(DataConfigBase):
    """The data_config: keyword arguments of the package's dataset class, or
    ``predictors`` / ``target`` columns for a package that reads tables."""

    model_config = ConfigDict(extra="allow")

    predictors: list[str] | None = None
    target: str | None = None

    def required_columns(self) -> list[str]:
        if self.predictors is None or self.target is None:
            return []
        return [*self.predictors, self.target]

    def dataset_params(self) -> dict[str, Any]:
        """Every key of the data_config, as the dataset class's keyword arguments."""
        return self.model_dump(exclude_none=True)
