"""Exact federated GLM fitting: per-silo Newton statistics, summed and solved on the server.

The objective is scikit-learn's and glmnet's (``sklearn/linear_model/_glm/glm.py``)::

    F(beta) = 1/(2 W) * sum_i s_i d(y_i, mu_i)  +  alpha * (l1_ratio * |w|_1
                                                   + (1 - l1_ratio) / 2 * |w|_2^2)

with ``mu_i = h(beta_0 + x_i . w + offset_i)``, sample weights ``s_i``, ``W = sum_i s_i``
over *all* silos, and the intercept ``beta_0`` unpenalized. With ``alpha = 0`` its minimiser
is the maximum-likelihood estimate, the same as statsmodels' GLM on the pooled rows.

Every term of ``F`` except the penalty is a sum over rows, so each silo sends, at the current
``beta`` (``k = 1 + n_features`` coefficients):

* ``gradient`` (k,): ``sum_i s_i * dh_i/deta * x~_i`` with ``h = d/2`` and ``x~ = (1, x)``;
* ``fisher`` (k, k): ``sum_i s_i * w_i * x~_i x~_i^T``, the *expected* Hessian of ``D/2``
  (Fisher information times the dispersion). For the canonical links (logistic, Poisson,
  normal-identity) it equals the observed Hessian; for the log links of normal, gamma,
  inverse Gaussian and Tweedie this is Fisher scoring, i.e. IRLS -- what statsmodels and R's
  ``glm`` do, and always positive semi-definite, so every step is a descent direction;
* ``deviance``, ``pearson`` (sum of ``s_i (y_i - mu_i)^2 / V(mu_i)``), ``weight_sum``,
  ``num_rows``.

The sums of these are exactly what the pooled data would give (up to floating-point
summation order). The server then minimises the quadratic model of ``F`` plus the penalty
(:func:`newton_point`): a linear solve without L1, cyclic coordinate descent with soft
thresholding with L1 (a proximal Newton step, Lee, Sun & Saunders 2014; glmnet's inner loop).

:func:`row_terms` and :func:`sum_row_terms` are kept apart on purpose: differential privacy
clips each row's contribution to the gradient and the Fisher matrix before the sum and adds
noise after it, by wrapping :func:`local_statistics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.regression.families import Family, RowTerms
from fedsilo.wire import Arrays

__all__ = [
    "ACCEPT_SLACK",
    "MAX_HALVINGS",
    "ConvergenceWarning",
    "DesignData",
    "NewtonStatistics",
    "Penalty",
    "batched_newton_point",
    "batched_singular",
    "batched_step_size",
    "local_statistics",
    "newton_point",
    "objective",
    "row_terms",
    "step_size",
    "sum_row_terms",
]

# F(trial) may exceed F(beta_a) by this relative amount and still be accepted: near the
# optimum the two differ by less than the rounding error of F, a sum of terms of mixed sign
# (Poisson: y log y - y eta + mu) whose error was measured at up to ~1e-12 of F. Rejecting
# on noise would halve steps that are in fact converging; any genuine rise this small is
# corrected by the next Newton step. Shared by every Newton workflow (glm, linear_inference).
ACCEPT_SLACK = 1e-10
#: after this many step halvings in a row (t = 2^-40) the step cannot decrease F at all
MAX_HALVINGS = 40
# Rows per block when forming X~^T diag(v) X~: bounds the temporary to ~65k x k floats.
_BLOCK_ROWS = 65_536
# Coordinate descent stops when no coordinate moves more than this (relative to 1 + |b|_inf);
# 1e-14 is a few ulps above float64 noise, far below the 1e-10 outer tolerance.
_CD_TOL = 1e-14
_CD_MAX_SWEEPS = 100_000
# A Fisher matrix whose equilibrated condition number exceeds this is treated as singular:
# the (unpenalized) maximum-likelihood estimate is then not unique.
_MAX_CONDITION = 1e12


class ConvergenceWarning(UserWarning):
    """A federated Newton fit stopped before converging; its estimates are the last iterate's.

    The counterpart of statsmodels' ``ConvergenceWarning``: the results are returned, flagged
    ``converged: false``, rather than withheld.
    """


@dataclass(frozen=True)
class DesignData:
    """One silo's rows as the Newton statistics need them.

    Parameters
    ----------
    features : ndarray of shape (n_rows, n_features), float64
        The predictors, in data_config order (no intercept column).
    target : ndarray of shape (n_rows,)
    offset : ndarray of shape (n_rows,)
        Added to the linear predictor: the data_config's ``offset`` plus ``log(exposure)``;
        zeros when neither is configured.
    weight : ndarray of shape (n_rows,)
        Sample weights ``s_i >= 0`` (ones when not configured).
    """

    features: np.ndarray
    target: np.ndarray
    offset: np.ndarray
    weight: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.target.shape[0])

    def linear_predictor(self, beta: np.ndarray) -> np.ndarray:
        """``eta = beta[0] + features @ beta[1:] + offset``; shape (n_rows,)."""
        eta: np.ndarray = self.features @ beta[1:] + beta[0] + self.offset
        return eta


@dataclass(frozen=True)
class NewtonStatistics:
    """Sums of the Newton terms over the rows of one silo, or of all silos.

    Attributes
    ----------
    gradient : ndarray of shape (k,)
        Gradient of ``D/2`` (half the weighted deviance) in ``beta``; ``k = 1 + n_features``.
    fisher : ndarray of shape (k, k)
        Expected Hessian of ``D/2`` (symmetric positive semi-definite).
    deviance : float
        ``D = sum_i s_i d(y_i, mu_i)``; ``inf`` when the mean overflowed.
    pearson : float
        ``sum_i s_i (y_i - mu_i)^2 / V(mu_i)``.
    weight_sum : float
        ``W = sum_i s_i``.
    num_rows : int
    """

    gradient: np.ndarray
    fisher: np.ndarray
    deviance: float
    pearson: float
    weight_sum: float
    num_rows: int

    def __add__(self, other: NewtonStatistics) -> NewtonStatistics:
        return NewtonStatistics(
            gradient=self.gradient + other.gradient,
            fisher=self.fisher + other.fisher,
            deviance=self.deviance + other.deviance,
            pearson=self.pearson + other.pearson,
            weight_sum=self.weight_sum + other.weight_sum,
            num_rows=self.num_rows + other.num_rows,
        )

    def to_arrays(self, prefix: str = "") -> Arrays:
        """The statistics as named float64 arrays (they travel and checkpoint as arrays,
        which carry ``inf`` and every bit of a float64, unlike JSON)."""
        scalars = [self.deviance, self.pearson, self.weight_sum, float(self.num_rows)]
        return {
            prefix + "gradient": np.asarray(self.gradient, dtype=np.float64),
            prefix + "fisher": np.asarray(self.fisher, dtype=np.float64),
            prefix + "scalars": np.asarray(scalars, dtype=np.float64),
        }

    @classmethod
    def from_arrays(
        cls, arrays: Arrays, k: int, prefix: str = "", who: str = ""
    ) -> NewtonStatistics:
        """Parse :meth:`to_arrays` output, checking names and shapes.

        Raises
        ------
        TaskError
            When an array is missing or has the wrong shape; ``who`` names the sender.
        """
        expected = {"gradient": (k,), "fisher": (k, k), "scalars": (4,)}
        for name, shape in expected.items():
            array = arrays.get(prefix + name)
            if array is None or np.shape(array) != shape:
                got = "missing" if array is None else f"shape {np.shape(array)}"
                raise TaskError(
                    f"{who or 'The statistics'} must carry array {prefix + name!r} of shape "
                    f"{shape}; got {got}."
                )
        scalars = np.asarray(arrays[prefix + "scalars"], dtype=np.float64)
        return cls(
            gradient=np.asarray(arrays[prefix + "gradient"], dtype=np.float64),
            fisher=np.asarray(arrays[prefix + "fisher"], dtype=np.float64),
            deviance=float(scalars[0]),
            pearson=float(scalars[1]),
            weight_sum=float(scalars[2]),
            num_rows=int(scalars[3]),
        )


# ---------------------------------------------------------------------- client side


def row_terms(family: Family, data: DesignData, beta: np.ndarray) -> RowTerms:
    """The unweighted per-row terms at ``beta`` (see :class:`RowTerms`).

    Parameters
    ----------
    family : Family
    data : DesignData
    beta : ndarray of shape (1 + n_features,)
        Intercept first.
    """
    return family.row_terms(data.target, data.linear_predictor(beta))


def sum_row_terms(data: DesignData, terms: RowTerms) -> NewtonStatistics:
    """Weight the per-row terms by the sample weights and sum them into statistics.

    Parameters
    ----------
    data : DesignData
        Supplies the features and the sample weights.
    terms : RowTerms
        From :func:`row_terms` (or clipped versions of them).

    Returns
    -------
    NewtonStatistics
    """
    s = data.weight
    k = 1 + data.features.shape[1]
    gradient = np.zeros(k)
    fisher = np.zeros((k, k))
    g = s * terms.gradient_scale
    v = s * terms.fisher_weight
    for start in range(0, data.num_rows, _BLOCK_ROWS):
        block = slice(start, start + _BLOCK_ROWS)
        x = data.features[block]
        design = np.empty((x.shape[0], k))
        design[:, 0] = 1.0
        design[:, 1:] = x
        gradient += design.T @ g[block]
        fisher += design.T @ (design * v[block, None])
    # Zero-weight rows drop out even where their terms are inf (an overflowed mean there).
    used = s > 0
    deviance = float(np.sum(s[used] * terms.deviance[used]))
    pearson = float(np.sum(s[used] * terms.pearson[used]))
    return NewtonStatistics(
        gradient=gradient,
        fisher=(fisher + fisher.T) / 2.0,  # symmetric to the last bit
        deviance=deviance,
        pearson=pearson,
        weight_sum=float(np.sum(s)),
        num_rows=data.num_rows,
    )


def local_statistics(family: Family, data: DesignData, beta: np.ndarray) -> NewtonStatistics:
    """One silo's Newton statistics at ``beta``: :func:`row_terms` then :func:`sum_row_terms`.

    Returns
    -------
    NewtonStatistics
        ``deviance`` is ``inf`` (and the gradient possibly not finite) when the mean overflows
        at ``beta``; the server then rejects ``beta`` and halves its step.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return sum_row_terms(data, row_terms(family, data, beta))


