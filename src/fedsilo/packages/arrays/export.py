"""Export of ``arrays``: the final global arrays, as the clients' code exchanged them."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedsilo.errors import FedsiloError
from fedsilo.packages.arrays.client import Parameters, to_parameters
from fedsilo.packages.arrays.config import ArraysDataConfig, ArraysModelConfig
from fedsilo.wire import Arrays

__all__ = ["ArraysModel"]


class ArraysModel:
    """The global model of an ``arrays`` session.

    Attributes
    ----------
    arrays : dict of str to ndarray
        By wire name (``"0"``, ``"1"``, ... for a list).
    parameters : list or dict of ndarray
        As the clients' ``fit`` takes them: load them into your own model.
    meta : dict
    """

    def __init__(
        self,
        model_config: ArraysModelConfig,
        data_config: ArraysDataConfig,
        arrays: Arrays,
        meta: dict[str, Any],
    ) -> None:
        self.arrays = dict(arrays)
        self.parameters: Parameters = to_parameters(self.arrays)
        self.meta = meta

    def as_pytorch(self) -> Any:
        raise FedsiloError(
            "An 'arrays' model is the clients' own code's parameters; fedsilo has no module "
            "for it. Load model.arrays() (or .exported.parameters) into your model."
        )

    def predict(self, data: pd.DataFrame) -> Any:
        raise FedsiloError(
            "An 'arrays' model cannot predict in fedsilo: load its parameters into your own "
            "model (model.arrays())."
        )
