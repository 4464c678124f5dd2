"""A better first Newton iterate for logistic regression, from the statistics at zero.

Newton from ``beta = 0`` spends its first step on a poor guess: at 0 every Fisher weight is
the largest possible, ``mu (1 - mu) = 1/4``, so the first iterate is ``4 x`` the least-squares
fit of ``y - 1/2`` and undershoots every coefficient (by ~30 % on the tutorial data). The
statistics at 0 are, however, the sufficient statistics of a closed-form estimate that is
much closer: with ``X~ = (1, X)``,

* ``fisher(0) = X~^T X~ / 4`` gives the Gram matrix ``G`` (``G[0, 0] = n``), and
* ``gradient(0) = X~^T (1/2 - y)`` gives ``X~^T y = G[:, 0] / 2 - gradient(0)``
  (``n1 = sum y`` its first entry),

which is everything linear discriminant analysis needs (Efron 1975: for Gaussian predictors
with a common covariance the LDA coefficients *are* the logistic coefficients, and for other
predictors a close first guess). With ``b = G^-1 X~^T y`` (the linear-probability fit) and
``RSS = n1 - b . X~^T y`` (``y^2 = y`` for a 0/1 target)::

    slopes    = b[1:] * n / RSS                        # = S_w^-1 (mu1 - mu0), Sherman-Morrison
    intercept = log(n1 / n0) - slopes . (mu1 + mu0) / 2

with ``mu1 = X^T y / n1`` and ``mu0 = (X^T 1 - X^T y) / n0`` the class means. On the
tutorial data it is within 2e-2 of the maximum-likelihood estimate where Newton's first iterate
is 0.17 away, which saves one round of a federated fit (measured: 6 rounds to converge at
``tol = 1e-10`` from 0, 5 from this start). Sample weights enter the moments consistently, so
the same holds for weighted fits.

The start is a guess, never a result. Where the predictors are far from Gaussian -- tight
classes with a few flipped labels -- LDA overshoots, and Newton from an overshoot can take
many halved steps (measured: 27-36 rounds instead of 9). So the workflow keeps the start only
when its deviance is at most ``D(0) - g^T F(0)^-1 g``: at 0 the Fisher matrix ``X~^T X~ / 4``
bounds the logistic Hessian everywhere, so the quadratic model at 0 majorizes the deviance
(Boehning & Lindsay 1988) and Newton's first iterate is guaranteed to reach that value. A start
that does not is replaced by that iterate: at worst one round is lost, never more.
"""

from __future__ import annotations

import numpy as np

from fedsilo.regression.newton import batched_singular

__all__ = ["batched_discriminant_start"]


def batched_discriminant_start(
    gradient: np.ndarray, fisher: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The LDA starting point of each of a stack of logistic models (see the module docstring).

    Parameters
    ----------
    gradient : ndarray of shape (n_models, k)
        The gradient of half the deviance at ``beta = 0``, summed over all silos; the
        intercept is coefficient 0.
    fisher : ndarray of shape (n_models, k, k)
        The Fisher matrix at ``beta = 0``, summed over all silos.

    Returns
    -------
    points : ndarray of shape (n_models, k)
        The starting points; rows where ``usable`` is False are 0.
    usable : ndarray of bool, shape (n_models,)
        False where the start does not exist: one class is empty, the Gram matrix is
        singular, the linear-probability fit is perfect (``RSS <= 0``: separable data) or a
        value is not finite. The caller then takes the plain Newton step from 0.
    """
    m, k = gradient.shape
    points = np.zeros((m, k))
    gram = 4.0 * fisher
    moments = gram[:, :, 0] / 2.0 - gradient  # X~^T y
    n = gram[:, 0, 0]
    n1 = moments[:, 0]
    n0 = n - n1
    usable = np.all(np.isfinite(gram), axis=(1, 2)) & np.all(np.isfinite(moments), axis=1)
    usable &= (n1 > 0) & (n0 > 0)
    # The Newton step's own test: a singular model gets no start (and is left out by it).
    usable[usable] &= ~batched_singular(gram[usable])
    if not np.any(usable):
        return points, usable
    index = np.flatnonzero(usable)
    b = np.linalg.solve(gram[index], moments[index][:, :, None])[:, :, 0]
    rss = n1[index] - np.einsum("mi,mi->m", b, moments[index])
    # RSS below rounding of n1 means the classes are linearly separable (no finite MLE).
    ok = np.isfinite(rss) & (rss > 1e-12 * n1[index])
    slopes = b[:, 1:] * (n[index] / np.where(ok, rss, 1.0))[:, None]
    mean1 = moments[index, 1:] / n1[index, None]
    mean0 = (gram[index, 0, 1:] - moments[index, 1:]) / n0[index, None]
    intercept = np.log(n1[index] / n0[index]) - np.einsum("mi,mi->m", slopes, mean1 + mean0) / 2
    start = np.column_stack([intercept, slopes])
    ok &= np.all(np.isfinite(start), axis=1)
    points[index[ok]] = start[ok]
    usable[index[~ok]] = False
    return points, usable
