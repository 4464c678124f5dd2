"""The glm package's model_config and data_config.

The model_config takes the seed documentation's GLM tutorial config as written::

    {
      "experiment_name": "test_synthetic_tabular",
      "experiment_description": "test_synthetic_tabular",
      "strategy": {"name": "FedAvg", "params": {}},
      "model": {"params": {"input_size": 15, "output_activation": "sigmoid"}},
      "balance_train_datasets": false,
      "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
      "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.9}},
      "differential_privacy_params": {"epsilon": 4, "max_grad_norm": 7}
    }

plus fedsilo's own keys: ``solver`` (``"newton"``, the default: exact federated IRLS; or
``"sgd"``: the strategy over local epochs of the configured ``torch.optim`` optimizer, as
the seed describes; ``output_activation: "tanh"`` needs it), ``tol`` (Newton's
convergence tolerance), ``seed``, ``local_epochs`` and ``eval_metrics``. ``ml_task.type`` may
also be ``"tweedie"`` with ``ml_task.params.power``. ``strategy`` and ``optimizer`` drive the
``sgd`` solver only; Newton uses every client in every round (exactness needs all rows).

The data_config names ``predictors`` and ``target`` (as for ffnet) and optionally an
``offset`` column (added to the linear predictor), an ``exposure`` column (``log(exposure)``
is added; needs the log link) and a ``sample_weight`` column (precision weights, as R's
``glm`` ``weights`` and statsmodels' ``var_weights``).

Every level refuses unknown keys, and every error names its field path and value.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from fedsilo.config import (
    ColumnName,
    OptimizerConfig,
    PositiveInt,
    PredictorsTargetConfig,
    StrategyConfig,
    Strict,
    select_metrics,
)
from fedsilo.errors import ConfigError
from fedsilo.packages.glm.tanh import TANH_NEWTON_REASON, GLMFamily, TanhOutput
from fedsilo.privacy.dp import DifferentialPrivacyParams
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.regression.families import (
    DEFAULT_ACTIVATION,
    Activation,
    Family,
    TaskType,
    allowed_activations,
    make_family,
)

__all__ = [
    "TASK_METRICS",
    "GLMActivation",
    "GLMDataConfig",
    "GLMModelConfig",
    "check_consistency",
    "parameter_count",
]

#: the metrics each family reports (``test_<name>`` per client; see the server workflow)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "logistic": ("loss", "accuracy", "roc_auc"),
    "normal": ("loss", "r2"),
    "poisson": ("loss", "r2"),
    "gamma": ("loss", "r2"),
    "inverseGaussian": ("loss", "r2"),
    "tweedie": ("loss", "r2"),
}


#: the seed's ``output_activation`` values: the inverse links, and tanh (sgd only)
GLMActivation = Activation | Literal["tanh"]


class GLMParams(Strict):
    """``model.params``: the number of predictors and the inverse link.

    ``output_activation`` is the inverse link function (the seed's name): ``sigmoid`` for
    the logit link, ``exp`` for the log link, ``identity``. Default: the family's usual link
    (logit for logistic, identity for normal, log for the others). ``tanh`` (which the seed
    also lists) is no GLM link: it trains a single-layer tanh network with squared-error
    loss, under ``solver: "sgd"`` and ``ml_task.type: "normal"`` only
    (:mod:`fedsilo.packages.glm.tanh`).
    """

    input_size: PositiveInt
    output_activation: GLMActivation | None = None


class ModelSection(Strict):
    """``model``. ``type`` is accepted because the seed's long-form examples carry one."""

    type: Literal["GLM", "glm"] | None = None
    params: GLMParams


class MLTaskParams(Strict):
    """``ml_task.params``: the elastic-net penalty (both required, as in the seed's schema).

    ``alpha`` multiplies the penalty ``l1_ratio * |w|_1 + (1 - l1_ratio) / 2 * |w|_2^2`` added
    to the mean half deviance (scikit-learn's and glmnet's convention; the intercept is not
    penalized). ``power`` is the Tweedie variance power, for ``tweedie`` only.
    """

    alpha: float = Field(ge=0.0, allow_inf_nan=False)
    l1_ratio: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    power: float | None = Field(default=None, ge=1.0, allow_inf_nan=False)


class MLTask(Strict):
    type: TaskType
    params: MLTaskParams


class GLMModelConfig(Strict):
    """The glm model_config (see the module docstring for an example).

    Attributes
    ----------
    solver : {"newton", "sgd"}, default "newton"
        ``newton``: exact federated IRLS / proximal Newton; every client answers every round
        and the fit equals the pooled one. ``sgd``: ``strategy`` over ``local_epochs`` of
        local SGD with ``optimizer`` each round.
    tol : float > 0, default 1e-10
        Newton stops once a step moves no coefficient by more than
        ``tol * (1 + max |beta|)``; ``num_rounds`` is the maximum.
    seed : int >= 0, default 23
        Seeds the SGD initial weights, shuffles and client sampling.
    local_epochs : int >= 1, default 1
        SGD passes over each client's rows per round.
    eval_metrics : list of str, optional
        Metrics to report besides ``loss`` (default: all the family has).
    differential_privacy_params : DifferentialPrivacyParams, optional
        Each silo's (epsilon, delta) budget for the whole session: DP-SGD for ``sgd``,
        clipped and noised Newton statistics for ``newton``
        (:mod:`fedsilo.packages.glm.private_newton`).
    secure_aggregation : SecAggSpec, optional
        ``{"enabled": true, ...}``: the server learns only the weighted mean of the clients'
        updates (``sgd``) or the sums of their statistics (``newton``; set
        ``quantization_bits`` to 40 for the exact fit to 1e-6), never one silo's
        (:mod:`fedsilo.workflows.secure`; defaults in :mod:`fedsilo.privacy.secagg.spec`).
    """

    experiment_name: str = ""
    experiment_description: str = ""
    job_type: Literal["training"] | None = None
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="FedAvg"))
    model: ModelSection
    balance_train_datasets: bool = False
    ml_task: MLTask
    optimizer: OptimizerConfig | None = None
    differential_privacy_params: DifferentialPrivacyParams | None = None
    solver: Literal["newton", "sgd"] = "newton"
    tol: float = Field(default=1e-10, gt=0.0, lt=1.0)
    seed: int = Field(default=23, ge=0)
    local_epochs: PositiveInt = 1
    eval_metrics: list[str] | None = Field(default=None, min_length=1)
    secure_aggregation: SecAggSpec = Field(default_factory=SecAggSpec)

    @model_validator(mode="after")
    def _cross_field(self) -> GLMModelConfig:
        problems: list[InitErrorDetails] = []

        def fail(loc: tuple[str | int, ...], message: str, value: Any) -> None:
            error = PydanticCustomError("glm_config", message)
            problems.append(InitErrorDetails(type=error, loc=loc, input=value))

        task = self.ml_task.type
        activation = self.model.params.output_activation
        allowed = allowed_activations(task)
        if activation == "tanh":
            if self.solver != "sgd":
                fail(("model", "params", "output_activation"), TANH_NEWTON_REASON, activation)
            elif task != "normal":
                fail(
                    ("model", "params", "output_activation"),
                    f"tanh trains with squared-error loss, which is ml_task.type 'normal'; "
                    f"got {task!r}",
                    activation,
                )
        elif activation is not None and activation not in allowed:
            fail(
                ("model", "params", "output_activation"),
                f"output_activation {activation!r} makes no sense for ml_task.type {task!r}; "
                f"expected {' or '.join(repr(a) for a in allowed)}",
                activation,
            )
        power = self.ml_task.params.power
        if task == "tweedie" and power is None:
            fail(("ml_task", "params", "power"), "tweedie needs a variance power >= 1", None)
        if task != "tweedie" and power is not None:
            fail(
                ("ml_task", "params", "power"),
                f"power applies to ml_task.type 'tweedie' only (the {task} family's variance "
                "is fixed); remove it",
                power,
            )
        if self.balance_train_datasets:
            fail(
                ("balance_train_datasets",),
                "glm does not undersample: it would change the fitted coefficients; weight "
                "rows with data_config.sample_weight instead",
                True,
            )
        if self.solver == "sgd" and self.optimizer is None:
            fail(("optimizer",), "the sgd solver needs an optimizer (SGD learning_rate)", None)
        privacy = self.differential_privacy_params
        optimizer = self.optimizer
        if (
            self.solver == "sgd"
            and privacy is not None
            and optimizer is not None
            and (problem := optimizer.privacy_problem()) is not None
        ):
            fail(("optimizer", "name"), problem, optimizer.name)
        if self.solver == "sgd" and privacy is not None and privacy.max_hessian_norm is not None:
            fail(
                ("differential_privacy_params", "max_hessian_norm"),
                "max_hessian_norm applies to the newton solver only; DP-SGD clips gradients "
                "at max_grad_norm",
                privacy.max_hessian_norm,
            )
        known = TASK_METRICS[task]
        for i, metric in enumerate(self.eval_metrics or []):
            if metric not in known:
                fail(("eval_metrics", i), f"{task} reports the metrics {', '.join(known)}", metric)
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    @property
    def activation(self) -> GLMActivation:
        """The inverse link in use (the configured one or the family default)."""
        chosen = self.model.params.output_activation
        return chosen if chosen is not None else DEFAULT_ACTIVATION[self.ml_task.type]

    def family(self) -> GLMFamily:
        """The :class:`~fedsilo.regression.families.Family` this config describes, or the
        :class:`~fedsilo.packages.glm.tanh.TanhOutput` of a tanh model."""
        activation = self.activation
        if activation == "tanh":
            return TanhOutput()
        return make_family(self.ml_task.type, activation, self.ml_task.params.power)

    def newton_family(self) -> Family:
        """The exponential family the newton solver fits.

        Raises
        ------
        ConfigError
            For a tanh model (the config refuses tanh under newton; this guards the
            solver's own entry points).
        """
        family = self.family()
        if isinstance(family, TanhOutput):
            raise ConfigError(f"The newton solver cannot fit this model: {TANH_NEWTON_REASON}.")
        return family

    def reported_metrics(self) -> tuple[str, ...]:
        """The metric names evaluation reports: ``loss`` plus ``eval_metrics`` (or all)."""
        return select_metrics(TASK_METRICS[self.ml_task.type], self.eval_metrics)


