"""The bundle as torch objects: a module predicting every model, and the seed's dataset.

As in the seed::

    ds = ChunkedTabularDataset(path="test.parquet", **data_config)
    x, _ = next(iter(DataLoader(ds, batch_size=len(ds), shuffle=False)))
    model(x)            # tensor of shape (n_samples, n_chunked), float64
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fedsilo.errors import DataError
from fedsilo.packages.linear_inference.client import resolve_columns
from fedsilo.packages.linear_inference.config import Column, LinearInferenceDataConfig

if TYPE_CHECKING:
    from fedsilo.packages.linear_inference.export import LinearInferenceModel

__all__ = ["ChunkedTabularDataset", "LinearInferenceModule"]


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


class ChunkedTabularDataset(Dataset[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]):
    """A table's rows as ``((shared, chunked), target)`` float64 tensors.

    Parameters
    ----------
    path : str
        A parquet or csv file (local or fsspec URL).
    target, shared_predictors, chunked_predictors
        As in the data_config: names or 0-based column indices.

    Raises
    ------
    DataError
        When a column is missing, out of range or not numeric.
    """

    def __init__(
        self,
        path: str,
        target: Column,
        shared_predictors: list[Column],
        chunked_predictors: list[Column],
    ) -> None:
        from fedsilo.data.loading import load_table
        from fedsilo.data.validation import find_problems

        frame = load_table(str(path))
        config = LinearInferenceDataConfig(
            target=target,
            shared_predictors=list(shared_predictors),
            chunked_predictors=list(chunked_predictors),
        )
        resolved, problems = resolve_columns(list(frame.columns), config)
        if resolved is None:
            raise DataError(problems, source=str(path))
        name, shared, chunked = resolved
        problems = find_problems(frame, [name, *shared, *chunked], source=str(path))
        if problems:
            raise DataError(problems, source=str(path))
        # torch.tensor copies: pandas may hand out read-only views, which from_numpy warns on.
        shared_values = frame[shared].to_numpy(dtype=np.float64).reshape(len(frame), -1)
        self.shared = torch.tensor(shared_values, dtype=torch.float64)
        self.chunked = torch.tensor(frame[chunked].to_numpy(dtype=np.float64))
        self.target = torch.tensor(frame[name].to_numpy(dtype=np.float64))

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        return (self.shared[index], self.chunked[index]), self.target[index]
