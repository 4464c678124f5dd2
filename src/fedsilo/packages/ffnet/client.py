"""The client half of ffnet: local training and evaluation on a silo's data.

Pure computation: :class:`FFNetExecutor` receives the global weights as named arrays and
returns new weights or metrics; it never touches the network, so it unit-tests alone.

Task kinds
----------
``init``
    No meta or arrays. Replies the seeded initial ``state_dict`` (the server asks one client
    for the first global model, so it never builds the network itself).
``fit``
    meta ``{"round": int, "local_epochs": int (optional), "proximal_mu": float (optional,
    FedProx)}``, arrays = global ``state_dict``. Replies ``{"num_examples", "train_loss",
    "local_epochs"}`` and the trained ``state_dict``.
    With ``"evaluate": {evaluate meta}`` in the meta (the round loop's
    ``fit_evaluates``, :mod:`fedsilo.workflows.deferred`) the given weights are evaluated
    first, as an ``evaluate`` task with that meta would, and the reply adds those metrics
    under ``"evaluation"``.
``evaluate``
    meta ``{"round": int}``, arrays = global ``state_dict``. Replies metrics only:
    classification ``test_loss`` (cross-entropy), ``test_accuracy``, ``test_roc_auc``;
    regression ``test_loss`` (mean squared error), ``test_r2``, plus ``test_sse``,
    ``target_mean`` and ``target_m2`` (the squared-error sum and the test target's mean and
    sum of squared deviations, so the server can pool R^2 exactly); always
    ``test_num_examples`` and ``evaluated_on`` (``"test"``, or ``"train"`` when the client
    has no test set).

Under ``differential_privacy_params`` (DP-SGD, :mod:`fedsilo.privacy`) the ``fit`` meta must
also carry ``num_rounds``; the reply leaves out ``train_loss`` (an exact statistic of the
training rows) and adds ``epsilon_spent``, ``epsilon_budget``, ``delta`` and
``noise_multiplier``. Each round is released once: the client runtime's release-once mod
answers a repeated identical ``fit`` with the same reply bytes, and the executor refuses
another request for a round it already released. A client without a test set then
evaluates nothing (``evaluated_on`` is ``"none"``, ``test_num_examples`` 0) rather than
release exact metrics of its training rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F  # noqa: N812  (the conventional alias)
from torch import nn

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.federation import ExecutorContext
from fedsilo.packages.ffnet.config import FFNetDataConfig, FFNetModelConfig, check_consistency
from fedsilo.packages.ffnet.model import (
    build_module,
    column_problems,
    forward_in_batches,
    load_arrays,
    module_arrays,
)
from fedsilo.privacy import resolve_delta
from fedsilo.privacy.ledger import ReleaseLedger, privacy_report
from fedsilo.training import limit_torch_threads, shuffle_seed, train_local
from fedsilo.wire import Arrays
from fedsilo.workflows.deferred import EVALUATE_KEY, EVALUATION_KEY

if TYPE_CHECKING:
    from fedsilo.privacy import DPSGDPlan

__all__ = [
    "KINDS",
    "FFNetExecutor",
    "compute_metrics",
    "per_row_criterion",
    "targets_tensor",
]

#: the task kinds the executor handles
KINDS = ("evaluate", "fit", "init")


class FFNetExecutor:
    """Runs ffnet tasks on one silo's data.

    The data is validated and converted to float32 tensors once, here; tasks only index it.

    Parameters
    ----------
    model_config : FFNetModelConfig
    data_config : FFNetDataConfig
    dataset : LocalDataset
        ``train`` (required, non-empty), ``test`` (optional) and the mini-batch size.

    Raises
    ------
    ConfigError
        When the two configs disagree (see :func:`check_consistency`) or ``batch_size < 1``.
    DataError
        Listing every problem with the training and test frames (missing or non-numeric
        columns, nulls, class labels outside ``0 .. output_size - 1``).
    """

    def __init__(
        self,
        model_config: FFNetModelConfig,
        data_config: FFNetDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> None:
        check_consistency(model_config, data_config)
        if dataset.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1. Got {dataset.batch_size}.")
        self.model_config = model_config
        self.data_config = data_config
        self.batch_size = dataset.batch_size
        self.module = build_module(model_config)
        limit_torch_threads(sum(p.numel() for p in self.module.parameters()))

        frames: dict[str, pd.DataFrame] = {"train": dataset.train}
        if dataset.test is not None and len(dataset.test) > 0:
            frames["test"] = dataset.test
        problems: list[str] = []
        tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for split, frame in frames.items():
            found = _frame_problems(frame, model_config, data_config)
            problems += [f"{split}: {p}" for p in found]
            if not found:
                tensors[split] = _tensors(frame, model_config, data_config)
        if len(dataset.train) == 0:
            problems.append("train: the training data has no rows")
        if problems:
            raise DataError(problems, source="ffnet client data")
        self.x_train, self.y_train = tensors["train"]
        self.evaluated_on = "test" if "test" in tensors else "train"
        self.x_eval, self.y_eval = tensors[self.evaluated_on]
        self.criterion = make_criterion(model_config)
        self._privacy: ReleaseLedger[DPSGDPlan] | None = None
        privacy = model_config.differential_privacy_params
        if privacy is not None:
            # Imported here: the accountant brings Opacus (seconds of imports) that a client
            # training without differential privacy never needs.
            from fedsilo.privacy import plan_dpsgd

            n_rows = int(self.x_train.shape[0])
            resolve_delta(privacy, n_rows)  # refuse a bad delta before joining, not mid-session
            self._privacy = ReleaseLedger(
                lambda rounds: plan_dpsgd(
                    privacy,
                    n_rows=n_rows,
                    batch_size=self.batch_size,
                    rounds=rounds,
                    local_epochs=model_config.local_epochs,
                )
            )
        # Row indices of each class, for undersampling the majority classes every epoch.
        self._class_rows: list[torch.Tensor] = []
        if model_config.balance_train_datasets:
            labels = self.y_train
            self._class_rows = [
                torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()
            ]

    # ------------------------------------------------------------------- tasks

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        """Run one task; see the module docstring for the kinds and their meta.

        Raises
        ------
        TaskError
            On an unknown kind, or arrays that do not match the network.
        """
        if kind == "fit":
            return self.fit(meta, arrays)
        if kind == "init":
            # A fresh build, not self.module (which holds the last round's weights).
            return {}, module_arrays(build_module(self.model_config))
        if kind == "evaluate":
            return self.evaluate(meta, arrays), {}
        raise TaskError(
            f"The ffnet client cannot run task kind {kind!r}; known kinds: {', '.join(KINDS)}."
        )

    def fit(self, meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        """Train ``local_epochs`` epochs with the configured optimizer from the given weights.

        Runs the shared loop :func:`fedsilo.training.train_local`; ``meta["proximal_mu"]``
        (sent by FedProx) adds the proximal term pulling toward the given weights.

        Returns
        -------
        meta : dict
            ``num_examples`` (rows seen per epoch), ``train_loss`` (mean loss over the
            last epoch), ``local_epochs``.
        arrays : dict of str to ndarray
            The trained ``state_dict``.
        """
        if self._privacy is not None:
            if EVALUATE_KEY in meta:
                raise TaskError(
                    f"Under differential privacy a fit task cannot evaluate as well (meta "
                    f"{EVALUATE_KEY!r}): each release is planned on its own."
                )
            return self._fit_private(self._privacy, meta, arrays)
        evaluation = None
        if EVALUATE_KEY in meta:
            # The previous round's evaluation, on the arrays received, before they move.
            asked = meta[EVALUATE_KEY]
            if not isinstance(asked, dict):
                raise TaskError(
                    f"Task meta {EVALUATE_KEY!r} must be an evaluate task's meta (an object). "
                    f"Got {asked!r}."
                )
            evaluation = self.evaluate(asked, arrays)
        else:
            self._load(arrays, "fit")
        server_round = _meta_int(meta, "round", 0, minimum=0)
        epochs = _meta_int(meta, "local_epochs", self.model_config.local_epochs, minimum=1)
        proximal_mu = _meta_float(meta, "proximal_mu", 0.0)
        result = train_local(
            self.module,
            self.criterion,
            self.x_train,
            self.y_train,
            optimizer=self.model_config.optimizer,
            epochs=epochs,
            batch_size=self.batch_size,
            generator=torch.Generator().manual_seed(
                shuffle_seed(self.model_config.seed, server_round)
            ),
            epoch_rows=self._epoch_rows if self._class_rows else None,
            proximal_mu=proximal_mu,
        )
        reply: dict[str, Any] = {
            "num_examples": result.num_examples,
            "train_loss": result.train_loss,
            "local_epochs": epochs,
        }
        if evaluation is not None:
            reply[EVALUATION_KEY] = evaluation
        return reply, module_arrays(self.module)

    def _fit_private(
        self, ledger: ReleaseLedger[DPSGDPlan], meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        """``fit`` under DP-SGD: planned for the session, each round released once.

        A repeated identical ``fit`` never gets here: the client's release-once mod
        (:func:`fedsilo.client.mods.release_once`) replays the reply it sent.
        """
        plan = ledger.plan(meta)
        server_round = _meta_int(meta, "round", 1, minimum=1)
        ledger.admit(plan, server_round)
        epochs = _meta_int(meta, "local_epochs", plan.local_epochs, minimum=1)
        if epochs != plan.local_epochs:
            raise TaskError(
                f"Under differential privacy every round trains model_config.local_epochs = "
                f"{plan.local_epochs} epoch(s), as the budget was planned. Got {epochs}."
            )
        self._load(arrays, "fit")
        result = train_local(
            self.module,
            per_row_criterion(self.model_config),
            self.x_train,
            self.y_train,
            optimizer=self.model_config.optimizer,
            epochs=epochs,
            batch_size=self.batch_size,
            generator=torch.Generator(),  # unused: DP-SGD draws from a secret generator
            proximal_mu=_meta_float(meta, "proximal_mu", 0.0),
            privacy=plan,
        )
        reply = {
            "num_examples": result.num_examples,
            "local_epochs": epochs,
            **privacy_report(plan, server_round),
        }
        ledger.mark_released(server_round)
        return reply, module_arrays(self.module)

    def evaluate(self, meta: dict[str, Any], arrays: Arrays) -> dict[str, Any]:
        """Metrics of the given weights on the test set (the training set when none).

        Returns
        -------
        dict
            See the module docstring for the keys.
        """
        self._load(arrays, "evaluate")
        if self._privacy is not None and self.evaluated_on == "train":
            return {"test_num_examples": 0, "evaluated_on": "none"}
        metrics: dict[str, Any] = dict(
            compute_metrics(
                self.model_config, self.module, self.x_eval, self.y_eval, self.batch_size
            )
        )
        if self.model_config.ml_task.type == "regression":
            target = self.y_eval.double().flatten()
            mean = float(target.mean())
            # The MSE times the rows: the squared-error sum to float64 rounding.
            metrics["test_sse"] = metrics["test_loss"] * metrics["test_num_examples"]
            metrics["target_mean"] = mean
            metrics["target_m2"] = float(((target - mean) ** 2).sum())
        metrics["evaluated_on"] = self.evaluated_on
        return metrics

    # ----------------------------------------------------------------- helpers

    def _load(self, arrays: Arrays, kind: str) -> None:
        problems = load_arrays(self.module, arrays)
        if problems:
            raise TaskError(
                f"The {kind} task's arrays do not match the ffnet network: {'; '.join(problems)}."
            )

    def _epoch_rows(self, generator: torch.Generator) -> torch.Tensor:
        """Training row indices for one epoch, shuffled; undersampled when balancing."""
        if not self._class_rows:
            return torch.randperm(self.x_train.shape[0], generator=generator)
        smallest = min(int(rows.numel()) for rows in self._class_rows)
        kept = [
            rows[torch.randperm(int(rows.numel()), generator=generator)[:smallest]]
            for rows in self._class_rows
        ]
        rows = torch.cat(kept)
        return rows[torch.randperm(int(rows.numel()), generator=generator)]


# --------------------------------------------------------------------- functions


def make_criterion(model_config: FFNetModelConfig) -> nn.Module:
    """The training loss: cross-entropy (with ``loss_weights``) or mean squared error."""
    if model_config.ml_task.type == "regression":
        return nn.MSELoss()
    weights = model_config.ml_task.params.loss_weights
    weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
    return nn.CrossEntropyLoss(weight=weight)


def per_row_criterion(
    model_config: FFNetModelConfig,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss as DP-SGD needs it: the plain mean of per-row losses.

    ``CrossEntropyLoss(weight=w)`` divides by the batch's summed class weights, which ties
    each row's gradient to the other rows of the batch; DP-SGD clips rows one by one, so
    under differential privacy each row's loss is ``w[y_i] * CE_i`` and the batch loss
    their mean. Without ``loss_weights`` this is the usual mean loss.
    """
    if model_config.ml_task.type == "regression":
        return nn.MSELoss()
    weights = model_config.ml_task.params.loss_weights
    weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, weight=weight, reduction="none").mean()

    return loss


