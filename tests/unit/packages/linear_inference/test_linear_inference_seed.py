"""The seed's linear inference tutorial, literally: its configs, 5 rounds, the sample data.

The seed runs ``LogitRegInference`` with ``num_rounds=5``, ``seed: 23``, target ``y``,
``shared_predictors: [x1, x2]`` and ``chunked_predictors: [x0, x3, x10, x11]`` over
``train_silo0`` / ``train_silo1`` with ``test.parquet`` as every client's test set, then
reads ``p_values()``, ``summary("x0")`` and predicts through ``ChunkedTabularDataset``.
Every number is compared with statsmodels on the pooled training rows.

Tolerances: coefficients ``atol = rtol = 1e-8`` and standard errors ``rtol = 1e-8`` (measured
~1e-15: the fit converges to tol = 1e-10 by round 5, then both sides are float64 sums of the
same rows); p-values ``rtol = 1e-6`` (they are as small as 1e-90, where a z error of 1e-12
moves p by ~z * 1e-12 relative).
"""

from __future__ import annotations

import threading
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from statsmodels.tools.sm_exceptions import ConvergenceWarning as StatsmodelsConvergenceWarning
from torch.utils.data import DataLoader

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.data.synth import make_frames, write_sample_data
from fedsilo.http import ApiClient
from fedsilo.packages.linear_inference.dataset import ChunkedTabularDataset
from fedsilo.regression.newton import ConvergenceWarning
from fedsilo.sdk.model import Model
from fedsilo.wire import ModelMeta

# The seed's literal configs.
model_config_logit = {
    "strategy": {"name": "LogitRegInference", "params": {}},
    "seed": 23,  # for reproducibility
}
data_config_logit = {
    "target": "y",
    "shared_predictors": ["x1", "x2"],
    "chunked_predictors": ["x0", "x3", "x10", "x11"],
}
SHARED = data_config_logit["shared_predictors"]
CHUNKED = data_config_logit["chunked_predictors"]


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return make_frames(seed=0)


def seed_session(frames: dict[str, pd.DataFrame], run_federated: Any, num_rounds: int) -> Any:
    silos = [frames["train_silo0"], frames["train_silo1"]]
    return run_federated(
        model_config_logit,
        data_config_logit,
        silos,
        num_rounds=num_rounds,
        tests=[frames["test"], frames["test"]],
    )


def statsmodels_logit(pooled: pd.DataFrame, chunk: str, **fit: Any) -> Any:
    design = sm.add_constant(pooled[[*SHARED, chunk]])
    return sm.Logit(pooled["y"], design).fit(disp=0, **fit)