class GLMDataConfig(PredictorsTargetConfig):
    """The glm data_config.

    Parameters
    ----------
    predictors : list of str
        Numeric input columns, in coefficient order; unique, non-empty.
    target : str
        The response: 0/1 for logistic, >= 0 for Poisson and Tweedie with power < 2, > 0 for
        gamma, inverse Gaussian and Tweedie with power >= 2, any number for normal.
    offset : str, optional
        A column added to the linear predictor as is (coefficient fixed at 1).
    exposure : str, optional
        A column of positive exposures; ``log(exposure)`` is added to the linear predictor
        (log link only). Counts per policy-year, claims per vehicle, ...
    sample_weight : str, optional
        Non-negative precision weights ``s_i``: the deviance of row i counts ``s_i`` times,
        and the dispersion is estimated with ``n - p`` residual degrees of freedom, where
        ``n`` counts rows (statsmodels' ``var_weights``, R's ``glm`` ``weights``).
    """

    optional_roles: ClassVar[tuple[str, ...]] = ("offset", "exposure", "sample_weight")

    offset: ColumnName | None = None
    exposure: ColumnName | None = None
    sample_weight: ColumnName | None = None


def check_consistency(model_config: GLMModelConfig, data_config: GLMDataConfig) -> None:
    """Check that a model_config and a data_config fit together.

    Raises
    ------
    ConfigError
        When ``model.params.input_size`` differs from the number of predictors, or an
        ``exposure`` column is given for a link other than log.
    """
    problems = []
    input_size = model_config.model.params.input_size
    if input_size != len(data_config.predictors):
        problems.append(
            f"model_config model.params.input_size must equal the number of data_config "
            f"predictors ({len(data_config.predictors)}). Got {input_size}."
        )
    if data_config.exposure is not None and model_config.activation != "exp":
        problems.append(
            f"data_config exposure ({data_config.exposure!r}) multiplies the mean, which needs "
            f"the log link (output_activation 'exp'); the {model_config.ml_task.type} model "
            f"uses {model_config.activation!r}. Use data_config offset instead."
        )
    if problems:
        raise ConfigError(" ".join(problems))


def parameter_count(model_config: GLMModelConfig) -> int:
    """The model's coefficients: one per predictor and the intercept (both solvers; the
    tanh network of the sgd solver has the same single layer)."""
    return model_config.model.params.input_size + 1
