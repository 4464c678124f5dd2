"""The fused, tiled bundle statistics equal glm's per-model Newton statistics, chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.packages.linear_inference.bundle import ChunkedDesign, bundle_statistics
from fedsilo.regression.families import make_family
from fedsilo.regression.newton import DesignData, batched_newton_point, local_statistics


@pytest.mark.parametrize("task", ["logistic", "normal"])
def test_bundle_statistics_equal_glm_local_statistics(task: str) -> None:
    rng = np.random.default_rng(3)
    n, m = 9000, 150  # several row tiles and chunk tiles, with ragged ends
    shared = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    chunked = rng.normal(size=(n, m)) * 3.0
    target = (rng.random(n) < 0.4).astype(float) if task == "logistic" else rng.normal(size=n)
    # Large coefficients push |eta| past 40, where a naive sigmoid loses the Fisher weight.
    betas = rng.normal(0.0, 4.0, size=(m, 4))
    family = make_family(task)
    stats = bundle_statistics(family, ChunkedDesign(shared, chunked, target), betas)
    for j in (0, 63, 64, 149):
        features = np.column_stack([shared[:, 1:], chunked[:, j]])
        data = DesignData(features, target, np.zeros(n), np.ones(n))
        reference = local_statistics(family, data, betas[j])
        np.testing.assert_allclose(stats.gradient[j], reference.gradient, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(stats.fisher[j], reference.fisher, rtol=1e-10, atol=1e-9)
        assert stats.deviance[j] == pytest.approx(reference.deviance, rel=1e-10)


def test_batched_newton_point_flags_singular_models_and_solves_the_rest() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    good = x.T @ x
    bad = good.copy()
    bad[2] = bad[1]
    bad[:, 2] = bad[:, 1]  # two identical columns
    fisher = np.stack([good, bad, np.zeros((3, 3))])
    beta, gradient = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    points, singular = batched_newton_point(beta, gradient, fisher)
    assert singular.tolist() == [False, True, True]
    np.testing.assert_allclose(points[0], beta[0] - np.linalg.solve(good, gradient[0]))
    assert np.isnan(points[1:]).all()
