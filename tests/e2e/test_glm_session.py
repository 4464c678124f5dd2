"""End to end: a real server process, three real client processes, a glm session over HTTP.

The seed's GLM tutorial model_config (its ``differential_privacy_params`` aside) runs as
written on three silos of 500 / 2,000 / 7,000 rows; the downloaded model must equal
statsmodels' logistic regression on the pooled rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import fedsilo
from fedsilo.runners.local import start_client, start_server

pytestmark = pytest.mark.e2e

PREDICTORS = [f"x{i}" for i in range(15)]
MODEL_CONFIG: dict[str, Any] = {
    "experiment_name": "test_synthetic_tabular",
    "experiment_description": "test_synthetic_tabular",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "output_activation": "sigmoid"}},
    "balance_train_datasets": False,
    "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.9}},
}
DATA_CONFIG = {"predictors": PREDICTORS, "target": "y"}


def write_silos(folder: Path) -> tuple[list[Path], Path, pd.DataFrame]:
    rng = np.random.default_rng(7)
    coef = rng.normal(0.0, 0.4, size=len(PREDICTORS))
    folder.mkdir(parents=True)

    def draw(n: int, shift: float) -> pd.DataFrame:
        frame = pd.DataFrame(rng.normal(shift, 1.0, (n, len(PREDICTORS))), columns=PREDICTORS)
        eta = -0.2 + frame.to_numpy() @ coef
        frame["y"] = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
        return frame

    frames = [draw(n, shift) for n, shift in ((500, -0.3), (2000, 0.0), (7000, 0.2))]
    paths = []
    for i, frame in enumerate(frames):
        paths.append(folder / f"train_silo{i}.parquet")
        frame.to_parquet(paths[-1])
    test = folder / "test.parquet"
    draw(1000, 0.0).to_parquet(test)
    return paths, test, pd.concat(frames)


def test_three_clients_fit_the_seed_glm_exactly(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    paths, test, pooled = write_silos(tmp_path / "data")
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        # least privilege: the admin token only mints the analyst's and each silo's token
        analyst = scoped_tokens.analyst(server.url, server.admin_token)
        silo_tokens = [
            scoped_tokens.client(server.url, server.admin_token, f"silo{i}")
            for i in range(len(paths))
        ]
        client = fedsilo.connect(server.url, analyst)
        request.addfinalizer(client.close)
        session = client.create_fl_session(
            name="glm-e2e",
            description="seed GLM tutorial config",
            min_num_clients=3,
            num_rounds=25,
            package_name="glm",
            model_config=MODEL_CONFIG,
            data_config=DATA_CONFIG,
        ).start()
        clients = [
            start_client(
                session.id,
                str(path),
                str(test),
                1024,
                f"silo{i}",
                server.url,
                silo_tokens[i],
                log_path=tmp_path / f"client{i}.log",
            )
            for i, path in enumerate(paths)
        ]
        try:
            session.wait(timeout=240, progress=False)
            codes = [c.wait(timeout=60) for c in clients]
        finally:
            for c in clients:
                c.stop()
        assert codes == [0, 0, 0], [p.read_text()[-2000:] for p in tmp_path.glob("client*.log")]

        reference = sm.GLM(
            pooled["y"], sm.add_constant(pooled[PREDICTORS]), family=sm.families.Binomial()
        ).fit(tol=1e-13)
        model = session.model()
        summary = model.summary()
        np.testing.assert_allclose(summary["coef"], reference.params, rtol=1e-6)
        np.testing.assert_allclose(summary["std_err"], reference.bse, rtol=1e-6)
        estimator = model.as_sklearn()
        test_frame = pd.read_parquet(test)
        np.testing.assert_array_equal(
            estimator.predict(test_frame[PREDICTORS]), model.predict(test_frame)
        )

        metrics = session.metrics().as_dict()
        rounds = metrics["federated_metrics"]
        assert 2 <= len(rounds) < 25
        assert {"loss", "accuracy", "roc_auc_client_mean", "train_loss"} <= set(rounds[-1])
        for values in metrics["client_metrics"][-1].values():
            assert values["test_num_examples"] == 1000
        # Every client saw the same test file, so the pooled loss is each client's loss.
        assert rounds[-1]["loss"] == pytest.approx(
            metrics["client_metrics"][-1]["silo0"]["test_loss"], rel=1e-12
        )
