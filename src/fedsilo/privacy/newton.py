"""Private second-order sums: a clipped, noised gradient and Hessian for Newton / IRLS.

A second-order federated solver (the glm ``newton`` solver) asks every silo each round for

    v = sum_i a_i x_i            (a gradient, or the right-hand side of an IRLS step)
    M = sum_i b_i x_i x_i^T      (a Hessian / Fisher matrix, or the IRLS normal matrix)

over its rows ``x_i`` (design rows, intercept included), with per-row scalars ``a_i`` and
``b_i`` computed from the row and the current coefficients. :func:`private_second_order_sums`
releases both under the Gaussian mechanism.

Sensitivity (the derivation the noise relies on)
-------------------------------------------------
Neighbouring datasets differ by adding or removing one row (the privacy unit). The
coefficients each round uses are fixed by the server before the round, so every other row's
terms are the same in both datasets. Each row is scaled by one factor

    c_i = min(1,  C_g / (|a_i| |x_i|),  C_H / (|b_i| |x_i|^2))

which depends on that row alone, so its contributions are bounded:

* ``|c_i a_i x_i|_2 = c_i |a_i| |x_i| <= C_g``: the vector sum moves by at most ``C_g`` in L2
  norm when one row comes or goes -- L2 sensitivity ``C_g`` (``max_grad_norm``);
* ``|c_i b_i x_i x_i^T|_F = c_i |b_i| |x_i|^2 <= C_H`` (the Frobenius norm of ``x x^T`` is
  ``|x|^2``). Only the upper triangle of ``M`` (diagonal included) is released and its L2
  norm is at most the Frobenius norm, so its L2 sensitivity is ``C_H``
  (``max_hessian_norm``).

Each sum gets ``N(0, (z C)^2)`` noise per released entry with the same noise multiplier
``z``: two Gaussian mechanisms per round, accounted together as
``plan_gaussian(releases_per_round=2)`` over all rounds (RDP composition; see
:mod:`fedsilo.privacy.accounting`).

Why one factor for both: scaling a row's gradient and Hessian terms by the same ``c_i`` makes
the released pair the gradient and Hessian of the same (row-reweighted) objective, so a
Newton step never meets curvature that was clipped harder than its gradient and
overshoots. With bounds no row reaches, ``c_i = 1`` and the sums are the exact ones plus
noise. Clipping by a factor in (0, 1] keeps ``b_i x_i x_i^T`` positive semi-definite when
``b_i >= 0``; the noise does not, which is for the server to repair
(:func:`fedsilo.privacy.mechanisms.positive_definite`, costing no privacy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsilo.errors import ConfigError
from fedsilo.privacy.mechanisms import (
    add_gaussian_noise,
    add_symmetric_gaussian_noise,
    clip_factors,
)

__all__ = ["SecondOrderSums", "clipped_second_order_sums", "private_second_order_sums"]

# Rows per block when forming X^T diag(v) X: bounds the temporary to ~65k x k floats.
_BLOCK_ROWS = 65_536


@dataclass(frozen=True)
class SecondOrderSums:
    """A vector sum and a symmetric matrix sum over rows.

    Attributes
    ----------
    vector : ndarray of shape (k,)
    matrix : ndarray of shape (k, k), symmetric
    """

    vector: np.ndarray
    matrix: np.ndarray


def clipped_second_order_sums(
    design: np.ndarray,
    vector_scale: np.ndarray,
    matrix_weight: np.ndarray,
    *,
    max_vector_norm: float,
    max_matrix_norm: float,
) -> SecondOrderSums:
    """``sum_i c_i a_i x_i`` and ``sum_i c_i b_i x_i x_i^T`` with the clip factors ``c_i``.

    Parameters
    ----------
    design : ndarray of shape (n_rows, k)
        The rows ``x_i`` (with the intercept column).
    vector_scale : ndarray of shape (n_rows,)
        ``a_i``. A non-finite value clips its row to zero.
    matrix_weight : ndarray of shape (n_rows,)
        ``b_i``. A non-finite value clips its row to zero.
    max_vector_norm, max_matrix_norm : float > 0
        ``C_g`` and ``C_H`` (see the module docstring).

    Returns
    -------
    SecondOrderSums
        No noise yet.
    """
    if not (max_vector_norm > 0 and max_matrix_norm > 0):
        raise ConfigError(
            f"Clipping bounds must be > 0. Got {max_vector_norm} and {max_matrix_norm}."
        )
    x = np.asarray(design, dtype=np.float64)
    a = np.asarray(vector_scale, dtype=np.float64)
    b = np.asarray(matrix_weight, dtype=np.float64)
    row_norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    with np.errstate(over="ignore", invalid="ignore"):
        vector_norms = np.where(np.isfinite(a), np.abs(a) * row_norms, np.inf)
        matrix_norms = np.where(np.isfinite(b), np.abs(b) * row_norms**2, np.inf)
    factors = np.minimum(
        clip_factors(vector_norms, max_vector_norm), clip_factors(matrix_norms, max_matrix_norm)
    )
    # A row clipped to zero contributes exactly zero, even where its terms were inf or NaN.
    kept = factors > 0
    a_clipped = np.where(kept, factors * np.where(kept, a, 0.0), 0.0)
    b_clipped = np.where(kept, factors * np.where(kept, b, 0.0), 0.0)
    k = x.shape[1]
    vector = np.zeros(k)
    matrix = np.zeros((k, k))
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        block = slice(start, start + _BLOCK_ROWS)
        vector += x[block].T @ a_clipped[block]
        matrix += x[block].T @ (x[block] * b_clipped[block, None])
    return SecondOrderSums(vector=vector, matrix=(matrix + matrix.T) / 2.0)


def private_second_order_sums(
    design: np.ndarray,
    vector_scale: np.ndarray,
    matrix_weight: np.ndarray,
    *,
    max_vector_norm: float,
    max_matrix_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> SecondOrderSums:
    """The clipped sums plus Gaussian noise calibrated to their sensitivities.

    Parameters
    ----------
    design, vector_scale, matrix_weight, max_vector_norm, max_matrix_norm
        As :func:`clipped_second_order_sums`.
    noise_multiplier : float > 0
        ``z`` of the session's :class:`fedsilo.privacy.GaussianPlan`: the vector gets noise
        of standard deviation ``z * max_vector_norm`` per entry, the matrix's upper triangle
        ``z * max_matrix_norm`` (mirrored, so the result is symmetric).
    rng : numpy.random.Generator, optional
        Tests only. Default: OpenDP's exact sampler (see :mod:`fedsilo.privacy.mechanisms`).

    Returns
    -------
    SecondOrderSums
        The released (private) sums.
    """
    clipped = clipped_second_order_sums(
        design,
        vector_scale,
        matrix_weight,
        max_vector_norm=max_vector_norm,
        max_matrix_norm=max_matrix_norm,
    )
    return SecondOrderSums(
        vector=add_gaussian_noise(clipped.vector, noise_multiplier * max_vector_norm, rng),
        matrix=add_symmetric_gaussian_noise(
            clipped.matrix, noise_multiplier * max_matrix_norm, rng
        ),
    )
