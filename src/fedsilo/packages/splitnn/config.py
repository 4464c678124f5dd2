"""The splitnn package's configs: the seed's VFL ``model_config`` and ``data_config``.

A training session's model_config is the seed's, plus the two settings the seed passes as
``create_vfl_session`` arguments (the SDK puts them here, since a session body has no
field for them)::

    {
      "vfl_mode": "train",                       # or "predict"
      "prl_session_id": "07d0f8358d",            # the PRL session whose alignment is used
      "strategy": {"name": "SplitNN", "params": {}},
      "model": {
        "feature_models": {
          "passive_client": {"params": {"input_size": 7, "hidden_layer_sizes": [6],
                                        "output_size": 5}},
          "active_client": {"params": {"input_size": 8, "hidden_layer_sizes": [6],
                                       "output_size": 5}}
        },
        "label_model": {"params": {"hidden_layer_sizes": [5], "output_size": 2}}
      },
      "ml_task": {"type": "classification", "params": {"loss_weights": null}},
      "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
      "seed": 23
    }

A prediction session's model_config is ``{"vfl_mode": "predict", "prl_session_id": ...,
"training_session_id": ...}``: the network is the training session's.

The data_config maps each client to its columns::

    {
      "passive_client": {"label_client": false, "predictors": ["x1", "x3"], "target": null},
      "active_client": {"label_client": true, "predictors": ["x0", "x2"], "target": "y"}
    }

Exactly one client holds the labels (the active party); it may bring no predictors (then it
has no feature model). Every client with predictors has a feature model whose
``input_size`` is its number of predictors; the label model's input is the feature
models' outputs side by side, in the data_config's client order.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from fedsilo.config import (
    ColumnName,
    NonNegativeFloat,
    OptimizerConfig,
    PositiveInt,
    Strict,
)
from fedsilo.errors import ConfigError
from fedsilo.federation import DataConfigBase
from fedsilo.wire import CLIENT_NAME_PATTERN

__all__ = [
    "TASK_METRICS",
    "FeatureModel",
    "LabelModel",
    "SplitnnClientData",
    "SplitnnDataConfig",
    "SplitnnModelConfig",
    "check_consistency",
    "parameter_count",
]

#: what the active party reports per round (``test_<name>``), by task
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy", "roc_auc"),
    "regression": ("loss", "r2"),
}

Activation = Literal["relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu"]
SESSION_ID = r"^[0-9a-f]{10}$"


class FeatureParams(Strict):
    """``feature_models[client].params``: one client's bottom network."""

    input_size: PositiveInt
    hidden_layer_sizes: list[PositiveInt] = Field(default_factory=list)
    output_size: PositiveInt
    hidden_activation: Activation = "relu"


class FeatureModel(Strict):
    params: FeatureParams


class LabelParams(Strict):
    """``label_model.params``: the top network at the active party; its input size is the
    sum of the feature models' output sizes."""

    hidden_layer_sizes: list[PositiveInt] = Field(default_factory=list)
    output_size: PositiveInt
    hidden_activation: Activation = "relu"


class LabelModel(Strict):
    params: LabelParams


class SplitModel(Strict):
    feature_models: dict[str, FeatureModel] = Field(min_length=1)
    label_model: LabelModel


