"""One glm session through the real engine: the server in a thread, three real ClientRuntime
clients in threads, the SDK on the outside. The fit must still equal statsmodels' on the
pooled rows, and the metrics, the model download and ``Model.summary()`` must carry it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.http import ApiClient
from fedsilo.wire import SessionStatus

PREDICTORS = ["x0", "x1", "x2", "x3"]


def run_client(server: Any, sid: str, name: str, path: str, results: dict[str, Any]) -> None:
    api = ApiClient(server.url, server.token)
    runtime = ClientRuntime(api, sid, name, path, None, 64, poll_wait=5, on_event=lambda _: None)
    try:
        results[name] = runtime.run()
    except Exception as exc:  # reported to the test thread
        results[name] = exc
    finally:
        api.close()


def test_poisson_with_exposure_through_the_engine(
    thread_server: Any, tmp_path: Path, silos: Callable[..., list[pd.DataFrame]], config: Any
) -> None:
    frames = silos("poisson")
    paths = []
    for i, frame in enumerate(frames):
        path = tmp_path / f"silo{i}.parquet"
        frame.to_parquet(path)
        paths.append(str(path))
    data_config = {"predictors": PREDICTORS, "target": "y", "exposure": "expo"}
    client = fedsilo.connect(thread_server.url, thread_server.token)
    try:
        session = client.create_fl_session(
            name="glm",
            description="poisson claims with exposure",
            min_num_clients=3,
            num_rounds=20,
            package_name="glm",
            model_config=config("poisson"),
            data_config=data_config,
        ).start()
        results: dict[str, Any] = {}
        threads = [
            threading.Thread(
                target=run_client,
                args=(thread_server, session.id, f"silo{i}", path, results),
                daemon=True,
            )
            for i, path in enumerate(paths)
        ]
        for thread in threads:
            thread.start()
        session.wait(timeout=120, progress=False)
        for thread in threads:
            thread.join(timeout=30)
        assert results == {f"silo{i}": SessionStatus.completed for i in range(3)}

        pooled = pd.concat(frames)
        reference = sm.GLM(
            pooled["y"],
            sm.add_constant(pooled[PREDICTORS]),
            family=sm.families.Poisson(),
            exposure=pooled["expo"],
        ).fit(tol=1e-13)
        model = session.model()
        summary = model.summary()
        np.testing.assert_allclose(summary["coef"], reference.params, rtol=1e-6)
        np.testing.assert_allclose(summary["std_err"], reference.bse, rtol=1e-6)
        np.testing.assert_allclose(summary["p_value"], reference.pvalues, rtol=1e-5, atol=1e-300)

        # Newton stops early: fewer rounds than num_rounds, each with exact pooled metrics.
        metrics = session.metrics().as_dict()
        rounds = len(metrics["federated_metrics"])
        assert 2 <= rounds < 20 == session.num_rounds
        assert session.round == rounds == model.round
        last = metrics["federated_metrics"][-1]
        assert last["train_deviance"] == pytest.approx(reference.deviance, rel=1e-8)
        assert set(metrics["client_metrics"][-1]) == {"silo0", "silo1", "silo2"}
        assert metrics["latest_global_model_federated_loss"] == last["loss"]
        assert any("newton converged" in line.message for line in session.logs())
    finally:
        client.close()
