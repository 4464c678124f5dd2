"""The linear_inference package's model_config and data_config.

The model_config is the seed's::

    {"strategy": {"name": "LogitRegInference", "params": {}}, "seed": 23}

with ``LogitRegInference`` (binary target, logistic regression, Wald z tests) or
``LinearRegInference`` (continuous target, OLS, t tests with n - k degrees of freedom), plus
fedsilo's ``tol`` (Newton's convergence tolerance) and ``eval_metrics``.

The data_config is the seed's::

    {"target": "y", "shared_predictors": ["x1", "x2"], "chunked_predictors": ["x0", "x3"]}

where every column may be a name or a 0-based integer index into the client's table.
Integer indices are resolved by each client against its own columns (the names then travel
back, so the p-values are indexed by name).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from fedsilo.config import COLUMN_NAME_PATTERN, Strict
from fedsilo.federation import DataConfigBase
from fedsilo.privacy.secagg import SecAggSpec

__all__ = [
    "STRATEGY_NAMES",
    "Column",
    "LinearInferenceDataConfig",
    "LinearInferenceModelConfig",
    "StrategyParams",
    "StrategySection",
]

#: the strategies of the seed, and the GLM family each fits
STRATEGY_NAMES: dict[str, str] = {"LogitRegInference": "logistic", "LinearRegInference": "normal"}


def _column(value: object) -> str | int:
    # One validator rather than a union, so a bad value gets one message saying both forms.
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise PydanticCustomError("column", "a column index must be >= 0")
        return value
    if isinstance(value, str):
        if not re.match(COLUMN_NAME_PATTERN, value):
            raise PydanticCustomError(
                "column",
                "a column name must start with a letter and contain only letters, digits, "
                "'-' and '_'",
            )
        return value
    raise PydanticCustomError("column", "expected a column name or a 0-based column index")


#: a column given by name or by 0-based position in the client's table
Column = Annotated[
    str | int,
    PlainValidator(_column),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": COLUMN_NAME_PATTERN},
                {"type": "integer", "minimum": 0},
            ]
        }
    ),
]

_METRICS: dict[str, tuple[str, ...]] = {
    "LogitRegInference": ("loss", "accuracy", "roc_auc"),
    "LinearRegInference": ("loss", "r2"),
}


class StrategyParams(Strict):
    """``strategy.params``: none (the fits are exact); any key is an error naming it."""


class StrategySection(Strict):
    """``strategy``: which bundle of models to fit."""

    name: Literal["LogitRegInference", "LinearRegInference"]
    params: StrategyParams = Field(default_factory=StrategyParams)


class LinearInferenceModelConfig(BaseModel):
    """model_config of ``linear_inference``.

    Parameters
    ----------
    strategy : StrategySection
        ``LogitRegInference`` or ``LinearRegInference``.
    seed : int >= 0, default 23
        Accepted for the seed's configs; the fits are deterministic.
    tol : float in (0, 1), default 1e-10
        Newton stops for a model once a step moves none of its coefficients by more than
        ``tol * (1 + max |beta|)``.
    eval_metrics : list of str, optional
        Metrics to report besides ``loss`` (default: all of the strategy's).
    secure_aggregation : SecAggSpec, optional
        ``{"enabled": true, ...}``: the server learns only the sums of the silos' gradients,
        Fisher matrices and deviances (:mod:`fedsilo.workflows.secure`; set
        ``quantization_bits`` to 40 for the exact pooled fit).
    """

    model_config = ConfigDict(extra="forbid")

    experiment_name: str = ""
    experiment_description: str = ""
    strategy: StrategySection
    seed: int = Field(default=23, ge=0)
    tol: float = Field(default=1e-10, gt=0.0, lt=1.0)
    eval_metrics: list[str] | None = Field(default=None, min_length=1)
    secure_aggregation: SecAggSpec = Field(default_factory=SecAggSpec)

    @model_validator(mode="after")
    def _known_metrics(self) -> Self:
        known = _METRICS[self.strategy.name]
        unknown = [m for m in self.eval_metrics or [] if m not in known]
        if unknown:
            error = PydanticCustomError(
                "unknown_metric",
                "unknown metric(s) {unknown} for {strategy}; known: {known}",
                {
                    "unknown": ", ".join(unknown),
                    "strategy": self.strategy.name,
                    "known": ", ".join(known),
                },
            )
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [InitErrorDetails(type=error, loc=("eval_metrics",), input=self.eval_metrics)],
            )
        return self

    @property
    def task(self) -> str:
        """The glm family this strategy fits (``logistic`` or ``normal``)."""
        return STRATEGY_NAMES[self.strategy.name]

    def reported_metrics(self) -> tuple[str, ...]:
        known = _METRICS[self.strategy.name]
        if self.eval_metrics is None:
            return known
        return tuple(m for m in known if m == "loss" or m in self.eval_metrics)


class LinearInferenceDataConfig(DataConfigBase):
    """data_config of ``linear_inference``: ``target``, ``shared_predictors``,
    ``chunked_predictors`` (names or 0-based indices).

    Every column may play one role only; checked here for names and, after resolving
    indices, by each client.
    """

    model_config = ConfigDict(extra="forbid")

    target: Column
    shared_predictors: list[Column] = Field(default_factory=list)
    chunked_predictors: list[Column] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        problems: list[InitErrorDetails] = []
        seen: dict[str | int, str] = {self.target: "target"}
        for role in ("shared_predictors", "chunked_predictors"):
            for position, column in enumerate(getattr(self, role)):
                if column in seen:
                    error = PydanticCustomError(
                        "column_role",
                        "column {column} is already used as {role}",
                        {"column": repr(column), "role": seen[column]},
                    )
                    problems.append(
                        InitErrorDetails(type=error, loc=(role, position), input=column)
                    )
                else:
                    seen[column] = role
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def required_columns(self) -> list[str]:
        """The columns given by name (indices are resolved by each client)."""
        columns = [self.target, *self.shared_predictors, *self.chunked_predictors]
        return [c for c in columns if isinstance(c, str)]