class SplitStrategy(Strict):
    """``strategy``: SplitNN (any case); it takes no params."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _split(cls, value: str) -> str:
        if value.lower() != "splitnn":
            raise PydanticCustomError(
                "strategy",
                "VFL sessions train with strategy 'SplitNN'; got {name}",
                {"name": value},
            )
        return "SplitNN"

    @field_validator("params")
    @classmethod
    def _no_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value:
            raise PydanticCustomError(
                "strategy", "SplitNN takes no params; got {keys}", {"keys": sorted(value)}
            )
        return value


class MLTaskParams(Strict):
    """``loss_weights``: CrossEntropyLoss class weights (classification)."""

    loss_weights: list[NonNegativeFloat] | None = None


class MLTask(Strict):
    type: Literal["classification", "regression"]
    params: MLTaskParams = Field(default_factory=MLTaskParams)


class SplitnnModelConfig(Strict):
    """The model_config (see the module docstring).

    Attributes
    ----------
    vfl_mode : {"train", "predict"}
    prl_session_id : str
        The completed PRL session whose alignment the clients' rows follow.
    training_session_id : str, optional
        Predict only: the completed training session whose model parts the clients hold.
    strategy, model, ml_task, optimizer : train only (required there)
    seed : int >= 0, default 23
        Seeds every part's initial weights and the shared order of the mini-batches.
    """

    vfl_mode: Literal["train", "predict"] = "train"
    prl_session_id: str = Field(pattern=SESSION_ID)
    training_session_id: str | None = Field(default=None, pattern=SESSION_ID)
    strategy: SplitStrategy | None = None
    model: SplitModel | None = None
    ml_task: MLTask | None = None
    optimizer: OptimizerConfig | None = None
    seed: int = Field(default=23, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _by_mode(self) -> SplitnnModelConfig:
        trained = ("strategy", "model", "ml_task", "optimizer")
        if self.vfl_mode == "train":
            missing = [name for name in trained if getattr(self, name) is None]
            if missing:
                raise PydanticCustomError(
                    "vfl_mode",
                    "a VFL training session needs {missing} in its model_config",
                    {"missing": missing},
                )
            if self.training_session_id is not None:
                raise PydanticCustomError(
                    "vfl_mode",
                    "training_session_id is for vfl_mode 'predict'; this session trains",
                )
            return self
        if self.training_session_id is None:
            raise PydanticCustomError(
                "vfl_mode", "a VFL prediction session needs the training_session_id"
            )
        given = [name for name in trained if getattr(self, name) is not None]
        if given:
            raise PydanticCustomError(
                "vfl_mode",
                "a VFL prediction session uses the training session's network; leave out {given}",
                {"given": given},
            )
        return self

    @property
    def split(self) -> SplitModel:
        """The network (train mode; a prediction session reads its training session's)."""
        if self.model is None:
            raise ConfigError("This VFL session has no network of its own (vfl_mode predict).")
        return self.model

    @property
    def task(self) -> MLTask:
        if self.ml_task is None:
            raise ConfigError("This VFL session has no ml_task of its own (vfl_mode predict).")
        return self.ml_task


class SplitnnClientData(Strict):
    """One client's columns: ``predictors`` (may be empty for the label client) and, at the
    label client only, the ``target``."""

    label_client: bool = False
    predictors: list[ColumnName] = Field(default_factory=list)
    target: ColumnName | None = None

    @field_validator("predictors")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise PydanticCustomError(
                "predictors",
                "predictors must be unique; repeated: {repeated}",
                {"repeated": repeated},
            )
        return value

    def columns(self) -> list[str]:
        return [*self.predictors, *([self.target] if self.target else [])]


class SplitnnDataConfig(DataConfigBase):
    """``{client_name: SplitnnClientData}``, in the order the label model reads the
    embeddings (see the module docstring)."""

    clients: dict[str, SplitnnClientData] = Field(min_length=2, max_length=100)

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, raw: Any) -> Any:
        # The seed's data_config is the mapping of clients itself.
        if isinstance(raw, dict) and set(raw) != {"clients"}:
            return {"clients": raw}
        return raw

    @model_validator(mode="after")
    def _one_label_client(self) -> SplitnnDataConfig:
        for name in self.clients:
            if not CLIENT_NAME_PATTERN.match(name):
                raise PydanticCustomError(
                    "client_name",
                    "client name {name} must start with a letter or digit and contain only "
                    "letters, digits and '_.@:-' (at most 128 characters)",
                    {"name": repr(name)},
                )
        labels = [name for name, c in self.clients.items() if c.label_client]
        if len(labels) != 1:
            raise PydanticCustomError(
                "label_client",
                "exactly one client holds the labels (label_client true); got {labels}",
                {"labels": labels},
            )
        for name, client in self.clients.items():
            if client.label_client and client.target is None:
                raise PydanticCustomError(
                    "target", "the label client {name} must name its target", {"name": name}
                )
            if not client.label_client and client.target is not None:
                raise PydanticCustomError(
                    "target",
                    "only the label client has a target; {name} names {target}",
                    {"name": name, "target": client.target},
                )
            if not client.label_client and not client.predictors:
                raise PydanticCustomError(
                    "predictors", "passive client {name} brings no predictors", {"name": name}
                )
        return self

    @property
    def label_client(self) -> str:
        return next(name for name, c in self.clients.items() if c.label_client)

    @property
    def passive_clients(self) -> list[str]:
        return [name for name, c in self.clients.items() if not c.label_client]

    @property
    def featured_clients(self) -> list[str]:
        """Clients with a feature model, in the order the label model reads them."""
        return [name for name, c in self.clients.items() if c.predictors]

    def required_columns(self) -> list[str]:
        # Each client reads its own columns (SplitnnExecutor checks them before joining).
        return []

    def of(self, client_name: str) -> SplitnnClientData:
        """The columns of ``client_name``; ConfigError naming the clients when unknown."""
        client = self.clients.get(client_name)
        if client is None:
            raise ConfigError(
                f"client {client_name!r} is not one of this VFL session's clients "
                f"{sorted(self.clients)}; join with --client-name set to one of them"
            )
        return client


