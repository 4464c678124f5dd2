"""The primitives of a private release: clipping, Gaussian noise, secret randomness.

Noise must be unpredictable to everyone who sees the release. The session's ``seed`` is in
the model_config, which the server and every client read, so it must never seed privacy
noise or the Poisson samples of DP-SGD: whoever knows the seed could subtract the noise.
:func:`secure_torch_generator` seeds from the operating system's CSPRNG instead.

Vectors of float64 statistics (the glm newton solver's gradient and Hessian) are noised by
OpenDP's Gaussian mechanism, whose sampler is exact and immune to the floating-point attacks
on naive Gaussian noise (Mironov 2012; Jin et al. 2021, https://arxiv.org/abs/2107.10138),
and draws from OpenDP's own CSPRNG. A ``numpy.random.Generator`` can be passed instead for
reproducible tests; that path is for tests only.

Importing this module imports neither torch nor OpenDP; each is imported by the function
that needs it, so the server half of a private workflow can use the post-processing here.
"""

from __future__ import annotations

import functools
import math
import secrets
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsilo.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "add_gaussian_noise",
    "add_symmetric_gaussian_noise",
    "clip_factors",
    "noise_spectral_norm",
    "positive_definite",
    "secure_torch_generator",
]


def secure_torch_generator() -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with 63 bits from the OS's CSPRNG (``secrets``).

    Returns
    -------
    torch.Generator
        Fresh on every call; its draws are unknown to anyone but this process.
    """
    # Imported here: the server's private workflows use this module's post-processing
    # (positive_definite, noise_spectral_norm) and must not pay for torch (~570 MB).
    import torch

    return torch.Generator().manual_seed(secrets.randbits(63))


def clip_factors(norms: np.ndarray, bound: float) -> np.ndarray:
    """Per-row scale factors ``min(1, bound / norm)`` that clip each row to L2 ``bound``.

    Parameters
    ----------
    norms : ndarray of shape (n_rows,)
        Each row's norm (>= 0; ``inf`` clips to 0).
    bound : float > 0

    Returns
    -------
    ndarray of shape (n_rows,)
        In [0, 1]; 1 where the row is within the bound (including zero rows).
    """
    norms = np.asarray(norms, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        factors = np.where(norms > bound, bound / norms, 1.0)
    return np.nan_to_num(factors, nan=0.0, posinf=0.0)


@functools.lru_cache(maxsize=64)
def _opendp_gaussian(sigma: float) -> Any:
    import opendp.prelude as dp

    # The Gaussian mechanism is in OpenDP's "contrib" set (vetted proofs pending).
    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)
    return dp.m.make_gaussian(*space, scale=sigma)


def add_gaussian_noise(
    values: np.ndarray, sigma: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``values + N(0, sigma^2)`` independently on every entry.

    Parameters
    ----------
    values : ndarray of any shape, finite
    sigma : float > 0
        The noise standard deviation (``noise_multiplier * sensitivity``).
    rng : numpy.random.Generator, optional
        Tests only: draw the noise from this generator. Default: OpenDP's exact sampler
        with its CSPRNG (see the module docstring).

    Returns
    -------
    ndarray of the shape of ``values``, float64

    Raises
    ------
    ConfigError
        When ``sigma`` is not a finite number > 0 or ``values`` are not finite.
    """
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ConfigError(f"The noise scale sigma must be a finite number > 0. Got {sigma}.")
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ConfigError("Only finite values can be released with Gaussian noise.")
    if rng is not None:
        return array + rng.normal(0.0, sigma, size=array.shape)
    if array.size == 0:
        return array.copy()
    noisy = _opendp_gaussian(float(sigma))(array.ravel().tolist())
    return np.asarray(noisy, dtype=np.float64).reshape(array.shape)


def add_symmetric_gaussian_noise(
    matrix: np.ndarray, sigma: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A symmetric matrix plus symmetric Gaussian noise ("Analyze Gauss", Dwork et al. 2014).

    The upper triangle, diagonal included, gets independent ``N(0, sigma^2)`` noise and is
    mirrored to the lower one. Only the upper triangle is released (the rest is a copy), and
    its L2 norm is at most the Frobenius norm of the matrix, so a release whose per-row
    contributions have Frobenius norm ``<= C`` has L2 sensitivity ``<= C``.

    Parameters
    ----------
    matrix : ndarray of shape (k, k), symmetric
    sigma : float > 0
    rng : numpy.random.Generator, optional
        Tests only (see :func:`add_gaussian_noise`).

    Returns
    -------
    ndarray of shape (k, k), exactly symmetric
    """
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ConfigError(f"Expected a square matrix. Got shape {array.shape}.")
    upper = np.triu_indices(array.shape[0])
    noisy = np.zeros_like(array)
    noisy[upper] = add_gaussian_noise(array[upper], sigma, rng)
    result: np.ndarray = noisy + np.triu(noisy, 1).T
    return result


def noise_spectral_norm(sigma: float, dim: int) -> float:
    """``2 * sigma * sqrt(dim)``: the typical spectral norm of a symmetric Gaussian noise matrix.

    For a ``dim x dim`` symmetric matrix with independent ``N(0, sigma^2)`` entries the
    eigenvalues fill ``[-2 sigma sqrt(dim), 2 sigma sqrt(dim)]`` (Wigner's semicircle law),
    and the largest exceeds that edge only by ``O(sigma dim^(-1/6))``.
    """
    return 2.0 * sigma * math.sqrt(dim)


def positive_definite(matrix: np.ndarray, floor: float) -> np.ndarray:
    """The symmetric matrix with every eigenvalue below ``floor`` raised to ``floor``.

    Used on a noisy Hessian: noise can make it indefinite, and a Newton step with an
    indefinite or nearly singular matrix can go anywhere. Raising the eigenvalues to a floor
    of the noise's own scale (:func:`noise_spectral_norm`) keeps every direction's curvature
    at least as large as the noise could have removed from it. It is post-processing of a
    private release, so it costs no privacy.

    Parameters
    ----------
    matrix : ndarray of shape (k, k), symmetric
    floor : float > 0

    Returns
    -------
    ndarray of shape (k, k)
        Symmetric with smallest eigenvalue ``>= floor`` (to rounding).
    """
    if not (floor > 0 and math.isfinite(floor)):
        raise ConfigError(f"The eigenvalue floor must be a finite number > 0. Got {floor}.")
    symmetric = (np.asarray(matrix, dtype=np.float64) + np.asarray(matrix).T) / 2.0
    eigenvalues, vectors = np.linalg.eigh(symmetric)
    raised = np.maximum(eigenvalues, floor)
    result: np.ndarray = (vectors * raised) @ vectors.T
    symmetric_result: np.ndarray = (result + result.T) / 2.0
    return symmetric_result
