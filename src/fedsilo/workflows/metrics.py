"""Evaluation metrics shared by the model packages: per-client values and their pooling.

A federated metric is computed from what clients report about their own test rows. Two
kinds exist:

* **means** (loss, accuracy, mean deviance): the mean over client ``k``'s rows weighted by
  its row count (or sample-weight sum) ``n_k`` -- :func:`weighted_mean` -- is *exactly* the
  mean over the pooled rows;
* **ratios of sums** such as R^2 = 1 - SSE / SST: the weighted mean of the clients' R^2 is
  not the pooled R^2, but the pooled value follows exactly from per-client sufficient
  statistics (:func:`pooled_r2`). A rank statistic such as ROC AUC has no such form (it
  would need every score), so packages report its weighted client mean under a name saying
  so (``roc_auc_client_mean``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Reply

__all__ = [
    "R2Part",
    "binary_roc_auc",
    "finite_number",
    "pooled_r2",
    "r2_part",
    "weighted_mean",
]

#: one client's R^2 sufficient statistics: (weight sum, SSE, target mean, target M2)
R2Part = tuple[float, float, float, float]


def finite_number(meta: Mapping[str, Any], key: str) -> float | None:
    """``meta[key]`` as a float, or None when absent, not a number or not finite.

    NaN travels as JSON null; both mean "undefined".
    """
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def weighted_mean(replies: Sequence[Reply], key: str, weight_key: str) -> float | None:
    """Mean of ``meta[key]`` weighted by ``meta[weight_key]`` over the replies where both are
    finite; None when no reply has them.

    Raises
    ------
    TaskError
        When a weight is negative.
    """
    total = 0.0
    weight_sum = 0.0
    for reply in replies:
        value = finite_number(reply.meta, key)
        weight = finite_number(reply.meta, weight_key)
        if value is None or weight is None:
            continue
        if weight < 0:
            raise TaskError(
                f"The reply of client {reply.participant.client_name!r} has "
                f"meta[{weight_key!r}] = {weight}; expected a count >= 0."
            )
        total += weight * value
        weight_sum += weight
    return total / weight_sum if weight_sum > 0 else None


def r2_part(target: np.ndarray, prediction: np.ndarray, weight: np.ndarray | None = None) -> R2Part:
    """One dataset's R^2 sufficient statistics.

    Parameters
    ----------
    target, prediction : ndarray of shape (n_samples,)
    weight : ndarray of shape (n_samples,), optional
        Sample weights (default: ones).

    Returns
    -------
    (weight_sum, sse, mean, m2)
        ``sum w``, ``sum w (y - yhat)^2``, the weighted mean of ``y`` and
        ``sum w (y - mean)^2``.
    """
    y = np.asarray(target, dtype=np.float64)
    w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64)
    total = float(w.sum())
    if total <= 0:
        return 0.0, 0.0, 0.0, 0.0
    mean = float(np.dot(w, y) / total)
    sse = float(np.dot(w, (y - np.asarray(prediction, dtype=np.float64)) ** 2))
    m2 = float(np.dot(w, (y - mean) ** 2))
    return total, sse, mean, m2


def pooled_r2(parts: Iterable[R2Part]) -> float | None:
    """The exact R^2 of the pooled rows from per-client :func:`r2_part` statistics.

    SSE pools as a sum. SST pools by Chan et al.'s parallel variance formula,
    ``M2 = sum M2_k + sum n_k (mean_k - mean)^2``, exact and free of the cancellation of
    ``sum y^2 - n mean^2``.

    Returns
    -------
    float or None
        None without parts, or when the pooled target is constant (R^2 undefined).
    """
    collected = [part for part in parts if part[0] > 0]
    if not collected:
        return None
    total = sum(n for n, _, _, _ in collected)
    mean = sum(n * m for n, _, m, _ in collected) / total
    sst = sum(m2 + n * (m - mean) ** 2 for n, _, m, m2 in collected)
    sse = sum(sse for _, sse, _, _ in collected)
    return 1.0 - sse / sst if sst > 0 else None


def binary_roc_auc(
    labels: np.ndarray, scores: np.ndarray, weight: np.ndarray | None = None
) -> float:
    """Area under the ROC curve of a binary problem; NaN when one class is absent.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), values 0 and 1
    scores : ndarray of shape (n_samples,)
        Higher means more likely class 1.
    weight : ndarray of shape (n_samples,), optional
        Sample weights.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    present = labels if weight is None else labels[np.asarray(weight) > 0]
    if np.unique(present).size < 2:
        return math.nan
    return float(roc_auc_score(labels, scores, sample_weight=weight))
