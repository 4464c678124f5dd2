"""The client half of custom packages: the generic train/evaluate flow around uploaded code.

The flow is the seed's and cannot be customised: pass the inputs through the model, compute
the task's loss against the targets, back-propagate, step (:func:`fedsilo.training.train_local`,
the loop every neural package runs, with FedProx and DP-SGD). Task kinds, as ffnet's:

``init``      -> the seeded initial ``state_dict`` (the server never builds the model)
``fit``       -> meta ``{"round", "local_epochs"?, "proximal_mu"?, "num_rounds" (under DP)}``;
                 replies ``num_examples``, ``train_loss`` (not under DP), ``local_epochs``
                 and the trained ``state_dict``
``evaluate``  -> ``test_loss``, ``test_accuracy`` (classification) or ``test_r2``,
                 ``test_sse``, ``target_mean``, ``target_m2`` (regression),
                 ``test_num_examples``, ``evaluated_on``

The data is either a table (``predictors`` / ``target``) or the package's ``dataset.py``
class over the given paths, read into memory once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812  (the conventional alias)
from torch import nn
from torch.utils.data import Dataset

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.federation import ExecutorContext
from fedsilo.packages.custom.config import CustomDataConfig, CustomModelConfig
from fedsilo.packages.custom.loader import LoadedPackage
from fedsilo.packages.custom.restrictions import check_private_module
from fedsilo.privacy import DPSGDPlan, plan_dpsgd, resolve_delta
from fedsilo.privacy.ledger import ReleaseLedger, privacy_report
from fedsilo.training import shuffle_seed, train_local
from fedsilo.wire import Arrays

__all__ = ["CustomExecutor", "Tensors", "dataset_tensors", "table_tensors"]

#: (inputs, targets) of one split
Tensors = tuple[torch.Tensor, torch.Tensor]


class CustomExecutor:
    """Runs a custom package's tasks on one silo's data.

    Parameters
    ----------
    model_config, data_config : the session's parsed configs
    dataset : LocalDataset
        The tables (a package without dataset.py) and the batch size.
    context : ExecutorContext, optional
    package : LoadedPackage
        The imported package folder.
    tensors : mapping of split to (inputs, targets), optional
        Data already read through the package's dataset.py (``train``, optional ``test``).

    Raises
    ------
    ConfigError
        The model cannot be built, or cannot train under the session's DP-SGD.
    DataError
        Table columns missing or non-numeric.
    """

    def __init__(
        self,
        model_config: CustomModelConfig,
        data_config: CustomDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
        *,
        package: LoadedPackage,
        tensors: Mapping[str, Tensors] | None = None,
    ) -> None:
        if dataset.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1. Got {dataset.batch_size}.")
        self.model_config, self.package = model_config, package
        self.batch_size = dataset.batch_size
        self.task = model_config.ml_task.type
        self.module = self._fresh_module()
        splits = (
            dict(tensors) if tensors is not None else _table_splits(dataset, data_config, self.task)
        )
        if "train" not in splits or int(splits["train"][0].shape[0]) == 0:
            raise DataError(["train: the training data has no rows"], source="custom package data")
        self.x_train, self.y_train = splits["train"]
        self.evaluated_on = "test" if "test" in splits else "train"
        self.x_eval, self.y_eval = splits[self.evaluated_on]
        self._privacy: ReleaseLedger[DPSGDPlan] | None = None
        privacy = model_config.differential_privacy_params
        if privacy is not None:
            check_private_module(self.module, package.model_class.__name__)
            n_rows = int(self.x_train.shape[0])
            resolve_delta(privacy, n_rows)
            self._privacy = ReleaseLedger(
                lambda rounds: plan_dpsgd(
                    privacy,
                    n_rows=n_rows,
                    batch_size=self.batch_size,
                    rounds=rounds,
                    local_epochs=model_config.local_epochs,
                )
            )

    def _fresh_module(self) -> nn.Module:
        torch.manual_seed(self.model_config.seed)
        return self.package.build_model(self.model_config.model.params)

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        if kind == "init":
            return {}, module_arrays(self._fresh_module())
        if kind == "fit":
            return self.fit(meta, arrays)
        if kind == "evaluate":
            return self.evaluate(meta, arrays), {}
        raise TaskError(
            f"A custom package client cannot run task kind {kind!r}; known kinds: evaluate, "
            "fit, init."
        )

    def fit(self, meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        """Train ``local_epochs`` epochs from the given weights (DP-SGD under privacy)."""
        self._load(arrays, "fit")
        epochs = _meta_int(meta, "local_epochs", self.model_config.local_epochs)
        proximal_mu = float(meta.get("proximal_mu", 0.0))
        if self._privacy is not None:
            plan = self._privacy.plan(meta)
            server_round = _meta_int(meta, "round", 1)
            self._privacy.admit(plan, server_round)
            result = train_local(
                self.module,
                self._loss,
                self.x_train,
                self.y_train,
                optimizer=self.model_config.optimizer,
                epochs=plan.local_epochs,
                batch_size=self.batch_size,
                generator=torch.Generator(),  # unused: DP-SGD draws from a secret generator
                proximal_mu=proximal_mu,
                privacy=plan,
            )
            self._privacy.mark_released(server_round)
            reply = {
                "num_examples": result.num_examples,
                "local_epochs": plan.local_epochs,
                **privacy_report(plan, server_round),
            }
            return reply, module_arrays(self.module)
        server_round = _meta_int(meta, "round", 0)
        result = train_local(
            self.module,
            self._loss,
            self.x_train,
            self.y_train,
            optimizer=self.model_config.optimizer,
            epochs=epochs,
            batch_size=self.batch_size,
            generator=torch.Generator().manual_seed(
                shuffle_seed(self.model_config.seed, server_round)
            ),
            proximal_mu=proximal_mu,
        )
        reply = {
            "num_examples": result.num_examples,
            "train_loss": result.train_loss,
            "local_epochs": epochs,
        }
        return reply, module_arrays(self.module)

    def evaluate(self, meta: dict[str, Any], arrays: Arrays) -> dict[str, Any]:
        """The task's metrics of the given weights on the test split (train when none)."""
        self._load(arrays, "evaluate")
        if self._privacy is not None and self.evaluated_on == "train":
            return {"test_num_examples": 0, "evaluated_on": "none"}
        metrics = evaluate_module(self.module, self.x_eval, self.y_eval, self.task, self.batch_size)
        metrics["evaluated_on"] = self.evaluated_on
        return metrics

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Means of per-row losses: what DP-SGD's per-row clipping needs, and the usual loss.
        if self.task == "classification":
            return F.cross_entropy(outputs, targets)
        return F.mse_loss(outputs, targets.reshape(outputs.shape))

    def _load(self, arrays: Arrays, kind: str) -> None:
        state = self.module.state_dict()
        problems = [
            f"{name}: expected shape {tuple(state[name].shape)}, got "
            + (str(np.shape(arrays[name])) if name in arrays else "nothing")
            for name in state
            if name not in arrays or tuple(np.shape(arrays[name])) != tuple(state[name].shape)
        ]
        problems += [f"{name}: not in the model" for name in arrays if name not in state]
        if problems:
            raise TaskError(
                f"The {kind} task's arrays do not match {self.package.model_class.__name__}: "
                f"{'; '.join(problems[:5])}."
            )
        self.module.load_state_dict(
            {name: torch.from_numpy(np.array(arrays[name], copy=True)) for name in state}
        )


