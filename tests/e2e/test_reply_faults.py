"""End to end (issue 11): poisoned and malformed replies are contained.

A real server process and two real ffnet client processes train over HTTP; a third
participant, "mallory", speaks the protocol itself from the test process. It joins last (so
an honest client builds the initial model) and answers every fit task with a defect:

* under FedAvg, NaN weights in round 1 and ``num_examples = 1e9`` in round 2: each is one
  failed task with one log line naming mallory and the field, and the session completes with
  the honest clients' model (finite, trained);
* under FedMedian, a valid-looking reply of the global weights times 1000: the model stays
  as small and as accurate as an honest one, where the same attack blows FedAvg's up by
  more than ten times.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import fedsilo
from fedsilo.client.keys import KeyPair
from fedsilo.data.synth import write_sample_data
from fedsilo.data.validation import summarize
from fedsilo.runners.local import start_client, start_server
from fedsilo.wire import (
    OCTET_STREAM,
    PARTICIPANT_HEADER,
    TASK_ID_HEADER,
    ReplyEnvelope,
    TaskPayload,
    decode_frame,
    encode_frame,
)

pytestmark = pytest.mark.e2e

PREDICTORS = [f"x{i}" for i in range(15)]
DATA_CONFIG = {"predictors": PREDICTORS, "target": "y"}
MALLORY_ROWS = 100

#: fit(round, global arrays) -> (reply arrays, reply meta)
Fit = Callable[[int, dict[str, np.ndarray]], tuple[dict[str, np.ndarray], dict[str, Any]]]


def model_config(strategy: str, **params: Any) -> dict[str, Any]:
    return {
        "experiment_name": "faults",
        "experiment_description": "two honest silos and mallory",
        "strategy": {"name": strategy, "params": {"min_fit_clients": 2, **params}},
        "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6], "output_size": 2}},
        "balance_train_datasets": False,
        "ml_task": {"type": "classification", "params": {"loss_weights": None}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
        "seed": 23,
    }


def nan_then_inflated(server_round: int, arrays: dict[str, np.ndarray]) -> Any:
    if server_round == 1:
        return {k: np.full_like(v, np.nan) for k, v in arrays.items()}, {
            "num_examples": MALLORY_ROWS
        }
    return dict(arrays), {"num_examples": 1e9}


def scaled(server_round: int, arrays: dict[str, np.ndarray]) -> Any:
    return {k: (v * 1000).astype(v.dtype) for k, v in arrays.items()}, {
        "num_examples": MALLORY_ROWS
    }


class Mallory:
    """A participant over raw HTTP that answers fit tasks with ``fit``."""

    def __init__(self, url: str, token: str, sid: str, dataset: dict[str, Any], fit: Fit) -> None:
        self.http = httpx.Client(
            base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.sid, self.fit = sid, fit
        body = {
            "client_name": "mallory",
            "dataset": dataset,
            "public_key": KeyPair.generate().public_text,
        }
        joined = self.http.post(f"/sessions/{sid}/participants", json=body)
        assert joined.status_code == 201, joined.text
        self.tasks = f"/sessions/{sid}/participants/{joined.json()['id']}/tasks"
        self.headers = {PARTICIPANT_HEADER: joined.json()["credential"]}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                got = self.http.get(f"{self.tasks}/next", params={"wait": 5}, headers=self.headers)
                if got.status_code == 204:
                    continue
                if got.status_code != 200:
                    return  # 410: the session ended
                arrays, header = decode_frame(got.content)
                task = TaskPayload.model_validate(header)
                if task.kind == "fit":
                    out, meta = self.fit(task.round, arrays)
                else:
                    out, meta = {}, {"test_loss": 0.5, "test_num_examples": MALLORY_ROWS}
                self.http.post(
                    f"{self.tasks}/{got.headers[TASK_ID_HEADER]}/reply",
                    content=encode_frame(out, ReplyEnvelope(meta=meta)),
                    headers={**self.headers, "Content-Type": OCTET_STREAM},
                )
        except BaseException as exc:  # reported to the test thread
            self.error = exc

    def close(self) -> None:
        self.thread.join(timeout=60)
        self.http.close()


def run_attacked_session(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    server: Any,
    scoped_tokens: Any,
    strategy: str,
    fit: Fit,
    name: str,
) -> tuple[Any, httpx.Client, pd.DataFrame]:
    files = write_sample_data(tmp_path / name / "data")
    analyst = scoped_tokens.analyst(server.url, server.admin_token)
    sdk = fedsilo.connect(server.url, analyst)
    session = sdk.create_fl_session(
        name=name,
        description="",
        min_num_clients=3,
        num_rounds=2,
        package_name="ffnet",
        model_config=model_config(strategy),
        data_config=DATA_CONFIG,
    ).start()
    api = httpx.Client(
        base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {analyst}"}, timeout=60
    )
    clients = [
        start_client(
            session.id,
            str(files[f"train_silo{i}.parquet"]),
            str(files["test.parquet"]),
            256,
            f"silo{i}",
            server.url,
            scoped_tokens.client(server.url, server.admin_token, f"silo{i}"),
            log_path=tmp_path / f"{name}-client{i}.log",
        )
        for i in range(2)
    ]
    mallory = None
    try:
        deadline = 120
        for _ in range(deadline * 10):
            if len(api.get(f"/sessions/{session.id}/participants").json()) == 2:
                break
            threading.Event().wait(0.1)
        train = pd.read_parquet(files["train_silo0.parquet"])
        declared = summarize(train.head(MALLORY_ROWS), columns=[*PREDICTORS, "y"])
        mallory = Mallory(
            server.url,
            scoped_tokens.client(server.url, server.admin_token, "mallory"),
            session.id,
            declared.model_dump(),
            fit,
        )
        session.wait(timeout=240, progress=False)
        codes = [c.wait(timeout=60) for c in clients]
    finally:
        for c in clients:
            c.stop()
        if mallory is not None:
            mallory.close()
    assert codes == [0, 0]
    assert mallory.error is None, mallory.error
    request.addfinalizer(sdk.close)
    request.addfinalizer(api.close)
    return session, api, pd.read_parquet(files["test.parquet"])


def model_arrays(api: httpx.Client, sid: str) -> dict[str, np.ndarray]:
    response = api.get(f"/sessions/{sid}/model")
    assert response.status_code == 200, response.text
    return decode_frame(response.content)[0]


def accuracy(session: Any, test: pd.DataFrame) -> tuple[float, float]:
    predicted = np.asarray(session.model().predict(test))
    majority = max(test["y"].mean(), 1 - test["y"].mean())
    return float(np.mean(predicted == test["y"].to_numpy())), float(majority)


@pytest.mark.slow
def test_malformed_and_poisoned_replies_are_contained(
    request: pytest.FixtureRequest, tmp_path: Path, scoped_tokens: Any
) -> None:
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        # 1. NaN weights, then num_examples=1e9, under FedAvg: two failed tasks, a good model.
        session, api, test = run_attacked_session(
            request, tmp_path, server, scoped_tokens, "FedAvg", nan_then_inflated, "malformed"
        )
        status = api.get(f"/sessions/{session.id}").json()
        assert status["status"] == "completed", status
        logs = [line["message"] for line in api.get(f"/sessions/{session.id}/logs").json()]
        rejected = [line for line in logs if line.startswith("client 'mallory': fit reply")]
        assert len(rejected) == 2, logs
        assert rejected[0].startswith("client 'mallory': fit reply (round 1) rejected: array ")
        assert "non-finite value(s) (NaN or infinity); expected finite values" in rejected[0]
        assert rejected[1] == (
            "client 'mallory': fit reply (round 2) rejected: meta['num_examples'] is 1e+09 "
            f"(a float); expected an integer in [1, {MALLORY_ROWS}] (the train_rows declared "
            "on joining)"
        )
        weights = model_arrays(api, session.id)
        assert all(np.all(np.isfinite(v)) for v in weights.values())
        got, majority = accuracy(session, test)
        assert got > majority + 0.15, (got, majority)

        # 2. Weights x1000 that pass every check: FedMedian keeps the model honest ...
        session, api, test = run_attacked_session(
            request, tmp_path, server, scoped_tokens, "FedMedian", scaled, "median"
        )
        assert api.get(f"/sessions/{session.id}").json()["status"] == "completed"
        median = model_arrays(api, session.id)
        largest = max(float(np.max(np.abs(v))) for v in median.values())
        assert largest < 10, largest
        got, majority = accuracy(session, test)
        assert got > majority + 0.15, (got, majority)

        # ... where FedAvg follows mallory.
        session, api, _ = run_attacked_session(
            request, tmp_path, server, scoped_tokens, "FedAvg", scaled, "mean"
        )
        mean = model_arrays(api, session.id)
        assert max(float(np.max(np.abs(v))) for v in mean.values()) > 10 * largest