# ---------------------------------------------------------------------- server side


@dataclass(frozen=True)
class Penalty:
    """The elastic-net penalty ``alpha * (l1_ratio |w|_1 + (1 - l1_ratio)/2 |w|_2^2)``.

    The intercept (``beta[0]``) is never penalized.
    """

    alpha: float = 0.0
    l1_ratio: float = 0.0

    @property
    def l1(self) -> float:
        return self.alpha * self.l1_ratio

    @property
    def l2(self) -> float:
        return self.alpha * (1.0 - self.l1_ratio)

    def value(self, beta: np.ndarray) -> float:
        w = beta[1:]
        return float(self.l1 * np.sum(np.abs(w)) + 0.5 * self.l2 * np.dot(w, w))


def objective(stats: NewtonStatistics, beta: np.ndarray, penalty: Penalty) -> float:
    """``F(beta) = D / (2 W) + penalty(beta)``; ``inf`` when the deviance is not finite."""
    if not math.isfinite(stats.deviance) or stats.weight_sum <= 0:
        return math.inf
    return stats.deviance / (2.0 * stats.weight_sum) + penalty.value(beta)


def newton_point(beta: np.ndarray, stats: NewtonStatistics, penalty: Penalty) -> np.ndarray:
    """The minimiser of the penalized quadratic model of ``F`` around ``beta``.

    The smooth part ``f = D/(2W)`` is replaced by its second-order model with gradient
    ``stats.gradient / W`` and Hessian ``A0 = stats.fisher / W``. Without L1 the minimiser
    solves ``(A0 + l2 P) b = A0 beta - grad`` (``P`` the identity without the intercept);
    with L1 it is found by cyclic coordinate descent with soft-thresholding.

    Parameters
    ----------
    beta : ndarray of shape (k,)
    stats : NewtonStatistics
        Summed over all silos, at ``beta``.
    penalty : Penalty

    Returns
    -------
    ndarray of shape (k,)
        The proximal Newton point; the step is its difference from ``beta``.

    Raises
    ------
    TaskError
        When the statistics are not finite, or the problem has no unique solution (an
        unpenalized fit whose Fisher matrix is singular: collinear or constant predictors).
    """
    weight_sum = stats.weight_sum
    if not (np.all(np.isfinite(stats.gradient)) and np.all(np.isfinite(stats.fisher))):
        raise TaskError("The Newton statistics are not finite at the current coefficients.")
    if weight_sum <= 0:
        raise TaskError(
            f"The sample weights of all clients sum to {weight_sum}; expected a sum > 0."
        )
    k = beta.shape[0]
    hessian = stats.fisher / weight_sum
    # Stationarity of the model: grad + H (b - beta) + l2 P b (+ l1 subgradient) = 0.
    c = hessian @ beta - stats.gradient / weight_sum
    a = hessian.copy()
    a[np.arange(1, k), np.arange(1, k)] += penalty.l2
    if penalty.l1 == 0.0:
        _check_conditioning(a)
        try:
            return _solve_spd(a, c)
        except np.linalg.LinAlgError:
            raise TaskError(_singular_message([])) from None
    return _coordinate_descent(a, c, penalty.l1, beta.copy())


