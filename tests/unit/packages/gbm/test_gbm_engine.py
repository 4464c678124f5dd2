"""One gbm session through the real engine: the server in a thread, two real ClientRuntime
clients in threads, the SDK outside. The downloaded model must equal the in-process
workflow's on the same data (tree for tree), and metrics must arrive once per tree.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.data.synth import make_frames
from fedsilo.http import ApiClient
from fedsilo.wire import SessionStatus

PREDICTORS = [f"x{i}" for i in range(15)]
TREES = 4


def run_client(
    server: Any, sid: str, name: str, train: str, test: str, results: dict[str, Any]
) -> None:
    api = ApiClient(server.url, server.token)
    runtime = ClientRuntime(api, sid, name, train, test, 256, poll_wait=5, on_event=lambda _: None)
    try:
        results[name] = runtime.run()
    except Exception as exc:  # reported to the test thread
        results[name] = exc
    finally:
        api.close()


def test_a_gbm_session_through_the_engine(
    thread_server: Any, tmp_path: Path, gbm_run: Any, gbm_cfg: Any
) -> None:
    frames = make_frames(0)
    silos = [frames["train_silo0"].iloc[:4000], frames["train_silo1"].iloc[:4000]]
    test = frames["test"]
    test_path = tmp_path / "test.parquet"
    test.to_parquet(test_path)
    paths = []
    for i, frame in enumerate(silos):
        path = tmp_path / f"silo{i}.parquet"
        frame.to_parquet(path)
        paths.append(str(path))
    model_config = gbm_cfg(max_depth=2, max_bins=64)
    model_config["save_best_model"] = {"metric": "roc_auc", "mode": "max"}
    data_config = {"predictors": PREDICTORS, "target": "y"}
    client = fedsilo.connect(thread_server.url, thread_server.token)
    try:
        session = client.create_fl_session(
            name="gbm",
            description="boosting across two silos",
            min_num_clients=2,
            num_rounds=TREES,
            package_name="gbm",
            model_config=model_config,
            data_config=data_config,
        ).start()
        results: dict[str, Any] = {}
        threads = [
            threading.Thread(
                target=run_client,
                args=(thread_server, session.id, f"silo{i}", path, str(test_path), results),
                daemon=True,
            )
            for i, path in enumerate(paths)
        ]
        for thread in threads:
            thread.start()
        session.wait(timeout=120, progress=False)
        for thread in threads:
            thread.join(timeout=30)
        assert results == {"silo0": SessionStatus.completed, "silo1": SessionStatus.completed}

        metrics = session.metrics().as_dict()
        assert len(metrics["federated_metrics"]) == TREES
        assert set(metrics["client_metrics"][-1]) == {"silo0", "silo1"}
        model = session.model()
        estimator = model.as_sklearn()
        local = gbm_run(model_config, data_config, silos, num_rounds=TREES, tests=[test, test])
        expected = local.model.as_sklearn()
        assert estimator.n_iter_ == expected.n_iter_ == model.round
        np.testing.assert_array_equal(
            estimator.decision_function(test), expected.decision_function(test)
        )
        auc = roc_auc_score(test["y"], estimator.predict_proba(test)[:, 1])
        assert auc > 0.8
        np.testing.assert_array_equal(model.predict(test), estimator.predict(test))
    finally:
        client.close()
