"""Clipping, Gaussian noise (OpenDP's sampler and the seeded test path) and the PD floor."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.errors import ConfigError
from fedsilo.privacy.mechanisms import (
    add_gaussian_noise,
    add_symmetric_gaussian_noise,
    clip_factors,
    noise_spectral_norm,
    positive_definite,
    secure_torch_generator,
)


def test_clip_factors_bring_every_row_within_the_bound() -> None:
    norms = np.array([0.0, 0.5, 2.0, 8.0, np.inf])
    factors = clip_factors(norms, 2.0)
    np.testing.assert_allclose(factors, [1.0, 1.0, 1.0, 0.25, 0.0])
    assert np.all(factors[:4] * norms[:4] <= 2.0)


def test_opendp_noise_has_the_requested_scale() -> None:
    # OpenDP draws from its own CSPRNG (no seed), exactly and slowly (~0.2 ms a value);
    # 5,000 draws give the sample standard deviation a standard error of 1 %, so 5 % is
    # five standard errors.
    values = np.full(5_000, 10.0)
    noisy = add_gaussian_noise(values, 2.5)
    assert noisy.shape == values.shape
    assert abs(float(np.mean(noisy)) - 10.0) < 0.2
    assert float(np.std(noisy)) == pytest.approx(2.5, rel=0.05)


def test_seeded_noise_is_reproducible_and_has_the_requested_scale() -> None:
    values = np.zeros((200, 50))
    first = add_gaussian_noise(values, 0.3, np.random.default_rng(7))
    again = add_gaussian_noise(values, 0.3, np.random.default_rng(7))
    np.testing.assert_array_equal(first, again)
    assert float(np.std(first)) == pytest.approx(0.3, rel=0.05)


def test_symmetric_noise_noises_the_upper_triangle_once() -> None:
    rng = np.random.default_rng(3)
    draws = np.stack(
        [add_symmetric_gaussian_noise(np.eye(4), 0.5, rng) - np.eye(4) for _ in range(4000)]
    )
    np.testing.assert_array_equal(draws, np.swapaxes(draws, 1, 2))
    stds = draws.std(axis=0)
    np.testing.assert_allclose(stds, 0.5, rtol=0.1)  # every entry, diagonal included
    # Entries (0, 1) and (1, 0) are one draw, not two independent ones.
    np.testing.assert_array_equal(draws[:, 0, 1], draws[:, 1, 0])


def test_positive_definite_raises_only_the_small_eigenvalues() -> None:
    basis, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))
    matrix = (basis * np.array([-3.0, 0.01, 1.0, 2.0, 50.0])) @ basis.T
    fixed = positive_definite(matrix, 0.5)
    np.testing.assert_allclose(np.linalg.eigvalsh(fixed), [0.5, 0.5, 1.0, 2.0, 50.0], atol=1e-10)
    np.testing.assert_allclose(fixed, fixed.T, atol=0)
    # A matrix already above the floor comes back unchanged.
    healthy = (basis * np.array([1.0, 2.0, 3.0, 4.0, 5.0])) @ basis.T
    np.testing.assert_allclose(positive_definite(healthy, 0.5), healthy, atol=1e-12)


def test_the_noise_spectral_norm_matches_the_semicircle_edge() -> None:
    rng = np.random.default_rng(11)
    norms = [
        np.max(
            np.abs(np.linalg.eigvalsh(add_symmetric_gaussian_noise(np.zeros((40, 40)), 1.0, rng)))
        )
        for _ in range(50)
    ]
    assert float(np.mean(norms)) == pytest.approx(noise_spectral_norm(1.0, 40), rel=0.1)


def test_bad_scales_and_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="sigma must be a finite number > 0"):
        add_gaussian_noise(np.zeros(3), 0.0)
    with pytest.raises(ConfigError, match="finite values"):
        add_gaussian_noise(np.array([1.0, np.nan]), 1.0)
    with pytest.raises(ConfigError, match="floor"):
        positive_definite(np.eye(2), -1.0)


def test_secure_generators_differ() -> None:
    import torch

    first = torch.rand(4, generator=secure_torch_generator())
    second = torch.rand(4, generator=secure_torch_generator())
    assert not torch.equal(first, second)
