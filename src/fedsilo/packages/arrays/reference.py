"""The reference client of ``arrays``: linear least squares by full-batch gradient descent.

It shows the :class:`~fedsilo.packages.arrays.client.NumPyClient` interface in a few lines
and serves a session of package ``arrays`` joined with a table (``fedsilo client train``)
instead of the user's own code: the data_config's ``predictors`` and ``target`` are its
columns. Parameters are ``[coef of shape (n_predictors,), intercept of shape (1,)]``; each
fit runs ``local_epochs`` gradient steps of ``learning_rate`` (fit config, default 0.1) on the
mean squared error, whose gradient is ``2 X^T (X w + b - y) / n``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsilo.data.dataset import LocalDataset
from fedsilo.packages.arrays.config import ArraysDataConfig

__all__ = ["LeastSquaresClient"]


class LeastSquaresClient:
    """Linear regression on one silo's table (see the module docstring)."""

    def __init__(self, dataset: LocalDataset, data_config: ArraysDataConfig) -> None:
        assert data_config.target is not None  # the executor checked
        columns = data_config.predictors
        self.x = dataset.train[columns].to_numpy(dtype=np.float64)
        self.y = dataset.train[data_config.target].to_numpy(dtype=np.float64)
        test = dataset.test if dataset.test is not None else dataset.train
        self.x_test = test[columns].to_numpy(dtype=np.float64)
        self.y_test = test[data_config.target].to_numpy(dtype=np.float64)

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return [np.zeros(self.x.shape[1]), np.zeros(1)]

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, float]]:
        coef, intercept = (np.array(p, dtype=np.float64) for p in parameters)
        rate = float(config.get("learning_rate", 0.1))
        for _ in range(int(config.get("local_epochs", 1))):
            residual = self.x @ coef + intercept[0] - self.y
            coef -= rate * 2.0 * self.x.T @ residual / len(self.y)
            intercept -= rate * 2.0 * residual.mean()
        loss = float(np.mean((self.x @ coef + intercept[0] - self.y) ** 2))
        return [coef, intercept], len(self.y), {"train_loss": loss}

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        coef, intercept = parameters
        error = self.x_test @ coef + intercept[0] - self.y_test
        return float(np.mean(error**2)), len(self.y_test), {"mae": float(np.abs(error).mean())}
