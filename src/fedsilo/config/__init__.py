"""Config pieces every package's model_config / data_config is built from.

A package's ``config.py`` composes these with its own sections, so the parts users type the
same way everywhere (``strategy``, ``optimizer``, ``predictors`` / ``target``, column names,
``eval_metrics``) are validated the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from fedsilo.config.optimizers import OptimizerConfig, OptimizerParams, optimizer_names
from fedsilo.federation import DataConfigBase
from fedsilo.strategies import STRATEGIES, canonical_strategy_name, strategy_names

__all__ = [
    "COLUMN_NAME_PATTERN",
    "ColumnName",
    "NonNegativeFloat",
    "OptimizerConfig",
    "OptimizerParams",
    "PositiveInt",
    "PredictorsTargetConfig",
    "StrategyConfig",
    "Strict",
    "optimizer_names",
    "select_metrics",
]

#: column names a data_config may use (safe in files, SQL and metric keys)
COLUMN_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"

ColumnName = Annotated[str, Field(pattern=COLUMN_NAME_PATTERN)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class Strict(BaseModel):
    """A config section that refuses unknown keys: a typo is an error naming it."""

    model_config = ConfigDict(extra="forbid")


class StrategyConfig(Strict):
    """``strategy``: a name from :data:`fedsilo.strategies.STRATEGIES` (any case) and its
    params (Flower's ``fraction_evaluate`` / ``min_evaluate_clients`` are aliases)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_name(cls, value: str) -> str:
        # Case-insensitive (seed 002 writes "fedavg"); kept in the registered spelling.
        canonical = canonical_strategy_name(value)
        if canonical is None:
            raise PydanticCustomError(
                "unknown_strategy",
                "unknown strategy; known strategies: {known}",
                {"known": ", ".join(strategy_names())},
            )
        return canonical

    @field_validator("params")
    @classmethod
    def _valid_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        strategy = STRATEGIES.get(info.data.get("name", ""))
        if strategy is not None:
            # A ValidationError raised here is merged into the outer one with its location
            # under ``strategy.params``, so the message names e.g. strategy.params.fraction_fit.
            strategy.params_type.model_validate(value)
        return value


class PredictorsTargetConfig(DataConfigBase):
    """A data_config of numeric ``predictors`` and one ``target`` column.

    Subclasses add optional single-column roles (e.g. glm's ``offset``) by listing them in
    :attr:`optional_roles`; every column may play one role only.
    """

    model_config = ConfigDict(extra="forbid")

    #: further fields naming one column each (None when unused)
    optional_roles: ClassVar[tuple[str, ...]] = ()

    predictors: list[ColumnName] = Field(min_length=1)
    target: ColumnName

    @field_validator("predictors")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise PydanticCustomError(
                "duplicate_predictors",
                "predictors must be unique; repeated: {repeated}",
                {"repeated": ", ".join(repeated)},
            )
        return value

    @model_validator(mode="after")
    def _distinct_roles(self) -> Self:
        problems: list[InitErrorDetails] = []
        seen: dict[str, str] = dict.fromkeys(self.predictors, "predictors")
        for role in ("target", *self.optional_roles):
            column = getattr(self, role)
            if column is None:
                continue
            if column in seen:
                message = (
                    "the target cannot also be a predictor"
                    if role == "target"
                    else f"column {column!r} is already used as {seen[column]}"
                )
                error = PydanticCustomError("column_role", message)
                problems.append(InitErrorDetails(type=error, loc=(role,), input=column))
            else:
                seen[column] = role
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def required_columns(self) -> list[str]:
        optional = [getattr(self, role) for role in self.optional_roles]
        return [*self.predictors, self.target, *(c for c in optional if c is not None)]


def select_metrics(known: Sequence[str], eval_metrics: Sequence[str] | None) -> tuple[str, ...]:
    """The metrics evaluation reports: ``loss`` plus those of ``eval_metrics`` (default all)."""
    if eval_metrics is None:
        return tuple(known)
    return tuple(m for m in known if m == "loss" or m in eval_metrics)
