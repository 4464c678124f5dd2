"""A trained ffnet model as users hold it: a torch module and predictions on DataFrames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedsilo.errors import ConfigError
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig
from fedsilo.packages.ffnet.model import (
    build_module,
    features_tensor,
    forward_in_batches,
    load_arrays,
)
from fedsilo.wire import Arrays

__all__ = ["FFNetModel"]

#: rows per forward pass when predicting; bounds activation memory on large frames
_PREDICT_BATCH = 65_536


class FFNetModel:
    """An ffnet model's weights with their configs.

    Parameters
    ----------
    model_config : FFNetModelConfig
    data_config : FFNetDataConfig
    arrays : dict of str to ndarray
        The network's ``state_dict`` (names as :func:`build_module` makes them).
    meta : dict
        What the workflow saved with the model (round, federated loss, ...).

    Raises
    ------
    ConfigError
        When the arrays do not fit the network the model_config describes.
    """

    def __init__(
        self,
        model_config: FFNetModelConfig,
        data_config: FFNetDataConfig,
        arrays: Arrays,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.model_config = model_config
        self.data_config = data_config
        self.meta = dict(meta or {})
        self._arrays = {name: np.asarray(value) for name, value in arrays.items()}
        self._module = self._build()

    @property
    def predictors(self) -> list[str]:
        """The columns :meth:`predict` reads, in input order."""
        return list(self.data_config.predictors)

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return self.model_config.ml_task.type

    def as_pytorch(self) -> nn.Module:
        """A fresh ``torch.nn.Module`` with the trained weights, in eval mode.

        Each call builds a new module, so changing it leaves this model untouched. It maps
        float32 inputs of shape (n_samples, input_size) to outputs of shape
        (n_samples, output_size): logits for classification.
        """
        return self._build()

    def as_sklearn(self) -> Any:
        """ffnet models have no scikit-learn form.

        Raises
        ------
        ConfigError
            Always; use :meth:`as_pytorch`, :meth:`predict` or :meth:`predict_proba`.
        """
        raise ConfigError(
            "An ffnet model has no scikit-learn form (it is a PyTorch network); use "
            "as_pytorch() for the torch.nn.Module, or predict() / predict_proba()."
        )

    def predict(self, data: pd.DataFrame) -> np.ndarray:
        """Predictions for the rows of ``data``.

        Parameters
        ----------
        data : DataFrame of shape (n_samples, n_columns)
            Must hold the data_config's predictor columns; others are ignored.

        Returns
        -------
        ndarray of shape (n_samples,)
            Classification: the most probable class label (int64). Regression: the
            predicted value (float32).

        Raises
        ------
        DataError
            Listing the missing, non-numeric, null or infinite predictor columns.
        """
        outputs = self._outputs(data)
        if self.task == "classification":
            labels: np.ndarray = outputs.argmax(dim=1).numpy()
            return labels
        values: np.ndarray = outputs[:, 0].numpy()
        return values

    def predict_proba(self, data: pd.DataFrame) -> np.ndarray:
        """Class probabilities for the rows of ``data`` (classification only).

        Returns
        -------
        ndarray of shape (n_samples, output_size), float64
            Softmax of the logits; each row sums to 1.

        Raises
        ------
        ConfigError
            For a regression model.
        DataError
            As :meth:`predict`.
        """
        if self.task != "classification":
            raise ConfigError(
                "predict_proba needs a classification model; this ffnet model's "
                f"ml_task.type is {self.task!r}. Use predict()."
            )
        probabilities: np.ndarray = torch.softmax(self._outputs(data).double(), dim=1).numpy()
        return probabilities

    def _outputs(self, data: pd.DataFrame) -> torch.Tensor:
        features = features_tensor(data, self.predictors, source="prediction data")
        return forward_in_batches(self._module, features, _PREDICT_BATCH)

    def _build(self) -> nn.Module:
        module = build_module(self.model_config)
        problems = load_arrays(module, self._arrays)
        if problems:
            raise ConfigError(
                f"The model arrays do not fit the ffnet network of its model_config: "
                f"{'; '.join(problems)}."
            )
        module.eval()
        return module

    def __repr__(self) -> str:
        params = self.model_config.model.params
        return (
            f"FFNetModel(task={self.task!r}, input_size={params.input_size}, "
            f"hidden_layer_sizes={params.hidden_layer_sizes}, "
            f"output_size={params.output_size}, round={self.meta.get('round')!r})"
        )
