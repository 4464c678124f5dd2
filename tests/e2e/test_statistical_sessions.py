"""End to end with real processes: a gbm session and a linear_inference (GWAS) session.

A real server process and real ``fedsilo client train`` processes; the downloaded models are
checked against scikit-learn (gbm quality) and statsmodels (exact p-values on pooled rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.metrics import roc_auc_score

import fedsilo
from fedsilo.data.synth import make_frames
from fedsilo.runners.local import ServerProcess, start_client, start_server

pytestmark = pytest.mark.e2e

PREDICTORS = [f"x{i}" for i in range(15)]


def run_session(
    client: fedsilo.Client,
    server: ServerProcess,
    scoped_tokens: Any,
    tmp_path: Path,
    package: str,
    model_config: dict[str, Any],
    data_config: dict[str, Any],
    silos: Sequence[Path],
    test: Path | None,
    num_rounds: int,
) -> fedsilo.Session:
    session = client.create_fl_session(
        name=f"{package}-e2e",
        description="",
        min_num_clients=len(silos),
        num_rounds=num_rounds,
        package_name=package,
        model_config=model_config,
        data_config=data_config,
    ).start()
    # least privilege: each silo joins with a client-only token of its own user
    tokens = [
        scoped_tokens.client(server.url, server.admin_token, f"silo{i}") for i in range(len(silos))
    ]
    processes = [
        start_client(
            session.id,
            str(path),
            str(test) if test is not None else None,
            512,
            f"silo{i}",
            server.url,
            tokens[i],
            log_path=tmp_path / f"{package}-client{i}.log",
        )
        for i, path in enumerate(silos)
    ]
    try:
        session.wait(timeout=240, progress=False)
        codes = [p.wait(timeout=60) for p in processes]
    finally:
        for p in processes:
            p.stop()
    assert codes == [0] * len(silos), [p.log_tail() for p in processes]
    return session


def test_gbm_over_real_processes(tmp_path: Path, scoped_tokens: Any) -> None:
    frames = make_frames(0)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"gbm-silo{i}.parquet")
        frames[f"train_silo{i}"].iloc[:4000].to_parquet(paths[-1])
    test_path = tmp_path / "gbm-test.parquet"
    frames["test"].to_parquet(test_path)
    model_config = {
        "strategy": {"name": "HistGradientBoosting", "params": {}},
        "model": {"params": {"max_depth": 2, "learning_rate": 0.3, "max_bins": 64}},
        "ml_task": {"type": "classification", "params": {}},
    }
    with (
        start_server(tmp_path / "gbm-server", log_path=tmp_path / "gbm-server.log") as server,
        fedsilo.connect(
            server.url, scoped_tokens.analyst(server.url, server.admin_token)
        ) as client,
    ):
        session = run_session(
            client,
            server,
            scoped_tokens,
            tmp_path,
            "gbm",
            model_config,
            {"predictors": PREDICTORS, "target": "y"},
            paths,
            test_path,
            num_rounds=5,
        )
        metrics = session.metrics().as_dict()
        assert len(metrics["federated_metrics"]) == 5
        estimator = session.model().as_sklearn()
    test = frames["test"]
    # A constant or broken model sits at 0.5; five shallow boosted trees reach well above.
    assert roc_auc_score(test["y"], estimator.predict_proba(test[PREDICTORS])[:, 1]) > 0.8


def test_linear_inference_over_real_processes(tmp_path: Path, scoped_tokens: Any) -> None:
    rng = np.random.default_rng(11)
    shared, chunked = ["age", "sex"], ["g0", "g1", "g2", "g3"]
    silos = []
    for i, rows in enumerate((300, 900, 1800)):
        frame = pd.DataFrame(
            {
                "age": rng.normal(50, 10, rows),
                "sex": rng.integers(0, 2, rows).astype(float),
                **{g: rng.integers(0, 3, rows).astype(float) for g in chunked},
            }
        )
        frame["y"] = 0.02 * frame["age"] + 0.8 * frame["g1"] + rng.normal(0, 1, rows)
        silos.append(frame)
        frame.to_parquet(tmp_path / f"li-silo{i}.parquet")
    paths = [tmp_path / f"li-silo{i}.parquet" for i in range(3)]
    with (
        start_server(tmp_path / "li-server", log_path=tmp_path / "li-server.log") as server,
        fedsilo.connect(
            server.url, scoped_tokens.analyst(server.url, server.admin_token)
        ) as client,
    ):
        session = run_session(
            client,
            server,
            scoped_tokens,
            tmp_path,
            "linear_inference",
            {"strategy": {"name": "LinearRegInference", "params": {}}},
            {"target": "y", "shared_predictors": shared, "chunked_predictors": chunked},
            paths,
            None,
            num_rounds=3,
        )
        model = session.model().as_pytorch()
    pooled = pd.concat(silos, ignore_index=True)
    pvalues = model.p_values()  # type: ignore[operator]
    for chunk in chunked:
        reference = sm.OLS(pooled["y"], sm.add_constant(pooled[[*shared, chunk]])).fit()
        table = model.summary(chunk)  # type: ignore[operator]
        np.testing.assert_allclose(table["coef"], reference.params, rtol=1e-6)
        np.testing.assert_allclose(table["std err"], reference.bse, rtol=1e-6)
        assert abs(pvalues[chunk] - reference.pvalues[chunk]) < 1e-8
    assert pvalues["g1"] < 1e-10 < pvalues["g0"]
