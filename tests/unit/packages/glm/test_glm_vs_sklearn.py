"""Penalized federated Newton fits against scikit-learn's estimators on the pooled rows.

fedsilo minimises ``1/(2W) sum s_i d_i + alpha (l1_ratio |w|_1 + (1 - l1_ratio)/2 |w|^2)``,
which is exactly the objective of ``ElasticNet`` / ``Lasso``, of ``PoissonRegressor``,
``GammaRegressor`` and ``TweedieRegressor`` (L2 only there), of ``Ridge`` with
``alpha_ridge = alpha W`` and of ``LogisticRegression`` with ``C = 1 / (alpha W)``. Both sides
are solved to ~1e-12, so the coefficients must agree within 1e-8 (absolute; measured
1e-16 to 1e-11). ``as_sklearn()`` must hand back an estimator of that class, with those
hyperparameters, whose predictions equal the federated model's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import linear_model as lm
from sklearn.exceptions import ConvergenceWarning

PREDICTORS = ["x0", "x1", "x2", "x3"]
ATOL = 1e-8


def sklearn_fit(estimator: Any, pooled: pd.DataFrame, weight: str | None = None) -> np.ndarray:
    with warnings.catch_warnings():
        # saga reports ConvergenceWarning at max_iter even when it is at the 1e-12 tolerance.
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(
            pooled[PREDICTORS],
            pooled["y"],
            sample_weight=None if weight is None else pooled[weight],
        )
    return np.concatenate([np.ravel(estimator.intercept_), np.ravel(estimator.coef_)])


CASES: list[tuple[str, float, float, Callable[[float], Any], type]] = [
    # (task, alpha, l1_ratio, reference estimator given W, class as_sklearn returns)
    (
        "normal",
        0.1,
        0.5,
        lambda w: lm.ElasticNet(alpha=0.1, l1_ratio=0.5, tol=1e-14, max_iter=10**5),
        lm.ElasticNet,
    ),
    ("normal", 0.05, 1.0, lambda w: lm.Lasso(alpha=0.05, tol=1e-14, max_iter=10**5), lm.Lasso),
    ("normal", 0.1, 0.0, lambda w: lm.Ridge(alpha=0.1 * w, solver="cholesky"), lm.Ridge),
    (
        "poisson",
        0.05,
        0.0,
        lambda w: lm.PoissonRegressor(
            alpha=0.05, tol=1e-14, max_iter=1000, solver="newton-cholesky"
        ),
        lm.PoissonRegressor,
    ),
    (
        "gamma",
        0.05,
        0.0,
        lambda w: lm.GammaRegressor(alpha=0.05, tol=1e-14, max_iter=1000, solver="newton-cholesky"),
        lm.GammaRegressor,
    ),
    (
        "tweedie",
        0.02,
        0.0,
        lambda w: lm.TweedieRegressor(
            power=1.5, link="log", alpha=0.02, tol=1e-14, max_iter=1000, solver="newton-cholesky"
        ),
        lm.TweedieRegressor,
    ),
    (
        "inverseGaussian",
        0.02,
        0.0,
        lambda w: lm.TweedieRegressor(
            power=3.0, link="log", alpha=0.02, tol=1e-14, max_iter=1000, solver="newton-cholesky"
        ),
        lm.TweedieRegressor,
    ),
    (
        "logistic",
        0.01,
        0.0,
        lambda w: lm.LogisticRegression(
            C=1 / (0.01 * w), tol=1e-14, max_iter=1000, solver="newton-cholesky"
        ),
        lm.LogisticRegression,
    ),
    (
        "logistic",
        0.05,
        0.5,
        lambda w: lm.LogisticRegression(
            C=1 / (0.05 * w), l1_ratio=0.5, solver="saga", tol=1e-14, max_iter=10**5
        ),
        lm.LogisticRegression,
    ),
]


@pytest.mark.parametrize(("task", "alpha", "l1_ratio", "make", "cls"), CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_penalized_fit_equals_sklearn(
    task: str,
    alpha: float,
    l1_ratio: float,
    make: Callable[[float], Any],
    cls: type,
    weighted: bool,
    silos: Callable[..., list[pd.DataFrame]],
    run_federated: Any,
    config: Any,
) -> None:
    frames = silos(task)
    pooled = pd.concat(frames)
    weight = "w" if weighted else None
    extra = {"power": 1.5} if task == "tweedie" else {}
    data_config: dict[str, Any] = {"predictors": PREDICTORS, "target": "y"}
    if weighted:
        data_config["sample_weight"] = "w"
    fit = run_federated(config(task, alpha, l1_ratio, **extra), data_config, frames)
    total_weight = float(pooled["w"].sum()) if weighted else float(len(pooled))
    expected = sklearn_fit(make(total_weight), pooled, weight)

    assert fit.model.meta["converged"] is True
    np.testing.assert_allclose(fit.model.beta, expected, atol=ATOL, rtol=0)
    if l1_ratio > 0:
        assert np.any(fit.model.coef_ == 0.0)  # L1 sets coefficients exactly to zero

    estimator = fit.model.as_sklearn()
    assert type(estimator) is cls
    reference = make(total_weight)
    for name in ("alpha", "C", "l1_ratio", "power"):
        if hasattr(reference, name) and name in reference.get_params():
            assert estimator.get_params()[name] == pytest.approx(reference.get_params()[name])
    np.testing.assert_array_equal(estimator.predict(pooled[PREDICTORS]), fit.model.predict(pooled))


def test_unpenalized_exports_are_the_plain_estimators(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos("normal")
    pooled = pd.concat(frames)
    fit = run_federated(config("normal"), {"predictors": PREDICTORS, "target": "y"}, frames)
    estimator = fit.model.as_sklearn()
    assert type(estimator) is lm.LinearRegression
    expected = sklearn_fit(lm.LinearRegression(), pooled)
    np.testing.assert_allclose(fit.model.beta, expected, atol=1e-10)
    np.testing.assert_allclose(
        estimator.predict(pooled[PREDICTORS]),
        pooled[PREDICTORS] @ expected[1:] + expected[0],
        rtol=1e-10,
    )

    frames = silos("logistic")
    pooled = pd.concat(frames)
    fit = run_federated(config("logistic"), {"predictors": PREDICTORS, "target": "y"}, frames)
    estimator = fit.model.as_sklearn()
    assert type(estimator) is lm.LogisticRegression
    assert estimator.get_params()["C"] == np.inf
    np.testing.assert_array_equal(estimator.classes_, [0, 1])
    np.testing.assert_array_equal(estimator.predict(pooled[PREDICTORS]), fit.model.predict(pooled))
    np.testing.assert_allclose(
        estimator.predict_proba(pooled[PREDICTORS]), fit.model.predict_proba(pooled), rtol=1e-12
    )
    expected = sklearn_fit(
        lm.LogisticRegression(C=np.inf, tol=1e-14, solver="newton-cholesky"), pooled
    )
    np.testing.assert_allclose(fit.model.beta, expected, atol=1e-8)