def check_consistency(model_config: SplitnnModelConfig, data_config: SplitnnDataConfig) -> None:
    """A training network must fit the columns: one feature model per client with
    predictors, of that many inputs; a classification output of >= 2 classes, a regression
    output of 1.

    Raises
    ------
    ConfigError
        Naming the client, the field and both values.
    """
    if model_config.vfl_mode != "train":
        return
    split, task = model_config.split, model_config.task
    wanted = set(data_config.featured_clients)
    have = set(split.feature_models)
    if wanted != have:
        raise ConfigError(
            "model_config model.feature_models must have one entry per client with "
            f"predictors {sorted(wanted)}; got {sorted(have)}."
        )
    for name in data_config.featured_clients:
        size = split.feature_models[name].params.input_size
        n = len(data_config.clients[name].predictors)
        if size != n:
            raise ConfigError(
                f"model_config model.feature_models.{name}.params.input_size must equal the "
                f"number of {name}'s predictors ({n}). Got {size}."
            )
    out = split.label_model.params.output_size
    if task.type == "classification" and out < 2:
        raise ConfigError(
            "model_config model.label_model.params.output_size must be >= 2 (one logit per "
            f"class) for classification. Got {out}."
        )
    if task.type == "regression" and out != 1:
        raise ConfigError(
            "model_config model.label_model.params.output_size must be 1 for regression. "
            f"Got {out}."
        )
    weights = task.params.loss_weights
    if weights is not None and len(weights) != out:
        raise ConfigError(
            f"model_config ml_task.params.loss_weights must have one weight per class ({out})."
            f" Got {len(weights)}."
        )


def parameter_count(model_config: SplitnnModelConfig) -> int:
    """Numbers in the whole split network (for the server's size limit); 0 for predict."""
    if model_config.model is None:
        return 0

    def dense(sizes: list[int]) -> int:
        return sum((a + 1) * b for a, b in itertools.pairwise(sizes))

    total = 0
    width = 0
    for part in model_config.model.feature_models.values():
        p = part.params
        total += dense([p.input_size, *p.hidden_layer_sizes, p.output_size])
        width += p.output_size
    top = model_config.model.label_model.params
    return total + dense([width, *top.hidden_layer_sizes, top.output_size])
