"""The logistic start from the statistics at 0 is scikit-learn's LDA, and refuses where
LDA does not exist."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from fedsilo.regression.families import make_family
from fedsilo.regression.newton import DesignData, local_statistics
from fedsilo.regression.start import batched_discriminant_start


def statistics_at_zero(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pooled logistic Newton statistics at beta = 0, summed over two silos."""
    family = make_family("logistic")
    half = len(y) // 3
    total = None
    for rows in (slice(0, half), slice(half, None)):
        data = DesignData(x[rows], y[rows], np.zeros(len(y[rows])), np.ones(len(y[rows])))
        stats = local_statistics(family, data, np.zeros(1 + x.shape[1]))
        total = stats if total is None else total + stats
    assert total is not None
    return total.gradient, total.fisher


@pytest.mark.parametrize("prevalence", [0.5, 0.05])
def test_the_start_equals_sklearn_lda(prevalence: float) -> None:
    rng = np.random.default_rng(11)
    n = 5000
    x = rng.normal(size=(n, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    x[:, 2] = rng.binomial(2, 0.3, size=n)  # a genotype-like column
    eta = np.log(prevalence / (1 - prevalence)) + x @ [0.8, -0.5, 0.3]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    gradient, fisher = statistics_at_zero(x, y)
    points, usable = batched_discriminant_start(gradient[None], fisher[None])
    assert usable.tolist() == [True]
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(x, y)
    np.testing.assert_allclose(points[0, 0], lda.intercept_[0], rtol=1e-9)
    np.testing.assert_allclose(points[0, 1:], lda.coef_[0], rtol=1e-9)


def test_no_start_where_lda_does_not_exist() -> None:
    rng = np.random.default_rng(12)
    n = 400
    x = rng.normal(size=(n, 2))
    y = (rng.random(n) < 0.5).astype(float)
    models = []
    models.append(statistics_at_zero(x, y))  # fine
    models.append(statistics_at_zero(x, np.zeros(n)))  # one class only
    linear = x.copy()
    linear[:, 1] = 2.0 * y - 1.0 + 0.01 * x[:, 0]  # y exactly linear in x: RSS = 0
    models.append(statistics_at_zero(linear, y))
    constant = x.copy()
    constant[:, 1] = 1.0  # a column collinear with the intercept
    models.append(statistics_at_zero(constant, y))
    gradient = np.stack([g for g, _ in models])
    fisher = np.stack([f for _, f in models])
    points, usable = batched_discriminant_start(gradient, fisher)
    assert usable.tolist() == [True, False, False, False]
    assert np.all(points[~usable] == 0.0)
    assert np.all(np.isfinite(points))
