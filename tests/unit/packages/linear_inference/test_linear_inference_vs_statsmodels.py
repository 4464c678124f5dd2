"""The bundle equals statsmodels' Logit / OLS fitted on the pooled rows, model by model.

Tolerances (the issue's): coefficients and standard errors within 1e-6 relative, p-values
within 1e-8 absolute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

SHARED = ["s0", "s1"]
CHUNKED = ["c0", "c1", "c2", "c3", "c4", "c5"]

STRATEGY = {"logistic": "LogitRegInference", "normal": "LinearRegInference"}


def reference(task: str, pooled: pd.DataFrame, chunk: str) -> object:
    design = sm.add_constant(pooled[[*SHARED, chunk]])
    if task == "logistic":
        return sm.Logit(pooled["y"], design).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    return sm.OLS(pooled["y"], design).fit()


@pytest.mark.parametrize("task", ["logistic", "normal"])
def test_every_model_matches_statsmodels_on_the_pooled_rows(
    task: str, silos: Any, run_federated: Any
) -> None:
    frames = silos(task)
    config = {"strategy": {"name": STRATEGY[task], "params": {}}, "seed": 23}
    data = {"target": "y", "shared_predictors": SHARED, "chunked_predictors": CHUNKED}
    fit = run_federated(config, data, frames)
    pooled = pd.concat(frames, ignore_index=True)
    pvalues = fit.model.p_values()
    assert list(pvalues.index) == CHUNKED
    for chunk in CHUNKED:
        ref = reference(task, pooled, chunk)
        table = fit.model.summary(chunk)
        np.testing.assert_allclose(table["coef"], ref.params, rtol=1e-6, atol=0)  # type: ignore[attr-defined]
        np.testing.assert_allclose(table["std err"], ref.bse, rtol=1e-6, atol=0)  # type: ignore[attr-defined]
        column = "P>|z|" if task == "logistic" else "P>|t|"
        np.testing.assert_allclose(table[column], ref.pvalues, rtol=0, atol=1e-8)  # type: ignore[attr-defined]
        ci = ref.conf_int()  # type: ignore[attr-defined]
        np.testing.assert_allclose(table["[0.025"], ci[0], rtol=1e-6)
        np.testing.assert_allclose(table["0.975]"], ci[1], rtol=1e-6)
        assert pvalues[chunk] == pytest.approx(ref.pvalues[chunk], abs=1e-8)  # type: ignore[attr-defined]
    # The signal chunks are detected, the noise chunks are not.
    assert pvalues["c0"] < 1e-6 and pvalues["c1"] < 1e-3
