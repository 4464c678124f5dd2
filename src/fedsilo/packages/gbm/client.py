"""The client half of gbm: sketches, binning, histograms and evaluation on a silo's rows.

Pure computation on local data; what leaves the silo is sketches of each predictor, target
sums, histograms of gradient/hessian sums and counts per node, feature and bin, and metrics.

Task kinds
----------
``sketch``
    Meta ``{"relative_accuracy"}``. Replies arrays ``sketch/<j>/<part>`` (the DDSketch of
    predictor ``j``, :meth:`QuantileSketch.to_arrays`), meta ``{"num_rows", "target_sum",
    "zero_counts"}``.
``bin``
    Arrays of a :class:`~fedsilo.packages.gbm.predictor.Forest` (cuts, baseline, trees so far).
    Bins the training (and test) rows once, sets raw predictions to the forest's, computes
    gradients and hessians. Replies ``{"num_rows"}``.
``histograms``
    Arrays ``splits`` of shape (n_splits, 5) (node, feature, bin, left, right) to apply and
    ``nodes`` of shape (n_nodes,). Replies array ``histograms`` of shape
    (n_nodes, n_features, n_bins, 3) (:func:`~fedsilo.packages.gbm.histograms.node_histograms`).
``update``
    Arrays ``tree/<field>`` of the finished tree. Adds it to the raw predictions, evaluates,
    computes the next tree's gradients. Replies metrics: ``test_loss`` (log loss or mean
    squared error), ``test_accuracy`` and ``test_roc_auc`` or ``test_r2`` with the pooling
    statistics ``test_sse``, ``target_mean``, ``target_m2``; ``test_num_examples``,
    ``test_weight_sum``, ``train_loss``, ``num_rows`` and ``evaluated_on``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsilo.analytics.sketch import QuantileSketch
from fedsilo.data.dataset import LocalDataset
from fedsilo.data.validation import find_problems
from fedsilo.errors import DataError, TaskError
from fedsilo.federation import ExecutorContext
from fedsilo.packages.gbm.binning import bin_matrix
from fedsilo.packages.gbm.config import GBMDataConfig, GBMModelConfig
from fedsilo.packages.gbm.histograms import node_histograms
from fedsilo.packages.gbm.predictor import TREE_FIELDS, Forest, expit, leaf_index
from fedsilo.wire import Arrays
from fedsilo.workflows.metrics import binary_roc_auc, r2_part

__all__ = ["KINDS", "GBMExecutor", "loss_value"]

KINDS = ("bin", "histograms", "sketch", "update")

# Probabilities are clipped this far from 0 and 1 in the log loss (scikit-learn's log_loss
# clips at the float64 epsilon as well).
_EPS = float(np.finfo(np.float64).eps)


def loss_value(task: str, y: np.ndarray, raw: np.ndarray) -> float:
    """Mean log loss (classification) or mean squared error (regression) of raw predictions."""
    if y.size == 0:
        return float("nan")
    if task == "classification":
        p = np.clip(expit(raw), _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
    return float(np.mean((y - raw) ** 2))


class GBMExecutor:
    """Runs gbm tasks on one silo's data.

    Parameters
    ----------
    model_config : GBMModelConfig
    data_config : GBMDataConfig
    dataset : LocalDataset
        ``train`` (required, non-empty) and ``test`` (optional; metrics come from the
        training rows when absent).

    Raises
    ------
    DataError
        When a column is missing, non-numeric or null, or a classification target is not 0/1.
    """

    def __init__(
        self,
        model_config: GBMModelConfig,
        data_config: GBMDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> None:
        self.task = model_config.ml_task.type
        self.columns = list(data_config.predictors)
        required = data_config.required_columns()
        problems = find_problems(dataset.train, required, "the training data")
        if dataset.test is not None:
            problems += find_problems(dataset.test, required, "the test data")
        if problems:
            raise DataError(problems)
        if len(dataset.train) == 0:
            raise DataError(["The training data has no rows; gbm needs at least one."])
        self.x = dataset.train[self.columns].to_numpy(np.float64)
        self.y = dataset.train[data_config.target].to_numpy(np.float64)
        test = dataset.test if dataset.test is not None and len(dataset.test) else None
        self.x_test = None if test is None else test[self.columns].to_numpy(np.float64)
        self.y_test = None if test is None else test[data_config.target].to_numpy(np.float64)
        if self.task == "classification":
            for name, y in (("training", self.y), ("test", self.y_test)):
                if y is not None and not np.isin(y, (0.0, 1.0)).all():
                    bad = np.unique(y[~np.isin(y, (0.0, 1.0))])[:5].tolist()
                    raise DataError(
                        [
                            f"The {name} target {data_config.target!r} must hold 0 and 1 "
                            f"for binary classification. Got values such as {bad}."
                        ]
                    )
        self.binned: np.ndarray | None = None
        self.binned_test: np.ndarray | None = None
        self.raw = np.zeros(self.y.size)
        self.raw_test = np.zeros(0 if self.y_test is None else self.y_test.size)
        self.node_of_row = np.zeros(self.y.size, dtype=np.int64)
        self.gradients = np.zeros(self.y.size)
        self.hessians = np.zeros(self.y.size)
        self.n_bins = 1

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        if kind not in KINDS:
            raise TaskError(
                f"The gbm client does not handle task kind {kind!r}; it handles {', '.join(KINDS)}."
            )
        if kind == "sketch":
            return self._sketch(meta)
        if kind == "bin":
            return self._bin(arrays)
        if self.binned is None:
            raise TaskError(f"Cannot run a gbm {kind!r} task before the 'bin' task.")
        if kind == "histograms":
            return self._histograms(arrays)
        return self._update(arrays)

    # --------------------------------------------------------------- tasks

    def _sketch(self, meta: dict[str, Any]) -> tuple[dict[str, Any], Arrays]:
        accuracy = meta.get("relative_accuracy")
        if not isinstance(accuracy, float) or not 0.0 < accuracy < 1.0:
            raise TaskError(
                f"The sketch task needs meta 'relative_accuracy' in (0, 1). Got {accuracy!r}."
            )
        arrays: Arrays = {}
        zero_counts = []
        for j in range(self.x.shape[1]):
            sketch = QuantileSketch(accuracy)
            sketch.add(self.x[:, j])
            for part, values in sketch.to_arrays().items():
                arrays[f"sketch/{j}/{part}"] = values
            zero_counts.append(sketch.zero_count)
        reply = {
            "num_rows": int(self.y.size),
            "target_sum": float(self.y.sum()),
            "zero_counts": zero_counts,
        }
        return reply, arrays

    def _bin(self, arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        forest = Forest.from_arrays(arrays, len(self.columns))
        self.binned = bin_matrix(self.x, forest.cuts)
        self.n_bins = 1 + max(c.size for c in forest.cuts)
        self.raw = forest.raw_binned(self.binned)
        if self.x_test is not None:
            self.binned_test = bin_matrix(self.x_test, forest.cuts)
            self.raw_test = forest.raw_binned(self.binned_test)
        self._start_tree()
        return {"num_rows": int(self.y.size)}, {}

    def _start_tree(self) -> None:
        self.node_of_row[:] = 0
        if self.task == "classification":
            p = expit(self.raw)
            self.gradients, self.hessians = p - self.y, p * (1.0 - p)
        else:  # half squared error: g = raw - y, h = 1 (scikit-learn's HalfSquaredError)
            self.gradients, self.hessians = self.raw - self.y, np.ones_like(self.y)

    def _histograms(self, arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        assert self.binned is not None
        splits = np.asarray(arrays.get("splits", np.zeros((0, 5))), dtype=np.int64).reshape(-1, 5)
        for node, feature, bin_, left, right in splits.tolist():
            rows = self.node_of_row == node
            go_left = self.binned[:, feature] <= bin_
            self.node_of_row[rows & go_left] = left
            self.node_of_row[rows & ~go_left] = right
        nodes = np.asarray(arrays.get("nodes", np.zeros(0)), dtype=np.int64).ravel()
        histograms = node_histograms(
            self.binned, self.gradients, self.hessians, self.node_of_row, nodes, self.n_bins
        )
        return {"num_rows": int(self.y.size)}, {"histograms": histograms}

    def _update(self, arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        assert self.binned is not None
        missing = [f"tree/{n}" for n in TREE_FIELDS if f"tree/{n}" not in arrays]
        if missing:
            raise TaskError(f"The update task needs arrays {', '.join(missing)}.")
        tree = {name: np.asarray(arrays[f"tree/{name}"]) for name in TREE_FIELDS}
        self.raw += tree["value"][leaf_index(tree, self.binned, tree["bin"])]
        if self.binned_test is not None:
            self.raw_test += tree["value"][leaf_index(tree, self.binned_test, tree["bin"])]
        reply = self._evaluate()
        self._start_tree()
        return reply, {}

    # ----------------------------------------------------------- evaluation

    def _evaluate(self) -> dict[str, Any]:
        on_test = self.y_test is not None
        y = self.y_test if self.y_test is not None else self.y
        raw = self.raw_test if on_test else self.raw
        metrics: dict[str, Any] = {
            "num_rows": int(self.y.size),
            "train_loss": loss_value(self.task, self.y, self.raw),
            "test_loss": loss_value(self.task, y, raw),
            "test_num_examples": int(y.size),
            "test_weight_sum": float(y.size),
            "evaluated_on": "test" if on_test else "train",
        }
        if self.task == "classification":
            metrics["test_accuracy"] = float(np.mean((raw > 0) == (y == 1)))
            metrics["test_roc_auc"] = binary_roc_auc(y, raw)
        else:
            _, sse, mean, m2 = r2_part(y, raw)
            metrics.update(
                test_sse=sse,
                target_mean=mean,
                target_m2=m2,
                test_r2=1.0 - sse / m2 if m2 > 0 else float("nan"),
            )
        return metrics
