"""One linear_inference session through the real engine: the server in a thread, three real
ClientRuntime clients in threads, the SDK outside. The p-values the user gets from
``session.model().as_pytorch()`` must equal statsmodels' Logit on the pooled rows.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.http import ApiClient
from fedsilo.wire import SessionStatus

SHARED = ["s0", "s1"]
CHUNKED = ["c0", "c1", "c2", "c5"]


def run_client(server: Any, sid: str, name: str, path: str, results: dict[str, Any]) -> None:
    api = ApiClient(server.url, server.token)
    runtime = ClientRuntime(api, sid, name, path, None, 64, poll_wait=5, on_event=lambda _: None)
    try:
        results[name] = runtime.run()
    except Exception as exc:  # reported to the test thread
        results[name] = exc
    finally:
        api.close()


def test_logit_bundle_through_the_engine(thread_server: Any, tmp_path: Path, silos: Any) -> None:
    frames = silos("logistic")
    paths = []
    for i, frame in enumerate(frames):
        path = tmp_path / f"silo{i}.parquet"
        frame.to_parquet(path)
        paths.append(str(path))
    client = fedsilo.connect(thread_server.url, thread_server.token)
    try:
        session = client.create_fl_session(
            name="gwas",
            description="logit bundle",
            min_num_clients=3,
            num_rounds=20,
            package_name="linear_inference",
            model_config={"strategy": {"name": "LogitRegInference", "params": {}}, "seed": 23},
            data_config={"target": "y", "shared_predictors": SHARED, "chunked_predictors": CHUNKED},
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

        model = session.model().as_pytorch()
        assert isinstance(model, torch.nn.Module)
        pvalues = model.p_values()  # type: ignore[operator]
        pooled = pd.concat(frames, ignore_index=True)
        for chunk in CHUNKED:
            ref = sm.Logit(pooled["y"], sm.add_constant(pooled[[*SHARED, chunk]])).fit(disp=0)
            table = model.summary(chunk)  # type: ignore[operator]
            np.testing.assert_allclose(table["coef"], ref.params, rtol=1e-6)
            np.testing.assert_allclose(table["std err"], ref.bse, rtol=1e-6)
            assert abs(pvalues[chunk] - ref.pvalues[chunk]) < 1e-8

        metrics = session.metrics().as_dict()
        rounds = len(metrics["federated_metrics"])
        assert 2 <= rounds < 20
        assert metrics["federated_metrics"][0]["loss"] == pytest.approx(np.log(2.0), rel=1e-12)
        assert set(metrics["client_metrics"][-1]) == {"silo0", "silo1", "silo2"}
        assert (
            metrics["latest_global_model_federated_loss"]
            == metrics["federated_metrics"][-1]["loss"]
        )
    finally:
        client.close()
