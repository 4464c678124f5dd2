"""The ffnet package's model_config and data_config.

The model_config takes the seed documentation's FFNet config as written::

    {
      "experiment_name": "test_synthetic_tabular",
      "experiment_description": "test_synthetic_tabular",
      "strategy": {"name": "FedAvg", "params": {}},
      "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
      "balance_train_datasets": false,
      "ml_task": {"type": "classification", "params": {"loss_weights": null}},
      "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
      "save_best_model": {"metric": "loss", "mode": "min"},
      "seed": 23
    }

Every level refuses unknown keys, so a typo is an error naming it rather than a silently
ignored setting. ``optimizer`` names any ``torch.optim`` optimizer, its ``params`` checked
against that optimizer's parameters (:mod:`fedsilo.config.optimizers`).
``differential_privacy_params`` (``{"epsilon": 4, "max_grad_norm": 7}``, optionally
``"delta"``) trains with DP-SGD; see :mod:`fedsilo.privacy.dp`.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from fedsilo.config import (
    NonNegativeFloat,
    OptimizerConfig,
    PositiveInt,
    PredictorsTargetConfig,
    StrategyConfig,
    Strict,
    select_metrics,
)
from fedsilo.errors import ConfigError
from fedsilo.privacy.dp import DifferentialPrivacyParams
from fedsilo.privacy.secagg import SecAggSpec

__all__ = [
    "TASK_METRICS",
    "FFNetDataConfig",
    "FFNetModelConfig",
    "check_consistency",
    "parameter_count",
]

#: the metrics each task reports (as ``test_<name>`` per client; see the server workflow)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy", "roc_auc"),
    "regression": ("loss", "r2"),
}

Activation = Literal["relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu"]


class FFNetParams(Strict):
    """``model.params``: the layer sizes and the hidden activation."""

    input_size: PositiveInt
    hidden_layer_sizes: list[PositiveInt]
    output_size: PositiveInt
    hidden_activation: Activation = "relu"


class ModelSection(Strict):
    """``model``. ``type`` is accepted because the seed's long-form example carries it."""

    type: Literal["FFNet", "ffnet"] | None = None
    params: FFNetParams


class MLTaskParams(Strict):
    """``ml_task.params``: ``loss_weights`` are CrossEntropyLoss class weights."""

    loss_weights: list[NonNegativeFloat] | None = None


class MLTask(Strict):
    type: Literal["classification", "regression"]
    params: MLTaskParams = Field(default_factory=MLTaskParams)


class SaveBestModel(Strict):
    """``save_best_model``: the federated metric and direction that pick the saved round.

    ``metric`` null keeps the last round's model. ``mode`` defaults to ``min`` for loss and
    ``max`` for the others.
    """

    metric: str | None = None
    mode: Literal["min", "max"] | None = None

    def resolved_mode(self) -> Literal["min", "max"]:
        if self.mode is not None:
            return self.mode
        return "min" if self.metric == "loss" else "max"