def compute_metrics(
    model_config: FFNetModelConfig,
    module: nn.Module,
    features: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
) -> dict[str, float]:
    """The evaluation metrics of ``module`` on one dataset.

    Parameters
    ----------
    model_config : FFNetModelConfig
        The task and ``eval_metrics`` decide which metrics are computed.
    module : torch.nn.Module
    features : torch.Tensor of shape (n_samples, input_size), float32
    targets : torch.Tensor of shape (n_samples,), int64 class labels for classification;
        of shape (n_samples, 1), float32 for regression (see :func:`targets_tensor`)
    batch_size : int

    Returns
    -------
    dict of str to float
        ``test_loss`` (cross-entropy weighted by ``loss_weights`` when set, or mean squared
        error), ``test_accuracy`` / ``test_roc_auc`` or ``test_r2`` as ``eval_metrics``
        asks, and ``test_num_examples``. An undefined metric (AUC with one class present,
        R^2 of a constant target) is NaN.
    """
    outputs = forward_in_batches(module, features, batch_size).double()
    wanted = model_config.reported_metrics()
    n = int(targets.shape[0])
    metrics: dict[str, float] = {}
    if model_config.ml_task.type == "classification":
        weights = model_config.ml_task.params.loss_weights
        weight = torch.tensor(weights, dtype=torch.float64) if weights is not None else None
        metrics["test_loss"] = float(F.cross_entropy(outputs, targets, weight=weight))
        probabilities = torch.softmax(outputs, dim=1).numpy()
        labels = targets.numpy()
        if "accuracy" in wanted:
            metrics["test_accuracy"] = float(np.mean(probabilities.argmax(axis=1) == labels))
        if "roc_auc" in wanted:
            metrics["test_roc_auc"] = roc_auc(labels, probabilities)
    else:
        predictions = outputs.flatten()
        target = targets.double().flatten()
        sse = float(((predictions - target) ** 2).sum())
        metrics["test_loss"] = sse / n if n else math.nan
        if "r2" in wanted:
            sst = float(((target - target.mean()) ** 2).sum()) if n else 0.0
            metrics["test_r2"] = 1.0 - sse / sst if sst > 0 else math.nan
    metrics["test_num_examples"] = n  # an int, as in the seed's client_metrics
    return metrics


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Area under the ROC curve; one-vs-rest macro average for more than two classes.

    Computed from ranks (the Mann-Whitney U statistic, ties sharing their average rank),
    which is what scikit-learn's ``roc_auc_score`` computes, to float64 rounding, at a small
    fraction of its input-checking cost (it was most of an evaluation on a small test set).

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), int
    probabilities : ndarray of shape (n_samples, n_classes)

    Returns
    -------
    float
        NaN when fewer than two classes are present (the AUC is undefined there). With more
        than two classes of which some are absent, the average runs over the present ones
        (scikit-learn refuses that case).
    """
    labels = np.asarray(labels)
    present = np.unique(labels)
    if present.size < 2:
        return math.nan
    if probabilities.shape[1] == 2:
        return binary_auc(labels == 1, probabilities[:, 1])
    return float(np.mean([binary_auc(labels == c, probabilities[:, int(c)]) for c in present]))


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """AUC of ``scores`` separating ``positive`` (bool) rows from the others; both present.

    ``(R - n1 (n1 + 1) / 2) / (n1 n0)`` with ``R`` the positives' rank sum, tied scores
    sharing their average rank.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    # Average rank (1-based) of each run of equal scores.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(ordered.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    n_pos = int(np.count_nonzero(positive))
    n_neg = int(positive.size) - n_pos
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def targets_tensor(
    frame: pd.DataFrame, model_config: FFNetModelConfig, target: str
) -> torch.Tensor:
    """The target column as the loss expects it (validate with :func:`_frame_problems`).

    Returns
    -------
    torch.Tensor
        Shape (n_samples,), int64 class labels for classification; shape (n_samples, 1),
        float32 for regression.
    """
    values = frame[target].to_numpy(dtype=np.float64)
    if model_config.ml_task.type == "classification":
        return torch.from_numpy(values.astype(np.int64))
    return torch.from_numpy(values.astype(np.float32).reshape(-1, 1))


