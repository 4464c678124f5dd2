"""The seed's ``ChunkedTabularDataset``: a table's rows as the bundle's torch inputs.

As in the seed (``integrate_ai_sdk.packages.LinearInference.dataset``)::

    from fedsilo.packages.linear_inference.dataset import ChunkedTabularDataset

    ds = ChunkedTabularDataset(path=f"{data_path}/test.parquet", **data_config_logit)
    dl = DataLoader(ds, batch_size=len(ds), shuffle=False)
    x, _ = next(iter(dl))
    y_pred = model_logit(x)     # (n_samples, n_chunked)

The columns are resolved exactly as the clients resolve the data_config (names or 0-based
indices), so a model predicts from the same columns it was fitted on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from fedsilo.errors import DataError
from fedsilo.packages.linear_inference.client import resolve_columns
from fedsilo.packages.linear_inference.config import Column, LinearInferenceDataConfig

__all__ = ["ChunkedTabularDataset"]


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
