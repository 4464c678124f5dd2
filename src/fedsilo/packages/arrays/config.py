"""Configs of the ``arrays`` package.

The model is whatever arrays the clients' own code returns, so the model_config holds only
what the server needs to combine them::

    {
      "strategy": {"name": "FedAvg", "params": {"fraction_fit": 1.0}},
      "local_epochs": 1,
      "seed": 23
    }

``strategy`` names any strategy of :mod:`fedsilo.strategies`; its ``params.initial_parameters``
(``{"0": [[...]], "1": [...]}`` for a client whose parameters are a list, the array names
for a dict) is the first global model, checked against the names, shapes and dtypes one
client's ``get_parameters`` returns. The data_config is empty for clients that bring their
own code (their data never passes through fedsilo); the built-in reference client
(:mod:`fedsilo.packages.arrays.reference`) reads ``predictors`` and ``target``.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from fedsilo.config import PositiveInt, StrategyConfig, Strict
from fedsilo.federation import DataConfigBase

__all__ = ["ArraysDataConfig", "ArraysModelConfig"]


class ArraysModelConfig(Strict):
    """The arrays model_config (see the module docstring).

    Attributes
    ----------
    strategy : StrategyConfig, default FedAvg
    local_epochs : int >= 1, default 1
        Sent in every fit task's config as ``local_epochs``; the client's code decides what
        an epoch is.
    seed : int >= 0, default 23
        Seeds the server's client sampling (``fraction_fit`` below 1).
    driver : bool, default False
        The session's owner drives it from their own process (``Session.run``): the server
        relays the driver's tasks and runs no rounds (:mod:`fedsilo.packages.arrays.driver`).
    """

    experiment_name: str = ""
    experiment_description: str = ""
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="FedAvg"))
    local_epochs: PositiveInt = 1
    seed: int = Field(default=23, ge=0)
    driver: bool = False


class ArraysDataConfig(DataConfigBase):
    """The arrays data_config: the columns of the built-in reference client, when used.

    Attributes
    ----------
    predictors : list of str
    target : str, optional
        Both or neither: clients with their own code ignore them.
    """

    model_config = ConfigDict(extra="forbid")

    predictors: list[str] = Field(default_factory=list)
    target: str | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> ArraysDataConfig:
        if bool(self.predictors) != (self.target is not None):
            raise ValueError(
                "predictors and target go together (the reference client's columns); give "
                f"both or neither. Got predictors={self.predictors!r}, target={self.target!r}"
            )
        if self.target is not None and self.target in self.predictors:
            raise ValueError(f"target {self.target!r} is also one of the predictors")
        return self

    def required_columns(self) -> list[str]:
        return [*self.predictors, *([self.target] if self.target is not None else [])]
