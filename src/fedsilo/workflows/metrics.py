"""Evaluation metrics: per-client values and their pooling into federated metrics.

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

:class:`PooledMetrics` reduces a round's replies to federated metrics *by metric name*
(:data:`REDUCERS`): ``loss``, ``accuracy``, ``roc_auc_client_mean``, ``r2_client_mean`` and
``r2``, each from the client keys of the same name (``test_loss``, ...) weighted by one
weight key. Reducers fold one reply at a time, so replies can stream in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Reply

__all__ = [
    "REDUCERS",
    "STATISTIC_KEYS",
    "MetricReducer",
    "PooledMetrics",
    "PooledR2",
    "R2Part",
    "WeightedMean",
    "binary_roc_auc",
    "client_metrics",
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


def weighted_mean(replies: Iterable[Reply], key: str, weight_key: str) -> float | None:
    """Mean of ``meta[key]`` weighted by ``meta[weight_key]`` over the replies where both are
    finite; None when no reply has them.

    Raises
    ------
    TaskError
        When a weight is negative.
    """
    mean = WeightedMean(key, weight_key)
    for reply in replies:
        mean.add(reply)
    return mean.result()


class MetricReducer(Protocol):
    """Folds replies one at a time into one federated metric."""

    def add(self, reply: Reply) -> None: ...

    def result(self) -> float | None:
        """The metric, or None when no reply defined it."""
        ...


class WeightedMean:
    """The mean of ``meta[key]`` weighted by ``meta[weight_key]`` (see :func:`weighted_mean`)."""

    def __init__(self, key: str, weight_key: str) -> None:
        self.key = key
        self.weight_key = weight_key
        self._total = 0.0
        self._weight_sum = 0.0

    def add(self, reply: Reply) -> None:
        value = finite_number(reply.meta, self.key)
        weight = finite_number(reply.meta, self.weight_key)
        if value is None or weight is None:
            return
        if weight < 0:
            raise TaskError(
                f"The reply of client {reply.participant.client_name!r} has "
                f"meta[{self.weight_key!r}] = {weight}; expected a count >= 0."
            )
        self._total += weight * value
        self._weight_sum += weight

    def result(self) -> float | None:
        return self._total / self._weight_sum if self._weight_sum > 0 else None


class PooledR2:
    """The exact pooled R^2 from each reply's ``weight_key``, ``test_sse``, ``target_mean``
    and ``target_m2`` (see :func:`pooled_r2`); None as soon as one reply lacks them, since
    the pooled value of the others would not be the session's."""

    def __init__(self, weight_key: str) -> None:
        self.keys = (weight_key, "test_sse", "target_mean", "target_m2")
        self._parts: list[R2Part] | None = []

    def add(self, reply: Reply) -> None:
        values = [finite_number(reply.meta, key) for key in self.keys]
        if self._parts is None:
            return
        if any(v is None for v in values):
            self._parts = None
            return
        weight, sse, mean, m2 = (float(v) for v in values if v is not None)
        self._parts.append((weight, sse, mean, m2))

    def result(self) -> float | None:
        return None if self._parts is None else pooled_r2(self._parts)


#: ``factory(weight_key) -> reducer``: how a metric pools, by its federated name
ReducerFactory = Callable[[str], MetricReducer]

#: federated metric name -> its reducer; the client reports ``test_<name>`` (``test_roc_auc``
#: for ``roc_auc_client_mean``), and ``r2`` pools from sufficient statistics instead
REDUCERS: dict[str, ReducerFactory] = {
    "loss": lambda weight: WeightedMean("test_loss", weight),
    "accuracy": lambda weight: WeightedMean("test_accuracy", weight),
    "roc_auc_client_mean": lambda weight: WeightedMean("test_roc_auc", weight),
    "r2_client_mean": lambda weight: WeightedMean("test_r2", weight),
    "r2": PooledR2,
}

#: client keys that exist only to pool a metric; not a client's own metric
STATISTIC_KEYS = ("test_sse", "test_weight_sum")


class PooledMetrics:
    """A round's federated metrics from its evaluate replies, reduced by metric name.

    Parameters
    ----------
    names : sequence of str, default every name of :data:`REDUCERS`
        The federated metrics to compute.
    weight_key : str, default "test_num_examples"
        The reply meta key that weighs each client: its test row count, or its sample-weight
        sum (``"test_weight_sum"``) for packages with sample weights.
    extra : mapping of str to callable, optional
        Further metrics: name -> ``factory() -> reducer`` (e.g. a ``train_loss`` weighted by
        another key).

    Examples
    --------
    >>> pool = PooledMetrics(("loss", "accuracy"))
    >>> federated = pool(replies)  # {"loss": ..., "accuracy": ...}, undefined ones left out
    """

    def __init__(
        self,
        names: Sequence[str] = tuple(REDUCERS),
        weight_key: str = "test_num_examples",
        extra: Mapping[str, Callable[[], MetricReducer]] | None = None,
    ) -> None:
        unknown = [name for name in names if name not in REDUCERS]
        if unknown:
            raise ValueError(
                f"Unknown federated metric(s) {unknown}; known: {', '.join(REDUCERS)}."
            )
        self.names = tuple(names)
        self.weight_key = weight_key
        self.extra = dict(extra or {})

    def reducers(self) -> dict[str, MetricReducer]:
        """Fresh reducers, one per metric, to fold a stream of replies into."""
        reducers = {name: REDUCERS[name](self.weight_key) for name in self.names}
        reducers.update({name: factory() for name, factory in self.extra.items()})
        return reducers

    def __call__(self, replies: Iterable[Reply]) -> dict[str, float]:
        """The federated metrics of ``replies`` (consumed once); undefined ones left out
        rather than sent as NaN."""
        reducers = self.reducers()
        for reply in replies:
            for reducer in reducers.values():
                reducer.add(reply)
        return {
            name: value
            for name, reducer in reducers.items()
            if (value := reducer.result()) is not None
        }


def client_metrics(
    replies: Iterable[Reply], extra_keys: Sequence[str] = ("train_loss",)
) -> dict[str, dict[str, float]]:
    """Each client's own metrics, keyed by client name: its finite ``test_*`` values (less
    the pooling statistics :data:`STATISTIC_KEYS`) and ``extra_keys``."""
    result: dict[str, dict[str, float]] = {}
    for reply in replies:
        result[reply.participant.client_name] = {
            key: number
            for key in reply.meta
            if (key.startswith("test_") or key in extra_keys)
            and key not in STATISTIC_KEYS
            and (number := finite_number(reply.meta, key)) is not None
        }
    return result


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