def test_the_seed_session_converges_in_its_5_rounds_to_statsmodels(
    frames: dict[str, pd.DataFrame], run_federated: Any
) -> None:
    fit = seed_session(frames, run_federated, num_rounds=5)
    model = fit.model
    assert model.meta["rounds"] <= 5
    assert model.converged.all(), model.convergence_warnings
    assert model.meta["converged"] == dict.fromkeys(CHUNKED, True)
    assert model.convergence_warnings == {} and model.reasons == {}
    assert not any(line.startswith("warning:") for line in fit.ctx.logs)
    pooled = frames["train_centralized"]
    pvalues = model.p_values()
    assert list(pvalues.index) == CHUNKED
    for chunk in CHUNKED:
        ref = statsmodels_logit(pooled, chunk)
        table = model.summary(chunk)
        np.testing.assert_allclose(table["coef"], ref.params, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(table["std err"], ref.bse, rtol=1e-8)
        np.testing.assert_allclose(table["P>|z|"], ref.pvalues, rtol=1e-6)
        np.testing.assert_allclose(pvalues[chunk], ref.pvalues[chunk], rtol=1e-6)
        # The GLM spelling of the same model gives the same fit.
        glm = sm.GLM(
            pooled["y"], sm.add_constant(pooled[[*SHARED, chunk]]), family=sm.families.Binomial()
        ).fit()
        np.testing.assert_allclose(table["coef"], glm.params, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(table["std err"], glm.bse, rtol=1e-8)
    # Round 1 is every model at 0 (test loss log 2, as in the seed's output); then the
    # training loss falls every round (every trial was accepted: no halving, no fallback).
    federated = [fit.ctx.rounds[r][0] for r in sorted(fit.ctx.rounds)]
    assert len(federated) == 5
    assert federated[0]["loss"] == pytest.approx(np.log(2.0), rel=1e-12)
    train = [metrics["train_loss"] for metrics in federated]
    assert train[0] == pytest.approx(np.log(2.0), rel=1e-12)
    assert all(later <= earlier for earlier, later in pairwise(train))
    assert train[-1] < train[1] < train[0]


def test_the_logit_start_is_linear_discriminant_analysis(
    frames: dict[str, pd.DataFrame], run_federated: Any
) -> None:
    with pytest.warns(ConvergenceWarning, match="did not converge within num_rounds=2"):
        fit = seed_session(frames, run_federated, num_rounds=2)
    # Round 2 asks every model at its start: scikit-learn's LDA on the pooled rows.
    start = fit.ctx.checkpoints[1].arrays
    trial = start["beta"] + start["scale"][:, None] * start["direction"]
    pooled = frames["train_centralized"]
    for j, chunk in enumerate(CHUNKED):
        lda = LinearDiscriminantAnalysis(solver="lsqr").fit(pooled[[*SHARED, chunk]], pooled["y"])
        np.testing.assert_allclose(trial[j, 0], lda.intercept_[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(trial[j, 1:], lda.coef_[0], rtol=1e-9, atol=1e-12)


def test_too_few_rounds_give_the_last_iterate_flagged_not_nan(
    frames: dict[str, pd.DataFrame], run_federated: Any
) -> None:
    # 3 rounds: 0, the LDA start, one Newton step from it -- not converged yet.
    with pytest.warns(ConvergenceWarning, match="4 of 4 .* did not converge within num_rounds=3"):
        fit = seed_session(frames, run_federated, num_rounds=3)
    model = fit.model
    assert not model.converged.any()
    assert model.meta["converged"] == dict.fromkeys(CHUNKED, False)
    assert set(model.convergence_warnings) == set(CHUNKED)
    assert np.isfinite(model.p_values()).all()
    assert any(line.startswith("warning: 4 model(s) did not converge") for line in fit.ctx.logs)
    pooled = frames["train_centralized"]
    for chunk in CHUNKED:
        columns = [*SHARED, chunk]
        lda = LinearDiscriminantAnalysis(solver="lsqr").fit(pooled[columns], pooled["y"])
        start = np.r_[lda.intercept_, lda.coef_[0]]
        # statsmodels' Newton, one iteration from the same start: the same last iterate
        # (its coefficients, and the standard errors of the Hessian there).
        with pytest.warns(StatsmodelsConvergenceWarning):
            ref = statsmodels_logit(pooled, chunk, start_params=start, method="newton", maxiter=1)
        assert not ref.mle_retvals["converged"]
        table = model.summary(chunk)
        assert table.attrs["converged"] is False and "last iterate" in table.attrs["warning"]
        np.testing.assert_allclose(table["coef"], ref.params, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(table["std err"], ref.bse, rtol=1e-8)
        np.testing.assert_allclose(table["P>|z|"], ref.pvalues, rtol=1e-6)
        # ... a first-order step away from the converged fit, far closer than NaN.
        converged = statsmodels_logit(pooled, chunk)
        np.testing.assert_allclose(table["coef"], converged.params, atol=1e-3)


def test_predictions_through_the_seeds_chunked_tabular_dataset(
    frames: dict[str, pd.DataFrame], run_federated: Any, tmp_path: Path
) -> None:
    fit = seed_session(frames, run_federated, num_rounds=5)
    assert fit.ctx.saved is not None
    arrays, meta, server_round = fit.ctx.saved
    downloaded = Model.from_frame(
        Model(
            arrays,
            ModelMeta(
                session_id="3cdf4be992",
                package_name="linear_inference",
                round=server_round,
                model_config=model_config_logit,
                data_config=data_config_logit,
                meta=meta,
            ),
        ).frame
    )
    model_logit = downloaded.as_pytorch()
    pv = model_logit.p_values()  # type: ignore[operator]
    assert list(pv.index) == CHUNKED
    summary_x0 = model_logit.summary("x0")  # type: ignore[operator]
    assert list(summary_x0.index) == ["const", "x1", "x2", "x0"]
    assert model_logit.converged.all()

    data_path = tmp_path / "synthetic"
    write_sample_data(data_path, seed=0)
    ds = ChunkedTabularDataset(path=f"{data_path}/test.parquet", **data_config_logit)
    dl = DataLoader(ds, batch_size=len(ds), shuffle=False)
    x, _ = next(iter(dl))
    y_pred = model_logit(x)
    assert y_pred.dtype == torch.float64 and y_pred.shape == (4000, 4)
    test = frames["test"]
    pooled = frames["train_centralized"]
    for j, chunk in enumerate(CHUNKED):
        ref = statsmodels_logit(pooled, chunk)
        expected = ref.predict(sm.add_constant(test[[*SHARED, chunk]]))
        np.testing.assert_allclose(y_pred[:, j].numpy(), expected, rtol=1e-8)
    # predict_proba (scikit-learn's MultiOutputClassifier shape) agrees with predict.
    probabilities = downloaded.predict_proba(test)
    assert len(probabilities) == 4
    for j, table in enumerate(probabilities):
        assert table.shape == (4000, 2)
        np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(table[:, 1], y_pred[:, j].numpy(), rtol=1e-12)


def test_the_seed_session_through_the_engine(thread_server: Any, tmp_path: Path) -> None:
    """The seed's calls against a real server and two real clients over HTTP."""
    data_path = tmp_path / "synthetic"
    write_sample_data(data_path, seed=0)
    client = fedsilo.connect(thread_server.url, thread_server.token)
    try:
        training_session_logit = client.create_fl_session(
            name="Testing linear inference session",
            description="I am testing linear inference session creation through a notebook",
            min_num_clients=2,
            num_rounds=5,
            package_name="linear_inference",
            model_config=model_config_logit,
            data_config=data_config_logit,
        ).start()
        results: dict[str, Any] = {}

        def train(name: str, silo: str) -> None:
            api = ApiClient(thread_server.url, thread_server.token)
            runtime = ClientRuntime(
                api,
                training_session_logit.id,
                name,
                f"{data_path}/{silo}.parquet",
                f"{data_path}/test.parquet",
                1024,
                poll_wait=5,
                on_event=lambda _: None,
            )
            try:
                results[name] = runtime.run()
            except Exception as exc:  # reported to the test thread
                results[name] = exc
            finally:
                api.close()

        threads = [
            threading.Thread(target=train, args=(name, silo), daemon=True)
            for name, silo in (
                ("client-1-inference", "train_silo0"),
                ("client-2-inference", "train_silo1"),
            )
        ]
        for thread in threads:
            thread.start()
        training_session_logit.wait(timeout=120, progress=False)
        for thread in threads:
            thread.join(timeout=30)
        assert results == dict.fromkeys(["client-1-inference", "client-2-inference"], "completed")

        model_logit = training_session_logit.model().as_pytorch()
        pv = model_logit.p_values()  # type: ignore[operator]
        assert pv.notna().all()
        assert model_logit.converged.all()
        pooled = pd.concat(
            [pd.read_parquet(data_path / f"train_silo{i}.parquet") for i in (0, 1)],
            ignore_index=True,
        )
        for chunk in CHUNKED:
            ref = statsmodels_logit(pooled, chunk)
            table = model_logit.summary(chunk)  # type: ignore[operator]
            np.testing.assert_allclose(table["coef"], ref.params, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(table["std err"], ref.bse, rtol=1e-8)
            np.testing.assert_allclose(pv[chunk], ref.pvalues[chunk], rtol=1e-6)
        metrics = training_session_logit.metrics().as_dict()
        assert len(metrics["federated_metrics"]) == 5
        assert metrics["federated_metrics"][0]["loss"] == pytest.approx(np.log(2.0), rel=1e-12)
        logs = [line.message for line in training_session_logit.logs()]
        assert any("4 of 4 model(s) converged in 5 round(s)" in line for line in logs)
        assert not any("warning:" in line for line in logs)
    finally:
        client.close()
