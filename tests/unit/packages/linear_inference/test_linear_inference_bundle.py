"""Models left out (singular, separated) and columns given by index, with the real workflow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from statsmodels.tools.sm_exceptions import ConvergenceWarning as StatsmodelsConvergenceWarning

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import DataError, TaskError
from fedsilo.packages.linear_inference import PACKAGE, LinearInferenceExecutor
from fedsilo.regression.newton import ConvergenceWarning

SHARED = ["s0", "s1"]
LOGIT = {"strategy": {"name": "LogitRegInference", "params": {}}}
OLS = {"strategy": {"name": "LinearRegInference"}}


@pytest.mark.parametrize("config", [LOGIT, OLS], ids=["logit", "ols"])
def test_a_singular_chunk_is_nan_with_a_reason_and_the_others_are_exact(
    config: dict[str, Any], silos: Any, run_federated: Any
) -> None:
    task = "logistic" if config is LOGIT else "normal"
    frames = silos(task)
    for frame in frames:
        frame["dup"] = frame["s0"]  # collinear with a shared predictor
        frame["const"] = 2.0  # collinear with the intercept
    chunks = ["c0", "dup", "const", "c2"]
    data = {"target": "y", "shared_predictors": SHARED, "chunked_predictors": chunks}
    model = run_federated(config, data, frames).model
    pvalues = model.p_values()
    assert pvalues[["dup", "const"]].isna().all()
    assert pvalues[["c0", "c2"]].notna().all()
    for name in ("dup", "const"):
        table = model.summary(name)
        assert table.isna().all().all()
        assert "singular design" in table.attrs["reason"]
        assert "singular design" in model.reasons[name]
    assert model.summary("c0").attrs["reason"] == ""
    pooled = pd.concat(frames, ignore_index=True)
    design = sm.add_constant(pooled[[*SHARED, "c2"]])
    ref = (
        sm.Logit(pooled["y"], design).fit(disp=0)
        if task == "logistic"
        else sm.OLS(pooled["y"], design).fit()
    )
    np.testing.assert_allclose(model.summary("c2")["coef"], ref.params, rtol=1e-6)
    np.testing.assert_allclose(model.summary("c2")["std err"], ref.bse, rtol=1e-6)
    # Predictions of a left-out model are NaN, the others finite.
    predictions = model.predict(pooled)
    assert predictions.shape == (len(pooled), 4)
    assert np.isnan(predictions[:, 1:3]).all() and np.isfinite(predictions[:, [0, 3]]).all()


def test_a_perfectly_separating_chunk_keeps_its_last_iterate_flagged_not_converged(
    silos: Any, run_federated: Any
) -> None:
    frames = silos("logistic")
    for frame in frames:
        frame["sep"] = frame["y"] * 2.0 - 1.0 + 0.01 * frame["s0"]
    data = {"target": "y", "shared_predictors": SHARED, "chunked_predictors": ["c0", "sep"]}
    # statsmodels warns too (PerfectSeparationWarning, ConvergenceWarning) and returns its
    # last iterate; so does the bundle, flagged, never NaN.
    with pytest.warns(ConvergenceWarning, match=r"1 of 2 .*\(sep\).*separates the classes"):
        fit = run_federated(LOGIT, data, frames, num_rounds=12)
    model = fit.model
    assert model.converged.to_dict() == {"c0": True, "sep": False}
    assert model.meta["converged"] == {"c0": True, "sep": False}
    assert "did not converge within num_rounds=12" in model.convergence_warnings["sep"]
    assert np.isfinite(model.p_values()).all()
    table = model.summary("sep")
    assert table.notna().all().all()
    assert table.attrs["converged"] is False and "last iterate" in table.attrs["warning"]
    assert table.attrs["reason"] == ""  # not left out
    assert model.summary("c0").attrs["converged"] is True
    assert any(
        line.startswith("warning: 1 model(s) did not converge (sep)") for line in fit.ctx.logs
    )


def test_columns_given_by_index_equal_columns_given_by_name(silos: Any, run_federated: Any) -> None:
    frames = silos("normal")
    columns = list(frames[0].columns)  # s0 s1 c0..c5 y
    by_name = {"target": "y", "shared_predictors": SHARED, "chunked_predictors": ["c0", "c3"]}
    by_index = {
        "target": columns.index("y"),
        "shared_predictors": [0, "s1"],
        "chunked_predictors": [columns.index("c0"), columns.index("c3")],
    }
    named = run_federated(OLS, by_name, frames).model
    indexed = run_federated(OLS, by_index, frames).model
    assert list(indexed.p_values().index) == ["c0", "c3"]
    pd.testing.assert_series_equal(named.p_values(), indexed.p_values())
    pd.testing.assert_frame_equal(named.summary("c3"), indexed.summary(1))


def test_the_client_lists_every_problem_of_its_data(silos: Any) -> None:
    frame = silos("logistic")[0]
    frame.loc[0, "y"] = 3.0
    frame["text"] = "a"
    mc, dc = PACKAGE.parse_configs(
        LOGIT,
        {"target": "y", "shared_predictors": ["s0", "text"], "chunked_predictors": [40, "zz"]},
    )
    with pytest.raises(DataError) as caught:
        LinearInferenceExecutor(mc, dc, LocalDataset(frame, None, 8))
    message = str(caught.value)
    assert "chunked_predictors[0]: column index 40 is out of range" in message
    mc, dc = PACKAGE.parse_configs(
        LOGIT, {"target": "y", "shared_predictors": ["s0", "text"], "chunked_predictors": ["zz"]}
    )
    with pytest.raises(DataError) as caught:
        LinearInferenceExecutor(mc, dc, LocalDataset(frame, None, 8))
    message = str(caught.value)
    assert "missing required column(s) 'zz'" in message
    assert "'text' is not numeric" in message
    mc, dc = PACKAGE.parse_configs(
        LOGIT, {"target": "y", "shared_predictors": ["s0"], "chunked_predictors": [2]}
    )
    with pytest.raises(DataError, match="must be 0 or 1 for logistic"):
        LinearInferenceExecutor(mc, dc, LocalDataset(frame, None, 8))
    # An index naming a column already used by name is caught after resolving.
    mc, dc = PACKAGE.parse_configs(
        OLS, {"target": "y", "shared_predictors": ["s0"], "chunked_predictors": [0]}
    )
    with pytest.raises(DataError, match="column 's0' is already used as shared_predictors"):
        LinearInferenceExecutor(mc, dc, LocalDataset(frame, None, 8))


def test_the_client_refuses_malformed_tasks(silos: Any) -> None:
    mc, dc = PACKAGE.parse_configs(
        OLS, {"target": "y", "shared_predictors": SHARED, "chunked_predictors": ["c0", "c1"]}
    )
    executor = LinearInferenceExecutor(mc, dc, LocalDataset(silos("normal")[0], None, 8))
    with pytest.raises(TaskError, match="cannot run task kind 'fit'"):
        executor.handle("fit", {}, {})
    with pytest.raises(TaskError, match=r"'betas' of shape \(2, 4\); got shape \(2, 3\)"):
        executor.handle("bundle_stats", {}, {"betas": np.zeros((2, 3)), "active": np.ones(2)})
    with pytest.raises(TaskError, match="non-finite"):
        executor.handle(
            "bundle_stats", {}, {"betas": np.full((2, 4), np.nan), "active": np.ones(2)}
        )


def test_a_restarted_server_resumes_from_the_checkpoint(
    silos: Any, run_federated: Any, crash: Any
) -> None:
    frames = silos("logistic")
    data = {"target": "y", "shared_predictors": SHARED, "chunked_predictors": ["c0", "c1", "c4"]}
    whole = run_federated(LOGIT, data, frames)
    with pytest.raises(crash) as caught:
        run_federated(LOGIT, data, frames, crash_after=2)
    ctx = caught.traceback[-1].frame.f_locals["self"]
    resumed = run_federated(LOGIT, data, frames, checkpoint=ctx.last_checkpoint)
    assert min(resumed.ctx.rounds) == 3  # rounds 1 and 2 are not asked again
    pd.testing.assert_series_equal(resumed.model.p_values(), whole.model.p_values())
    np.testing.assert_array_equal(resumed.model.coef_, whole.model.coef_)


def test_a_start_worse_than_newtons_guarantee_gives_way_to_the_newton_step(
    silos: Any, run_federated: Any
) -> None:
    # Tight classes with 2 % flipped labels: LDA overshoots (|slope| ~ 30 where the MLE is ~6),
    # so its deviance misses the bound Newton's first iterate is guaranteed to reach.
    frames = silos("logistic")
    rng = np.random.default_rng(5)
    for frame in frames:
        clean = (rng.random(len(frame)) < 0.5).astype(float)
        frame["tight"] = clean + rng.normal(0.0, 0.05, len(frame))
        frame["y"] = np.where(rng.random(len(frame)) < 0.02, 1.0 - clean, clean)
    data = {"target": "y", "shared_predictors": SHARED, "chunked_predictors": ["c0", "tight"]}
    fit = run_federated(LOGIT, data, frames)
    pooled = pd.concat(frames, ignore_index=True)

    def trial(server_round: int) -> np.ndarray:
        saved = fit.ctx.checkpoints[server_round - 1].arrays
        return saved["beta"] + saved["scale"][:, None] * saved["direction"]

    tight = pooled[[*SHARED, "tight"]]
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(tight, pooled["y"])
    np.testing.assert_allclose(trial(2)[1], np.r_[lda.intercept_, lda.coef_[0]], rtol=1e-9)
    # Round 3 asks the tight model at Newton's first iterate from 0 (statsmodels' one
    # Newton iteration from 0), not at a step from the rejected start.
    with pytest.warns(StatsmodelsConvergenceWarning):
        one_step = sm.Logit(pooled["y"], sm.add_constant(tight)).fit(
            disp=0, method="newton", maxiter=1, start_params=np.zeros(4)
        )
    # (statsmodels' Newton adds a 1e-10 ridge to the Hessian: agreement to ~1e-9, not 1e-15)
    np.testing.assert_allclose(trial(3)[1], one_step.params, rtol=1e-7)
    assert fit.ctx.checkpoints[2].arrays["on_start"].tolist() == [0.0, 0.0]
    assert fit.model.converged.all()
    for chunk in ("c0", "tight"):
        design = sm.add_constant(pooled[[*SHARED, chunk]])
        ref = sm.Logit(pooled["y"], design).fit(disp=0)
        np.testing.assert_allclose(fit.model.summary(chunk)["coef"], ref.params, rtol=1e-8)
        np.testing.assert_allclose(fit.model.summary(chunk)["std err"], ref.bse, rtol=1e-8)
