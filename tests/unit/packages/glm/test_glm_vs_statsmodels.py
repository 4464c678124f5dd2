"""Unpenalized federated Newton fits against statsmodels' GLM on the pooled rows.

Three silos of 500 / 2,000 / 7,000 rows with shifted predictors; statsmodels fits the
concatenation with a tolerance far below the one asserted. Coefficients must agree within
1e-6 relative (measured: 1e-13 to 1e-8, the latter on the log links where IRLS converges
linearly), and the coefficient table of ``GLMModel.summary()`` must agree with statsmodels'
(standard errors, z or t, p-values, confidence intervals) to the same tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

PREDICTORS = ["x0", "x1", "x2", "x3"]
LOG = sm.families.links.Log()
FAMILIES: dict[str, Callable[[], Any]] = {
    "logistic": lambda: sm.families.Binomial(),
    "normal": lambda: sm.families.Gaussian(),
    "poisson": lambda: sm.families.Poisson(),
    "gamma": lambda: sm.families.Gamma(LOG),
    "inverseGaussian": lambda: sm.families.InverseGaussian(LOG),
    "tweedie": lambda: sm.families.Tweedie(var_power=1.5, link=LOG),
}
RTOL = 1e-6


def reference(
    task: str,
    pooled: pd.DataFrame,
    *,
    family: Any = None,
    offset: str | None = None,
    exposure: str | None = None,
    weight: str | None = None,
) -> Any:
    model = sm.GLM(
        pooled["y"],
        sm.add_constant(pooled[PREDICTORS]),
        family=family if family is not None else FAMILIES[task](),
        offset=None if offset is None else pooled[offset],
        exposure=None if exposure is None else pooled[exposure],
        var_weights=None if weight is None else pooled[weight],
    )
    # t for the families with an estimated scale, as fedsilo (and R's glm) report them.
    use_t = task not in ("logistic", "poisson")
    return model.fit(tol=1e-13, maxiter=500, use_t=use_t)


def assert_matches(result: Any, summary: pd.DataFrame, task: str) -> None:
    np.testing.assert_allclose(summary["coef"], result.params, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(summary["std_err"], result.bse, rtol=RTOL)
    statistic = "z" if task in ("logistic", "poisson") else "t"
    np.testing.assert_allclose(summary[statistic], result.tvalues, rtol=RTOL, atol=1e-9)
    np.testing.assert_allclose(summary["p_value"], result.pvalues, rtol=1e-5, atol=1e-12)
    ci = result.conf_int(alpha=0.05)
    np.testing.assert_allclose(summary["ci_lower"], ci[0], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(summary["ci_upper"], ci[1], rtol=RTOL, atol=1e-12)
    assert list(summary.index) == ["intercept", *PREDICTORS]


@pytest.mark.parametrize("task", list(FAMILIES))
def test_federated_newton_equals_statsmodels_on_pooled_rows(
    task: str, silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos(task)
    extra = {"power": 1.5} if task == "tweedie" else {}
    fit = run_federated(config(task, **extra), {"predictors": PREDICTORS, "target": "y"}, frames)
    result = reference(task, pd.concat(frames))

    assert fit.model.meta["converged"] is True
    assert fit.model.meta["rounds"] <= 10
    np.testing.assert_allclose(fit.model.beta, result.params, rtol=RTOL)
    assert_matches(result, fit.model.summary(), task)
    if task in ("logistic", "poisson"):
        assert fit.model.meta["scale"] == 1.0
    else:
        assert fit.model.meta["scale"] == pytest.approx(result.scale, rel=RTOL)
    assert fit.model.meta["deviance"] == pytest.approx(result.deviance, rel=1e-9)
    assert fit.model.meta["df_resid"] == result.df_resid


def test_normal_with_log_link_equals_statsmodels(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos("poisson")  # a positive mean, so the log link fits well
    fit = run_federated(
        config("normal", output_activation="exp"), {"predictors": PREDICTORS, "target": "y"}, frames
    )
    result = reference("normal", pd.concat(frames), family=sm.families.Gaussian(LOG))
    assert_matches(result, fit.model.summary(), "normal")


@pytest.mark.parametrize(
    ("task", "roles"),
    [
        ("poisson", {"exposure": "expo"}),
        ("poisson", {"offset": "off", "exposure": "expo"}),
        ("gamma", {"offset": "off"}),
        ("logistic", {"offset": "off"}),
        ("normal", {"offset": "off"}),
        ("tweedie", {"exposure": "expo", "sample_weight": "w"}),
    ],
)
def test_offset_and_exposure_enter_the_linear_predictor(
    task: str,
    roles: dict[str, str],
    silos: Callable[..., list[pd.DataFrame]],
    run_federated: Any,
    config: Any,
) -> None:
    frames = silos(task)
    extra = {"power": 1.5} if task == "tweedie" else {}
    fit = run_federated(
        config(task, **extra), {"predictors": PREDICTORS, "target": "y", **roles}, frames
    )
    result = reference(
        task,
        pd.concat(frames),
        offset=roles.get("offset"),
        exposure=roles.get("exposure"),
        weight=roles.get("sample_weight"),
    )
    assert_matches(result, fit.model.summary(), task)
    # Predictions include the offset / exposure as statsmodels' do.
    pooled = pd.concat(frames)
    expected = result.predict(
        sm.add_constant(pooled[PREDICTORS]),
        offset=pooled[roles["offset"]] if "offset" in roles else None,
        exposure=pooled[roles["exposure"]] if "exposure" in roles else None,
    )
    np.testing.assert_allclose(fit.model.predict_mean(pooled), expected, rtol=1e-6)


@pytest.mark.parametrize("task", ["logistic", "poisson", "gamma", "normal"])
def test_sample_weights_are_precision_weights(
    task: str, silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos(task)
    fit = run_federated(
        config(task), {"predictors": PREDICTORS, "target": "y", "sample_weight": "w"}, frames
    )
    result = reference(task, pd.concat(frames), weight="w")
    assert_matches(result, fit.model.summary(), task)
    assert fit.model.meta["weight_sum"] == pytest.approx(pd.concat(frames)["w"].sum())


def test_summary_confidence_level_and_covariance(
    silos: Callable[..., list[pd.DataFrame]], run_federated: Any, config: Any
) -> None:
    frames = silos("gamma")
    fit = run_federated(config("gamma"), {"predictors": PREDICTORS, "target": "y"}, frames)
    result = reference("gamma", pd.concat(frames))
    ci = result.conf_int(alpha=0.10)
    summary = fit.model.summary(confidence=0.90)
    np.testing.assert_allclose(summary["ci_lower"], ci[0], rtol=RTOL)
    np.testing.assert_allclose(summary["ci_upper"], ci[1], rtol=RTOL)
    np.testing.assert_allclose(fit.model.covariance(), result.cov_params(), rtol=RTOL)