def step_size(old: np.ndarray, new: np.ndarray) -> float:
    """``max |new - old| / (1 + max |old|)``: the convergence measure of the outer loop."""
    return float(np.max(np.abs(new - old)) / (1.0 + np.max(np.abs(old))))


def _solve_spd(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    # Cholesky of the symmetric positive-definite system; lstsq would hide singularity.
    factor = np.linalg.cholesky(a)
    result: np.ndarray = np.linalg.solve(factor.T, np.linalg.solve(factor, c))
    return result


def _check_conditioning(a: np.ndarray) -> None:
    diagonal = np.diag(a)
    if np.any(diagonal <= 0):
        zero = [int(j) for j in np.flatnonzero(diagonal <= 0)]
        raise TaskError(_singular_message(zero))
    # Equilibrate first, so predictors on very different scales are not mistaken for
    # collinear ones (the condition number of the correlation-like matrix is scale-free).
    scale = 1.0 / np.sqrt(diagonal)
    eigenvalues = np.linalg.eigvalsh(a * np.outer(scale, scale))
    if eigenvalues[0] <= eigenvalues[-1] / _MAX_CONDITION:
        raise TaskError(_singular_message([]))


def _singular_message(columns: list[int]) -> str:
    where = (
        f" (coefficient index {', '.join(str(j) for j in columns)} has no information)"
        if columns
        else ""
    )
    return (
        "The pooled Fisher information is singular, so the unpenalized GLM has no unique "
        f"solution{where}: some predictors are collinear or constant across all silos. "
        "Drop them, or set ml_task.params.alpha > 0 with l1_ratio < 1 (ridge)."
    )


def _coordinate_descent(a: np.ndarray, c: np.ndarray, l1: float, b: np.ndarray) -> np.ndarray:
    """Minimise ``1/2 b^T A b - c^T b + l1 * sum_{j>=1} |b_j|`` by cyclic coordinate descent.

    Each coordinate update is exact (soft-thresholding), so the objective never increases;
    for a positive semi-definite ``A`` this converges to a minimiser (Tseng 2001).
    """
    k = b.shape[0]
    ab = a @ b
    diagonal = np.diag(a).copy()
    for _ in range(_CD_MAX_SWEEPS):
        largest_move = 0.0
        for j in range(k):
            if diagonal[j] <= 0.0:
                new = 0.0  # a coefficient without information stays at 0
            else:
                z = c[j] - ab[j] + diagonal[j] * b[j]
                threshold = 0.0 if j == 0 else l1
                new = math.copysign(max(abs(z) - threshold, 0.0), z) / diagonal[j]
            move = new - b[j]
            if move != 0.0:
                ab += a[:, j] * move
                b[j] = new
                largest_move = max(largest_move, abs(move))
        if largest_move <= _CD_TOL * (1.0 + float(np.max(np.abs(b)))):
            return b
    return b


# ------------------------------------------------------------- many models at once


def batched_singular(fisher: np.ndarray) -> np.ndarray:
    """Which of a stack of Fisher matrices are singular (the test of :func:`newton_point`).

    Parameters
    ----------
    fisher : ndarray of shape (n_models, k, k)
        Symmetric positive semi-definite matrices.

    Returns
    -------
    ndarray of bool, shape (n_models,)
        True where a diagonal entry is not > 0, an entry is not finite, or the equilibrated
        condition number exceeds ``_MAX_CONDITION`` (the MLE is then not unique).
    """
    k = fisher.shape[1]
    diagonal = np.diagonal(fisher, axis1=1, axis2=2)
    # all over axes (1, 2), not a reshape to (m, -1): that fails for an empty stack (m = 0)
    singular = ~np.all(np.isfinite(fisher), axis=(1, 2)) | np.any(~(diagonal > 0), axis=1)
    scale = 1.0 / np.sqrt(np.where(diagonal > 0, diagonal, 1.0))
    equilibrated = fisher * scale[:, :, None] * scale[:, None, :]
    equilibrated[singular] = np.eye(k)  # placeholders keep eigvalsh finite
    eigenvalues = np.linalg.eigvalsh(equilibrated)
    singular |= eigenvalues[:, 0] <= eigenvalues[:, -1] / _MAX_CONDITION
    result: np.ndarray = singular
    return result


def batched_newton_point(
    beta: np.ndarray, gradient: np.ndarray, fisher: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`newton_point` without penalty for a stack of independent models, in one solve.

    The unpenalized Newton point ``solve(F, F beta - g)`` does not depend on the weight sum
    ``W`` (it cancels), so none is needed.

    Parameters
    ----------
    beta : ndarray of shape (n_models, k)
    gradient : ndarray of shape (n_models, k)
        Summed over all silos, at ``beta``.
    fisher : ndarray of shape (n_models, k, k)

    Returns
    -------
    points : ndarray of shape (n_models, k)
        The Newton points; NaN rows where the model is singular.
    singular : ndarray of bool, shape (n_models,)
        :func:`batched_singular` of ``fisher`` (plus non-finite gradients).
    """
    singular = batched_singular(fisher) | ~np.all(np.isfinite(gradient), axis=1)
    points = np.full(beta.shape, np.nan)
    ok = ~singular
    if np.any(ok):
        a = fisher[ok]
        c = np.einsum("mij,mj->mi", a, beta[ok]) - gradient[ok]
        points[ok] = np.linalg.solve(a, c[:, :, None])[:, :, 0]
    return points, singular


def batched_step_size(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """:func:`step_size` of each row of ``old`` / ``new`` (shape (n_models, k)); (n_models,)."""
    result: np.ndarray = np.max(np.abs(new - old), axis=1) / (1.0 + np.max(np.abs(old), axis=1))
    return result