class FFNetModelConfig(Strict):
    """The ffnet model_config (see the module docstring for an example).

    Attributes
    ----------
    local_epochs : int >= 1, default 1
        Passes over its training set a client makes per round.
    seed : int >= 0, default 23
        Seeds the initial weights, the client shuffles and the server's client sampling.
    eval_metrics : list of str, optional
        Metrics to report besides ``loss`` (default: all the task has).
    differential_privacy_params : DifferentialPrivacyParams, optional
        Train with DP-SGD; epsilon is each silo's budget for the whole session.
    secure_aggregation : SecAggSpec, optional
        ``{"enabled": true, ...}``: the server learns only the weighted mean of the clients'
        updates (:mod:`fedsilo.workflows.secure`; defaults in
        :mod:`fedsilo.privacy.secagg.spec`). Not with FedMedian, FedTrimmedAvg or
        FedClippedAvg (:mod:`fedsilo.config.secure`).
    """

    experiment_name: str = ""
    experiment_description: str = ""
    # The seed's long-form example names the job; training is the only ffnet job.
    job_type: Literal["training"] | None = None
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="FedAvg"))
    model: ModelSection
    balance_train_datasets: bool = False
    ml_task: MLTask
    optimizer: OptimizerConfig
    differential_privacy_params: DifferentialPrivacyParams | None = None
    save_best_model: SaveBestModel | None = None
    seed: int = Field(default=23, ge=0)
    eval_metrics: list[str] | None = Field(default=None, min_length=1)
    secure_aggregation: SecAggSpec = Field(default_factory=SecAggSpec)
    local_epochs: PositiveInt = 1

    @field_validator("ml_task", mode="before")
    @classmethod
    def _task_shorthand(cls, value: Any) -> Any:
        # The seed's long-form example writes "ml_task": "classification".
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _cross_field(self) -> FFNetModelConfig:
        problems: list[InitErrorDetails] = []

        def fail(loc: tuple[str | int, ...], message: str, value: Any) -> None:
            error = PydanticCustomError("ffnet_config", message)
            problems.append(InitErrorDetails(type=error, loc=loc, input=value))

        task = self.ml_task.type
        params = self.model.params
        if task == "classification" and params.output_size < 2:
            fail(
                ("model", "params", "output_size"),
                "classification needs output_size >= 2 (one logit per class)",
                params.output_size,
            )
        weights = self.ml_task.params.loss_weights
        if weights is not None:
            if task != "classification":
                fail(
                    ("ml_task", "params", "loss_weights"),
                    "loss_weights apply to classification only; set it to null",
                    weights,
                )
            elif len(weights) != params.output_size:
                fail(
                    ("ml_task", "params", "loss_weights"),
                    f"loss_weights needs one weight per class (output_size="
                    f"{params.output_size}), got {len(weights)}",
                    weights,
                )
            elif sum(weights) <= 0:
                fail(("ml_task", "params", "loss_weights"), "loss_weights sum to 0", weights)
        if self.balance_train_datasets and task != "classification":
            fail(
                ("balance_train_datasets",),
                "balance_train_datasets undersamples classes, so it needs ml_task.type "
                "classification",
                True,
            )
        privacy = self.differential_privacy_params
        if privacy is not None and self.balance_train_datasets:
            fail(
                ("balance_train_datasets",),
                "balance_train_datasets cannot be combined with differential_privacy_params: "
                "DP-SGD samples every row with the same probability, which its privacy "
                "accounting relies on; rebalance with ml_task.params.loss_weights instead",
                True,
            )
        if privacy is not None and (problem := self.optimizer.privacy_problem()) is not None:
            fail(("optimizer", "name"), problem, self.optimizer.name)
        if privacy is not None and privacy.max_hessian_norm is not None:
            fail(
                ("differential_privacy_params", "max_hessian_norm"),
                "max_hessian_norm applies to the glm newton solver only; ffnet clips "
                "gradients at max_grad_norm",
                privacy.max_hessian_norm,
            )
        known = TASK_METRICS[task]
        for i, metric in enumerate(self.eval_metrics or []):
            if metric not in known:
                fail(
                    ("eval_metrics", i),
                    f"{task} reports the metrics {', '.join(known)}",
                    metric,
                )
        best = self.save_best_model
        if best is not None and best.metric is not None:
            reported = self.reported_metrics()
            if best.metric not in reported:
                fail(
                    ("save_best_model", "metric"),
                    f"save_best_model.metric must be one of the reported metrics "
                    f"{', '.join(reported)} for {task}",
                    best.metric,
                )
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def reported_metrics(self) -> tuple[str, ...]:
        """The metric names evaluation reports: ``loss`` plus ``eval_metrics`` (or all)."""
        return select_metrics(TASK_METRICS[self.ml_task.type], self.eval_metrics)


class FFNetDataConfig(PredictorsTargetConfig):
    """The ffnet data_config: numeric predictor columns and one target column.

    Parameters
    ----------
    predictors : list of str
        Input columns, in the order the network reads them; unique, non-empty.
    target : str
        The label column: integer classes ``0 .. output_size - 1`` for classification, a
        number for regression.
    """


def check_consistency(model_config: FFNetModelConfig, data_config: FFNetDataConfig) -> None:
    """Check that a model_config and a data_config fit together.

    Raises
    ------
    ConfigError
        When ``model.params.input_size`` differs from the number of predictors, or a
        regression asks for more outputs than the single target column holds.
    """
    params = model_config.model.params
    problems = []
    if params.input_size != len(data_config.predictors):
        problems.append(
            f"model_config model.params.input_size must equal the number of data_config "
            f"predictors ({len(data_config.predictors)}). Got {params.input_size}."
        )
    if model_config.ml_task.type == "regression" and params.output_size != 1:
        problems.append(
            "model_config model.params.output_size must be 1 for regression, as "
            f"data_config names a single target column ({data_config.target!r}). "
            f"Got {params.output_size}."
        )
    if problems:
        raise ConfigError(" ".join(problems))


def parameter_count(model_config: FFNetModelConfig) -> int:
    """The network's parameters (weights and biases of every ``Linear`` layer), from the
    config alone: what :func:`~fedsilo.packages.ffnet.model.build_module` would allocate."""
    params = model_config.model.params
    widths = [params.input_size, *params.hidden_layer_sizes, params.output_size]
    return sum(n_in * n_out + n_out for n_in, n_out in pairwise(widths))
