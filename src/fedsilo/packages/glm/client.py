"""The client half of glm: Newton statistics, local SGD and evaluation on a silo's rows.

Pure computation: :class:`GLMExecutor` receives coefficients as named arrays and returns
sums over its rows (never the rows); it never touches the network.

Coefficients travel as one array ``beta`` of shape (1 + n_features,), intercept first.

Task kinds
----------
``target_summary``
    No arrays. Replies ``{"num_rows"}`` and array ``summary`` = ``[sum s, sum s*y,
    sum s*exp(offset), sum s*offset]`` over the training rows: the server's intercept-only
    start.
``newton_stats``
    Array ``beta``; meta ``{"round", "evaluate": bool}``. Replies the Newton statistics of
    the training rows at ``beta`` as arrays ``gradient`` (k,), ``fisher`` (k, k), ``scalars``
    ``[deviance, pearson, weight_sum, num_rows]`` (see :mod:`fedsilo.regression.newton`),
    meta ``{"num_rows", "weight_sum", "train_loss"}`` and, when ``evaluate``, the metrics of
    ``evaluate``.
``fit``
    Array ``beta``; meta ``{"round", "local_epochs", "proximal_mu"}``. Runs local SGD (the
    ``sgd`` solver) and replies the new ``beta`` with ``{"num_examples", "train_loss"}``.
``evaluate``
    Array ``beta``. Replies metrics only (:func:`evaluation_metrics`): ``test_loss``
    (cross-entropy for logistic, mean squared error for normal, mean unit deviance
    otherwise), ``test_accuracy`` and ``test_roc_auc`` (logistic) or ``test_r2`` plus the
    pooling statistics ``test_sse``, ``target_mean``, ``target_m2``; always
    ``test_num_examples``, ``test_weight_sum`` and ``evaluated_on``.

Under ``differential_privacy_params`` (:mod:`fedsilo.privacy`): ``newton_stats`` replies the
clipped and noised statistics of :class:`fedsilo.packages.glm.private_newton.PrivateNewton`
(meta ``num_rounds`` and ``start`` required), ``fit`` trains with DP-SGD, ``target_summary``
is refused (exact sums), and a client without a test set evaluates nothing
(``evaluated_on`` ``"none"``) rather than release exact metrics of its training rows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsilo.data.dataset import LocalDataset
from fedsilo.data.validation import find_problems
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.federation import ExecutorContext
from fedsilo.packages.glm.config import GLMDataConfig, GLMModelConfig, check_consistency
from fedsilo.packages.glm.tanh import GLMFamily
from fedsilo.privacy import resolve_delta
from fedsilo.regression.newton import DesignData, NewtonStatistics, local_statistics
from fedsilo.wire import Arrays
from fedsilo.workflows.metrics import binary_roc_auc, r2_part

if TYPE_CHECKING:
    from fedsilo.packages.glm.private_newton import PrivateNewton

__all__ = ["KINDS", "GLMExecutor", "design_data", "evaluation_metrics"]

#: the task kinds the executor handles
KINDS = ("evaluate", "fit", "newton_stats", "target_summary")


class GLMExecutor:
    """Runs glm tasks on one silo's data.

    The frames are validated and converted to float64 arrays once, here.

    Parameters
    ----------
    model_config : GLMModelConfig
    data_config : GLMDataConfig
    dataset : LocalDataset
        ``train`` (required, non-empty), ``test`` (optional), ``batch_size`` (sgd only).

    Raises
    ------
    ConfigError
        When the two configs disagree (:func:`check_consistency`) or ``batch_size < 1``.
    DataError
        Listing every problem of both frames: missing, non-numeric, null or infinite
        columns, targets outside the family's domain, negative sample weights, exposures
        that are not > 0, and a training set with no more rows than coefficients.
    """

    def __init__(
        self,
        model_config: GLMModelConfig,
        data_config: GLMDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> None:
        check_consistency(model_config, data_config)
        if dataset.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1. Got {dataset.batch_size}.")
        self.model_config = model_config
        self.data_config = data_config
        self.family = model_config.family()
        self.batch_size = dataset.batch_size
        self.num_coefficients = 1 + len(data_config.predictors)
        frames: dict[str, pd.DataFrame] = {"train": dataset.train}
        if dataset.test is not None and len(dataset.test) > 0:
            frames["test"] = dataset.test
        problems: list[str] = []
        prepared: dict[str, DesignData] = {}
        for split, frame in frames.items():
            data, found = design_data(frame, self.family, data_config, split)
            problems += found
            if data is not None:
                prepared[split] = data
        train_rows = len(dataset.train)
        if 0 < train_rows <= self.num_coefficients:
            # With no more rows than coefficients, the gradient and Fisher matrix this client
            # sends (or a model fitted to its rows) can determine individual rows.
            problems.append(
                f"train: has {train_rows} row(s); a glm client needs more rows than "
                f"coefficients ({self.num_coefficients}: the intercept and one per predictor)"
            )
        if problems:
            raise DataError(problems, source="glm client data")
        self.train = prepared["train"]
        self.evaluated_on = "test" if "test" in prepared else "train"
        self.eval_data = prepared[self.evaluated_on]
        self._sgd: Any = None  # the sgd solver's torch state, built on the first fit task
        self._private_newton: PrivateNewton | None = None
        privacy = model_config.differential_privacy_params
        if privacy is not None:
            from fedsilo.packages.glm.private_newton import PrivateNewton

            resolve_delta(privacy, self.train.num_rows)  # refuse a bad delta before joining
            if model_config.solver == "newton":
                self._private_newton = PrivateNewton(
                    privacy, model_config.newton_family(), self.train
                )

    # ------------------------------------------------------------------- tasks

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        """Run one task; see the module docstring for the kinds.

        Raises
        ------
        TaskError
            On an unknown kind or a malformed ``beta``.
        """
        if kind == "target_summary":
            return self.target_summary()
        if kind == "newton_stats":
            return self.newton_stats(meta, self._beta(arrays, kind))
        if kind == "evaluate":
            return self.evaluate(self._beta(arrays, kind)), {}
        if kind == "fit":
            return self.fit(meta, self._beta(arrays, kind))
        raise TaskError(
            f"The glm client cannot run task kind {kind!r}; known kinds: {', '.join(KINDS)}."
        )

    def target_summary(self) -> tuple[dict[str, Any], Arrays]:
        """Weighted sums for the intercept-only start (see the module docstring)."""
        if self.model_config.differential_privacy_params is not None:
            raise TaskError(
                "Under differential privacy this client does not send target_summary: its "
                "sums of the training targets would be released without noise."
            )
        data = self.train
        with np.errstate(over="ignore"):
            exp_offset_sum = float(np.dot(data.weight, np.exp(data.offset)))
        summary = [
            float(data.weight.sum()),
            float(np.dot(data.weight, data.target)),
            exp_offset_sum,
            float(np.dot(data.weight, data.offset)),
        ]
        return {"num_rows": data.num_rows}, {"summary": np.asarray(summary, dtype=np.float64)}

    def statistics(self, beta: np.ndarray) -> NewtonStatistics:
        """This silo's Newton statistics at ``beta`` (the hook differential privacy wraps)."""
        return local_statistics(self.model_config.newton_family(), self.train, beta)

    def newton_stats(self, meta: dict[str, Any], beta: np.ndarray) -> tuple[dict[str, Any], Arrays]:
        """Newton statistics at ``beta``, plus evaluation metrics when ``meta["evaluate"]``."""
        if self._private_newton is not None:
            return self._private_newton.reply(meta, beta)
        if self.model_config.differential_privacy_params is not None:
            raise TaskError(
                "Under differential privacy the sgd solver's client sends no newton_stats."
            )
        stats = self.statistics(beta)
        reply: dict[str, Any] = {
            "num_rows": stats.num_rows,
            "weight_sum": stats.weight_sum,
            "train_loss": _mean_loss(self.family, stats.deviance, stats.weight_sum),
        }
        if meta.get("evaluate", False):
            reply.update(self.evaluate(beta))
        return reply, stats.to_arrays()

    def evaluate(self, beta: np.ndarray) -> dict[str, Any]:
        """Metrics of ``beta`` on the test rows (the training rows when there are none)."""
        if self.model_config.differential_privacy_params is not None and (
            self.evaluated_on == "train"
        ):
            return {"test_num_examples": 0, "test_weight_sum": 0.0, "evaluated_on": "none"}
        metrics: dict[str, Any] = evaluation_metrics(
            self.family, self.eval_data, beta, self.model_config.reported_metrics()
        )
        metrics["evaluated_on"] = self.evaluated_on
        return metrics

    def fit(self, meta: dict[str, Any], beta: np.ndarray) -> tuple[dict[str, Any], Arrays]:
        """Local SGD from ``beta`` (the ``sgd`` solver): see
        :mod:`fedsilo.packages.glm.local_sgd`."""
        from fedsilo.packages.glm.local_sgd import LocalSGD

        if self._sgd is None:
            self._sgd = LocalSGD(self.model_config, self.family, self.train, self.batch_size)
        reply, new_beta = self._sgd.fit(meta, beta)
        return reply, {"beta": new_beta}

    # ----------------------------------------------------------------- helpers

    def _beta(self, arrays: Arrays, kind: str) -> np.ndarray:
        beta = arrays.get("beta")
        expected = (self.num_coefficients,)
        if beta is None or np.shape(beta) != expected:
            got = "no 'beta' array" if beta is None else f"shape {np.shape(beta)}"
            raise TaskError(
                f"The {kind} task must carry array 'beta' of shape {expected} (intercept and "
                f"one coefficient per predictor); got {got}."
            )
        values = np.asarray(beta, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise TaskError(f"The {kind} task's 'beta' holds non-finite values.")
        return values


# --------------------------------------------------------------------- functions


def design_data(
    frame: pd.DataFrame, family: GLMFamily, data_config: GLMDataConfig, split: str
) -> tuple[DesignData | None, list[str]]:
    """Validate one frame and convert it to :class:`DesignData`.

    Parameters
    ----------
    frame : DataFrame of shape (n_rows, n_columns)
    family : Family or TanhOutput
        Decides the target's domain.
    data_config : GLMDataConfig
    split : str
        ``"train"`` or ``"test"``; prefixes every problem.

    Returns
    -------
    (DesignData or None, list of str)
        The data, or None with every problem found.
    """
    problems = find_problems(frame, data_config.required_columns(), source=split)
    if problems:
        return None, problems
    features = np.ascontiguousarray(frame[data_config.predictors].to_numpy(dtype=np.float64))
    target = frame[data_config.target].to_numpy(dtype=np.float64)
    problem = family.target_problem(target)
    if problem is not None:
        problems.append(f"{split}: target column {data_config.target!r} {problem}")
    offset = np.zeros(len(frame))
    if data_config.offset is not None:
        offset += frame[data_config.offset].to_numpy(dtype=np.float64)
    if data_config.exposure is not None:
        exposure = frame[data_config.exposure].to_numpy(dtype=np.float64)
        bad = int((exposure <= 0).sum())
        if bad:
            problems.append(
                f"{split}: exposure column {data_config.exposure!r} must be > 0; "
                f"{bad} row(s) are not"
            )
        else:
            offset += np.log(exposure)
    weight = np.ones(len(frame))
    if data_config.sample_weight is not None:
        weight = frame[data_config.sample_weight].to_numpy(dtype=np.float64)
        bad = int((weight < 0).sum())
        if bad:
            problems.append(
                f"{split}: sample_weight column {data_config.sample_weight!r} must be >= 0; "
                f"{bad} row(s) are not"
            )
    if problems:
        return None, problems
    return DesignData(features, target, offset, np.ascontiguousarray(weight)), []


def evaluation_metrics(
    family: GLMFamily, data: DesignData, beta: np.ndarray, wanted: tuple[str, ...]
) -> dict[str, Any]:
    """The evaluation metrics of coefficients ``beta`` on ``data``.

    Parameters
    ----------
    family : Family or TanhOutput
    data : DesignData
    beta : ndarray of shape (1 + n_features,)
    wanted : tuple of str
        Metric names (``GLMModelConfig.reported_metrics()``); ``loss`` is always computed.

    Returns
    -------
    dict
        ``test_loss`` (sample-weighted: cross-entropy for logistic, MSE for normal, mean unit
        deviance for the others), ``test_accuracy`` / ``test_roc_auc`` (logistic) or
        ``test_r2`` with ``test_sse``, ``target_mean``, ``target_m2`` (the others),
        ``test_num_examples`` (int) and ``test_weight_sum``. Undefined values are NaN.
    """
    eta = data.linear_predictor(beta)
    with np.errstate(over="ignore", invalid="ignore"):
        deviance = family.unit_deviance(data.target, eta)
        mu = family.mean(eta)
    weight = data.weight
    total = float(weight.sum())
    used = weight > 0
    metrics: dict[str, Any] = {
        "test_loss": _mean_loss(family, float(np.dot(weight[used], deviance[used])), total)
    }
    if family.task == "logistic":
        if "accuracy" in wanted:
            # Class 1 where eta > 0, as scikit-learn's LogisticRegression.predict decides.
            correct = (eta > 0.0) == (data.target == 1.0)
            metrics["test_accuracy"] = (
                float(np.dot(weight, correct) / total) if total > 0 else math.nan
            )
        if "roc_auc" in wanted:
            metrics["test_roc_auc"] = binary_roc_auc(data.target, eta, weight)
    elif "r2" in wanted:
        _, sse, mean, m2 = r2_part(data.target, mu, weight)
        metrics["test_r2"] = 1.0 - sse / m2 if m2 > 0 else math.nan
        metrics["test_sse"] = sse
        metrics["target_mean"] = mean
        metrics["target_m2"] = m2
    metrics["test_num_examples"] = data.num_rows
    metrics["test_weight_sum"] = total
    return metrics


def _mean_loss(family: GLMFamily, deviance: float, weight_sum: float) -> float:
    if weight_sum <= 0 or not math.isfinite(deviance):
        return math.nan
    return family.loss_factor() * deviance / weight_sum
