"""The bundle as a torch module predicting every model at once.

As in the seed, fed by
:class:`~fedsilo.packages.linear_inference.dataset.ChunkedTabularDataset`::

    ds = ChunkedTabularDataset(path="test.parquet", **data_config)
    x, _ = next(iter(DataLoader(ds, batch_size=len(ds), shuffle=False)))
    model(x)            # tensor of shape (n_samples, n_chunked), float64
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

if TYPE_CHECKING:
    from fedsilo.packages.linear_inference.export import LinearInferenceModel

__all__ = ["LinearInferenceModule"]


class LinearInferenceModule(torch.nn.Module):
    """Every model of the bundle as one module.

    ``forward((shared, chunked))`` or ``forward(shared, chunked)`` with ``shared`` of shape
    (n_samples, n_shared) and ``chunked`` of shape (n_samples, n_chunked) returns a float64
    tensor of shape (n_samples, n_chunked): probabilities (logit) or means (OLS).
    """

    intercept: torch.Tensor
    shared_coef: torch.Tensor
    chunk_coef: torch.Tensor

    def __init__(self, model: LinearInferenceModel) -> None:
        super().__init__()
        self.model = model
        s = 1 + len(model.shared_predictors)
        coef = torch.from_numpy(model.coef_.copy())
        self.register_buffer("intercept", coef[:, 0].clone())
        self.register_buffer("shared_coef", coef[:, 1:s].clone())
        self.register_buffer("chunk_coef", coef[:, s].clone())
        self.linear = model.linear
        self.eval()

    def forward(self, x: Any, chunked: torch.Tensor | None = None) -> torch.Tensor:
        shared = x
        if chunked is None:
            shared, chunked = x
        shared = torch.as_tensor(shared, dtype=torch.float64).reshape(len(chunked), -1)
        chunked = torch.as_tensor(chunked, dtype=torch.float64)
        eta = self.intercept + shared @ self.shared_coef.T + chunked * self.chunk_coef
        return eta if self.linear else torch.sigmoid(eta)

    def predict(self, x: Any, chunked: torch.Tensor | None = None) -> torch.Tensor:
        """The same as calling the module, without gradients."""
        with torch.no_grad():
            result: torch.Tensor = self(x, chunked)
        return result

    def p_values(self) -> pd.Series:
        """See :meth:`LinearInferenceModel.p_values`."""
        return self.model.p_values()

    def summary(self, name: str | int) -> pd.DataFrame:
        """See :meth:`LinearInferenceModel.summary`."""
        return self.model.summary(name)

    @property
    def converged(self) -> pd.Series:
        """See :attr:`LinearInferenceModel.converged`."""
        return self.model.converged
