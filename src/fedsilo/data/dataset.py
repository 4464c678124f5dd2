"""The local data a client executor works on."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["LocalDataset"]


@dataclass(frozen=True)
class LocalDataset:
    """A silo's validated data, as handed to a package's executor.

    Parameters
    ----------
    train : DataFrame of shape (n_train_rows, n_columns)
    test : DataFrame of shape (n_test_rows, n_columns), or None when the client has no test set
    batch_size : int
        Mini-batch size for local training and evaluation.
    name : str, optional
        The dataset's name, for sessions that analyse named datasets (EDA: one dataset per
        client, ``train`` holding it); None for training sessions.
    """

    train: pd.DataFrame
    test: pd.DataFrame | None
    batch_size: int
    name: str | None = None
