"""The centralized baseline: the same network trained on pooled data, for comparison.

Federated training is judged against this (DESIGN principle 3): the FFNet demo prints both
accuracies. It runs the very code the clients run -- :class:`FFNetExecutor`'s ``fit`` and
the metric computation of its ``evaluate`` -- so a gap between the two reflects federation,
not a different implementation.
"""

from __future__ import annotations

import pandas as pd

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError
from fedsilo.packages.ffnet.client import FFNetExecutor, compute_metrics, targets_tensor
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig
from fedsilo.packages.ffnet.export import FFNetModel
from fedsilo.packages.ffnet.model import (
    build_module,
    column_problems,
    features_tensor,
    module_arrays,
)

__all__ = ["evaluate", "train_central"]

#: rows per forward pass when evaluating
_EVAL_BATCH = 65_536


def train_central(
    model_config: FFNetModelConfig,
    data_config: FFNetDataConfig,
    train_df: pd.DataFrame,
    epochs: int,
    batch_size: int,
) -> FFNetModel:
    """Train the ffnet network on pooled data, one ``fit`` task per epoch.

    Each epoch is a ``fit`` with ``round = epoch`` and one local epoch, from the same
    seeded initial weights the federated workflow starts from, so ``epochs`` here compares
    with as many federated rounds of ``local_epochs = 1``.

    Parameters
    ----------
    model_config : FFNetModelConfig
    data_config : FFNetDataConfig
    train_df : DataFrame of shape (n_samples, n_columns)
        The pooled training rows (predictors and target).
    epochs : int >= 1
    batch_size : int >= 1

    Returns
    -------
    FFNetModel
        ``meta`` holds ``trained`` = ``"central"``, ``epochs`` and the last ``train_loss``.

    Raises
    ------
    ConfigError
        On ``epochs < 1`` or configs that disagree.
    DataError
        When ``train_df`` does not satisfy the data_config.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1. Got {epochs}.")
    executor = FFNetExecutor(
        model_config, data_config, LocalDataset(train=train_df, test=None, batch_size=batch_size)
    )
    arrays = module_arrays(build_module(model_config))
    train_loss = float("nan")
    for epoch in range(1, epochs + 1):
        reply, arrays = executor.handle("fit", {"round": epoch, "local_epochs": 1}, arrays)
        train_loss = float(reply["train_loss"])
    meta = {"trained": "central", "epochs": epochs, "train_loss": train_loss, "round": epochs}
    return FFNetModel(model_config, data_config, arrays, meta)


def evaluate(model: FFNetModel, df: pd.DataFrame) -> dict[str, float]:
    """The metrics the ``evaluate`` task reports, computed on ``df``.

    Parameters
    ----------
    model : FFNetModel
    df : DataFrame of shape (n_samples, n_columns)
        Must hold the predictors and the target.

    Returns
    -------
    dict of str to float
        ``test_loss``, ``test_accuracy`` and ``test_roc_auc`` (classification) or
        ``test_r2`` (regression), and ``test_num_examples``, exactly as a client computes
        them.

    Raises
    ------
    DataError
        When ``df`` lacks columns or holds non-numeric or null values.
    """
    mc, dc = model.model_config, model.data_config
    problems = column_problems(df, [dc.target])
    if problems:
        raise DataError(problems, source="evaluation data")
    features = features_tensor(df, dc.predictors, source="evaluation data")
    targets = targets_tensor(df, mc, dc.target)
    return compute_metrics(mc, model.as_pytorch(), features, targets, _EVAL_BATCH)