def module_arrays(module: nn.Module) -> Arrays:
    """The module's ``state_dict`` as named numpy arrays (what travels in a frame)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in module.state_dict().items()}


@torch.no_grad()
def evaluate_module(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, batch_size: int
) -> dict[str, Any]:
    """``test_loss`` and the task's metrics of ``module`` on ``(x, y)``."""
    module.eval()
    outputs = torch.cat([module(part) for part in torch.split(x, max(batch_size, 1))]).double()
    module.train()
    n = int(y.shape[0])
    metrics: dict[str, Any] = {"test_num_examples": n}
    if task == "classification":
        metrics["test_loss"] = float(F.cross_entropy(outputs, y))
        metrics["test_accuracy"] = float((outputs.argmax(dim=1) == y).double().mean())
        return metrics
    predictions = outputs.flatten()
    target = y.double().flatten()
    sse = float(((predictions - target) ** 2).sum())
    mean = float(target.mean()) if n else math.nan
    m2 = float(((target - mean) ** 2).sum()) if n else 0.0
    metrics.update(
        test_loss=sse / n if n else math.nan,
        test_r2=1.0 - sse / m2 if m2 > 0 else math.nan,
        test_sse=sse,
        target_mean=mean,
        target_m2=m2,
    )
    return metrics


def dataset_tensors(dataset: Dataset[Any], task: str, source: str) -> Tensors:
    """Every item of a dataset.py dataset stacked into (inputs, targets) tensors.

    Raises
    ------
    DataError
        When the dataset is empty, an item is not an ``(input, target)`` pair, or the
        inputs do not stack (different shapes).
    """
    try:
        count = len(dataset)  # type: ignore[arg-type]
        items = [dataset[i] for i in range(count)]
        inputs = torch.stack([torch.as_tensor(item[0], dtype=torch.float32) for item in items])
        targets = torch.as_tensor(np.asarray([np.asarray(item[1]) for item in items]))
    except Exception as exc:
        raise DataError(
            [
                "dataset.py items must be (input, target) pairs of one shape: "
                f"{type(exc).__name__}: {exc}"
            ],
            source=source,
        ) from exc
    if count == 0:
        raise DataError(["dataset.py found no items"], source=source)
    if task == "classification":
        return inputs, targets.to(torch.int64).flatten()
    return inputs, targets.to(torch.float32).reshape(count, -1)


def table_tensors(frame: pd.DataFrame, data_config: CustomDataConfig, task: str) -> Tensors:
    """A table's predictors and target as tensors (the package reads no dataset.py)."""
    if data_config.predictors is None or data_config.target is None:
        raise ConfigError(
            "A custom package without dataset.py reads tables: its data_config needs "
            '"predictors" (a list of columns) and "target" (a column).'
        )
    missing = [c for c in data_config.required_columns() if c not in frame.columns]
    if missing:
        raise DataError([f"missing column(s) {', '.join(missing)}"], source="custom package table")
    x = torch.from_numpy(frame[data_config.predictors].to_numpy(dtype=np.float32))
    y_values = frame[data_config.target].to_numpy(dtype=np.float64)
    if task == "classification":
        return x, torch.from_numpy(y_values.astype(np.int64))
    return x, torch.from_numpy(y_values.astype(np.float32).reshape(-1, 1))


def _table_splits(
    dataset: LocalDataset, data_config: CustomDataConfig, task: str
) -> dict[str, Tensors]:
    splits = {"train": table_tensors(dataset.train, data_config, task)}
    if dataset.test is not None and len(dataset.test) > 0:
        splits["test"] = table_tensors(dataset.test, data_config, task)
    return splits


def _meta_int(meta: dict[str, Any], key: str, default: int) -> int:
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TaskError(f"Task meta {key!r} must be an integer >= 0. Got {value!r}.")
    return value