def _tensors(
    frame: pd.DataFrame, model_config: FFNetModelConfig, data_config: FFNetDataConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    values = frame[data_config.predictors].to_numpy(dtype=np.float32)
    features = torch.from_numpy(np.ascontiguousarray(values))
    return features, targets_tensor(frame, model_config, data_config.target)


def _frame_problems(
    frame: pd.DataFrame, model_config: FFNetModelConfig, data_config: FFNetDataConfig
) -> list[str]:
    problems = column_problems(frame, data_config.required_columns())
    target = data_config.target
    if problems or model_config.ml_task.type != "classification":
        return problems
    values = frame[target].to_numpy(dtype=np.float64)
    classes = model_config.model.params.output_size
    bad = (values != np.round(values)) | (values < 0) | (values > classes - 1)
    if bad.any():
        shown = sorted({float(v) for v in values[bad][:1000]})[:5]
        examples = ", ".join(f"{v:g}" for v in shown)
        problems.append(
            f"target column {target!r} must hold integer class labels 0..{classes - 1} "
            f"(output_size={classes}); {int(bad.sum())} row(s) do not, e.g. {examples}"
        )
    return problems


def _meta_int(meta: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskError(f"Task meta {key!r} must be an integer >= {minimum}. Got {value!r}.")
    return value


def _meta_float(meta: dict[str, Any], key: str, default: float) -> float:
    value = meta.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise TaskError(f"Task meta {key!r} must be a finite number >= 0. Got {value!r}.")
    return float(value)
