"""The bundle's per-silo statistics: every chunk's Newton terms in one vectorised pass.

Model ``j`` of the bundle regresses the target on the shared design ``S`` (intercept first,
shape (n, s)) and the one chunked column ``c_j``: ``eta_j = S b_j + c_j a_j`` with
``k = s + 1`` coefficients ``beta_j = (b_j, a_j)``. Its Newton statistics are those of
:mod:`fedsilo.regression.newton` (gradient and Fisher matrix of half the deviance, from
the glm family's :meth:`~fedsilo.regression.families.Family.row_terms`), assembled blockwise
so no (n, k) design is ever built per chunk::

    gradient_j = [S^T g_j,  c_j^T g_j]
    fisher_j   = [[S^T W_j S,    S^T W_j c_j],
                  [c_j^T W_j S,  c_j^T W_j c_j]]

with ``g_j`` and ``W_j = diag(w_j)`` the per-row gradient scales and Fisher weights of model
``j``. ``S^T W_j S`` is one matrix product for all chunks of a block:
``P^T w`` with ``P`` the (n, s(s+1)/2) products of pairs of shared columns. For OLS the
weights are 1, so Newton from 0 is the normal equations.

The statistics run on tiles of rows x chunks (``_TILE_ROWS`` x ``_TILE_CHUNKS``) on a thread
pool; the evaluation on blocks of chunks whose (n, block) temporaries stay near
``_BLOCK_ELEMENTS``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

# scikit-learn's dependency; untyped.
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from fedsilo.regression.families import Family

__all__ = ["BundleStatistics", "ChunkedDesign", "bundle_evaluation", "bundle_statistics"]

# ~4M float64 per (n, block) temporary of the evaluation (32 MB).
_BLOCK_ELEMENTS = 4_000_000
# The statistics' tiles: 4096 rows x 64 chunks = 2 MB per temporary, so the dozen elementwise
# passes of a tile run from cache rather than memory (measured ~3x faster than (n, 80) blocks).
_TILE_ROWS = 4096
_TILE_CHUNKS = 64
_THREADS = min(4, os.cpu_count() or 1)


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

    The per-row terms are the glm family's (:meth:`Family.row_terms`: ``mu - y``,
    ``mu (1 - mu)`` and ``2 (log(1 + e^eta) - y eta)`` for logit; ``eta - y``, 1 and
    ``(y - eta)^2`` for OLS), computed in fused form on cache-sized tiles of rows x chunks:
    this pass touches every genotype of the silo once per round, so it is the bundle's cost.
    Tiles of different chunks run on a thread pool (numpy and BLAS release the GIL).

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
    if family.task not in ("logistic", "normal") or family.link not in ("logit", "identity"):
        raise ValueError(f"linear_inference fits logit or OLS models, not {family}")
    m, s = data.chunked.shape[1], data.shared.shape[1]
    k = s + 1
    out = BundleStatistics(np.empty((m, k)), np.empty((m, k, k)), np.empty(m), data.num_rows)
    starts = range(0, m, _TILE_CHUNKS)
    logistic = family.task == "logistic"
    # The tiles' products are tiny (4096 x s by s x 64): a multithreaded BLAS only spins on
    # them, and spinning threads next to the tile pool made a round ~10x slower (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        if _THREADS > 1 and len(starts) > 1:
            with ThreadPoolExecutor(_THREADS) as pool:
                list(pool.map(lambda j: _tile(logistic, data, betas, j, out), starts))
        else:
            for j in starts:
                _tile(logistic, data, betas, j, out)
    return out


def _tile(
    logistic: bool, data: ChunkedDesign, betas: np.ndarray, first: int, out: BundleStatistics
) -> None:
    """Fill ``out`` for chunks ``first .. first + _TILE_CHUNKS``, summing over row tiles."""
    shared, target = data.shared, data.target
    s = shared.shape[1]
    chunks = slice(first, min(first + _TILE_CHUNKS, data.chunked.shape[1]))
    b = betas[chunks]
    shared_coef, chunk_coef = b[:, :s].T.copy(), b[:, s].copy()
    width = b.shape[0]
    rows, cols = np.triu_indices(s)
    gradient = np.zeros((width, s + 1))
    upper = np.zeros((rows.size, width))
    cross = np.zeros((s, width))
    corner = np.zeros(width)
    deviance = np.zeros(width)
    for start in range(0, data.num_rows, _TILE_ROWS):
        part = slice(start, start + _TILE_ROWS)
        x, y, c = shared[part], target[part], data.chunked[part, chunks]
        eta = x @ shared_coef
        eta += c * chunk_coef
        if logistic:
            # e = exp(-|eta|) keeps every term finite: mu = 1/(1+e) or e/(1+e) by the sign,
            # mu (1 - mu) = e / (1+e)^2 either way, log(1 + e^eta) = max(eta, 0) + log1p(e).
            e = np.abs(eta)
            np.negative(e, out=e)
            np.exp(e, out=e)
            inverse = e + 1.0
            np.reciprocal(inverse, out=inverse)
            mu = np.where(eta >= 0.0, inverse, e * inverse)
            weight = e * inverse
            weight *= inverse
            deviance += np.log1p(e).sum(axis=0) + np.maximum(eta, 0.0).sum(axis=0) - y @ eta
            mu -= y[:, None]
            residual = mu
        else:
            eta -= y[:, None]
            residual = eta
            weight = None
            deviance += np.einsum("rb,rb->b", residual, residual)
        gradient[:, :s] += (x.T @ residual).T
        gradient[:, s] += np.einsum("rb,rb->b", c, residual)
        pairs = x[:, rows] * x[:, cols]
        if weight is None:  # OLS: every Fisher weight is 1
            upper += pairs.sum(axis=0)[:, None]
            cross += x.T @ c
            corner += np.einsum("rb,rb->b", c, c)
        else:
            upper += pairs.T @ weight
            weighted = weight * c
            cross += x.T @ weighted
            corner += np.einsum("rb,rb->b", weighted, c)
    fisher = out.fisher[chunks]
    fisher[:, rows, cols] = upper.T
    fisher[:, cols, rows] = upper.T
    fisher[:, :s, s] = cross.T
    fisher[:, s, :s] = cross.T
    fisher[:, s, s] = corner
    out.gradient[chunks] = gradient
    out.deviance[chunks] = 2.0 * deviance if logistic else deviance


def bundle_evaluation(
    family: Family,
    data: ChunkedDesign,
    betas: np.ndarray,
    active: np.ndarray,
    wanted: tuple[str, ...],
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
