"""The bundle's per-silo statistics: every chunk's Newton terms in one vectorised pass.

Model ``j`` of the bundle regresses the target on the shared design ``S`` (intercept first,
shape (n, s)) and the one chunked column ``c_j``: ``eta_j = S b_j + c_j a_j`` with
``k = s + 1`` coefficients ``beta_j = (b_j, a_j)``. Its Newton statistics are those of
:mod:`fedsilo.packages.glm.newton` (gradient and Fisher matrix of half the deviance, from
the glm family's :meth:`~fedsilo.packages.glm.families.Family.row_terms`), assembled blockwise
so no (n, k) design is ever built per chunk::

    gradient_j = [S^T g_j,  c_j^T g_j]
    fisher_j   = [[S^T W_j S,    S^T W_j c_j],
                  [c_j^T W_j S,  c_j^T W_j c_j]]

with ``g_j`` and ``W_j = diag(w_j)`` the per-row gradient scales and Fisher weights of model
``j``. ``S^T W_j S`` is one matrix product for all chunks of a block:
``P^T w`` with ``P`` the (n, s(s+1)/2) products of pairs of shared columns. For OLS the
weights are 1, so Newton from 0 is the normal equations.

Chunks are processed in blocks so the (n, block) temporaries stay near ``_BLOCK_ELEMENTS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsilo.packages.glm.families import Family

__all__ = ["BundleStatistics", "ChunkedDesign", "bundle_evaluation", "bundle_statistics"]

# ~4M float64 per (n, block) temporary (32 MB): large enough for BLAS to run at speed,
# small enough that the handful of temporaries of one block stays in a few hundred MB.
_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class ChunkedDesign:
    """One silo's rows as the bundle needs them.

    Parameters
    ----------
    shared : ndarray of shape (n_rows, 1 + n_shared), float64
        An intercept column of ones, then the shared predictors.
    chunked : ndarray of shape (n_rows, n_chunked), float64
    target : ndarray of shape (n_rows,)
    """

    shared: np.ndarray
    chunked: np.ndarray
    target: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.target.shape[0])

    def blocks(self) -> list[slice]:
        """Slices of chunk indices, each one (n_rows, block) temporary."""
        m = self.chunked.shape[1]
        size = max(1, _BLOCK_ELEMENTS // max(1, self.num_rows))
        return [slice(start, min(m, start + size)) for start in range(0, m, size)]

    def linear_predictor(self, betas: np.ndarray, block: slice) -> np.ndarray:
        """``eta`` of the models of ``block``; shape (n_rows, block size).

        ``betas`` has shape (n_chunked, k): shared coefficients first, the chunk's last.
        """
        s = self.shared.shape[1]
        b = betas[block]
        eta: np.ndarray = self.shared @ b[:, :s].T + self.chunked[:, block] * b[:, s]
        return eta


@dataclass(frozen=True)
class BundleStatistics:
    """Newton statistics of every model of the bundle, summed over rows.

    Attributes
    ----------
    gradient : ndarray of shape (n_chunked, k)
    fisher : ndarray of shape (n_chunked, k, k)
    deviance : ndarray of shape (n_chunked,)
    num_rows : int
    """

    gradient: np.ndarray
    fisher: np.ndarray
    deviance: np.ndarray
    num_rows: int


def bundle_statistics(family: Family, data: ChunkedDesign, betas: np.ndarray) -> BundleStatistics:
    """Every model's gradient, Fisher matrix and deviance at ``betas`` on ``data``.

    Parameters
    ----------
    family : Family
        ``logistic`` or ``normal`` (identity link).
    data : ChunkedDesign
    betas : ndarray of shape (n_chunked, k)
        ``k = 1 + n_shared + 1``: intercept, shared predictors, the chunk.

    Returns
    -------
    BundleStatistics
    """
    shared, target = data.shared, data.target
    m, s = data.chunked.shape[1], shared.shape[1]
    k = s + 1
    gradient = np.empty((m, k))
    fisher = np.empty((m, k, k))
    deviance = np.empty(m)
    rows, cols = np.triu_indices(s)
    pairs = shared[:, rows] * shared[:, cols]  # (n, s(s+1)/2)
    y = target[:, None]
    for block in data.blocks():
        chunk = data.chunked[:, block]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            terms = family.row_terms(y, data.linear_predictor(betas, block))
        g, w = terms.gradient_scale, terms.fisher_weight
        gradient[block, :s] = (shared.T @ g).T
        gradient[block, s] = np.einsum("nb,nb->b", chunk, g)
        upper = (pairs.T @ w).T  # (b, s(s+1)/2)
        fisher[block, rows, cols] = upper
        fisher[block, cols, rows] = upper
        weighted = w * chunk
        cross = (shared.T @ weighted).T  # (b, s)
        fisher[block, :s, s] = cross
        fisher[block, s, :s] = cross
        fisher[block, s, s] = np.einsum("nb,nb->b", weighted, chunk)
        deviance[block] = terms.deviance.sum(axis=0)
    return BundleStatistics(gradient, fisher, deviance, data.num_rows)


def bundle_evaluation(
    family: Family, data: ChunkedDesign, betas: np.ndarray, active: np.ndarray, wanted: tuple[str, ...]
) -> dict[str, float]:
    """Test metrics of the bundle on ``data``, each the mean over the active models.

    Parameters
    ----------
    family : Family
    data : ChunkedDesign
    betas : ndarray of shape (n_chunked, k)
    active : ndarray of bool, shape (n_chunked,)
        Models to include (singular or failed ones are left out).
    wanted : tuple of str
        ``loss`` always; ``accuracy``, ``roc_auc`` (logistic) or ``r2`` (linear).

    Returns
    -------
    dict
        ``test_loss`` (mean cross-entropy, or mean squared error), ``test_accuracy`` /
        ``test_roc_auc`` or ``test_r2``, and ``test_num_examples``. NaN when undefined.
    """
    from scipy.stats import rankdata  # type: ignore[import-untyped]

    n = data.num_rows
    totals: dict[str, float] = dict.fromkeys(("loss", "accuracy", "roc_auc", "r2"), 0.0)
    y = data.target
    positives = float(y.sum())
    negatives = n - positives
    m2 = float(np.sum((y - y.mean()) ** 2)) if n else 0.0
    count = int(active.sum())
    for block in data.blocks():
        used = active[block]
        if not np.any(used):
            continue
        eta = data.linear_predictor(betas, block)[:, used]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            deviance = family.unit_deviance(y[:, None], eta)
        totals["loss"] += float(deviance.sum()) * family.loss_factor()
        if family.task == "logistic":
            if "accuracy" in wanted:
                totals["accuracy"] += float(np.sum((eta > 0.0) == (y[:, None] == 1.0)))
            if "roc_auc" in wanted and positives > 0 and negatives > 0:
                # Mann-Whitney: the AUC from the ranks (ties averaged) of the positives.
                ranks = rankdata(eta, axis=0)
                rank_sum = ranks[y == 1.0].sum(axis=0)
                auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
                totals["roc_auc"] += float(auc.sum())
        elif "r2" in wanted and m2 > 0:
            totals["r2"] += float(np.sum(1.0 - deviance.sum(axis=0) / m2))
    metrics: dict[str, float] = {"test_num_examples": float(n)}
    if count == 0 or n == 0:
        metrics["test_loss"] = float("nan")
        return metrics
    metrics["test_loss"] = totals["loss"] / (count * n)
    if family.task == "logistic":
        if "accuracy" in wanted:
            metrics["test_accuracy"] = totals["accuracy"] / (count * n)
        if "roc_auc" in wanted:
            defined = positives > 0 and negatives > 0
            metrics["test_roc_auc"] = totals["roc_auc"] / count if defined else float("nan")
    elif "r2" in wanted:
        metrics["test_r2"] = totals["r2"] / count if m2 > 0 else float("nan")
    return metrics
