"""An EDA session through the SDK, the real server over HTTP and real client runtimes.

The server is the real app in a thread (``thread_server``); each dataset's client is the real
:class:`ClientRuntime` in a thread (a process each in ``tests/e2e/test_eda_session.py``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import fedsilo
from fedsilo.client.runtime import ClientRuntime
from fedsilo.errors import ConfigError, DataError, FedsiloError, NotFoundError, ValidationError
from fedsilo.http import ApiClient
from fedsilo.wire import SessionKind, SessionStatus

SEED_CONFIG = {"dataset_one": [1, "x5", "x7"], "dataset_two": ["x1", "x10", "x11"]}


@pytest.fixture
def client(thread_server: Any) -> Iterator[fedsilo.Client]:
    with fedsilo.connect(thread_server.url, thread_server.token) as sdk_client:
        yield sdk_client


def write(frames: dict[str, pd.DataFrame], directory: Path) -> dict[str, str]:
    paths = {}
    for name, frame in frames.items():
        path = directory / f"{name}.parquet"
        frame.to_parquet(path)
        paths[name] = str(path)
    return paths


def run_clients(server: Any, session_id: str, paths: dict[str, str]) -> dict[str, Any]:
    outcomes: dict[str, Any] = {}

    def work(name: str, path: str) -> None:
        api = ApiClient(server.url, server.token)
        try:
            runtime = ClientRuntime.for_dataset(
                api, session_id, path, name, poll_wait=5, on_event=lambda _: None
            )
            outcomes[name] = runtime.run()
        except Exception as exc:  # handed to the test thread
            outcomes[name] = exc
        finally:
            api.close()

    threads = [threading.Thread(target=work, args=item, daemon=True) for item in paths.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_the_seed_walkthrough_over_http(
    client: fedsilo.Client,
    thread_server: Any,
    tmp_path: Path,
    frames: dict[str, pd.DataFrame],
) -> None:
    session = client.create_eda_session(
        name="Testing notebook - EDA",
        description="I am testing EDA session creation through a notebook",
        data_config=SEED_CONFIG,
        epsilon=None,
    ).start()
    assert (session.package_name, session.min_num_clients, session.num_rounds) == ("eda", 2, 2)
    assert session.refresh().kind is SessionKind.eda
    assert session.model_config["epsilon"] is None
    with pytest.raises(NotFoundError, match=r"has no results yet .* call session\.wait"):
        session.results()

    outcomes = run_clients(thread_server, session.id, write(frames, tmp_path))
    assert outcomes == {"dataset_one": SessionStatus.completed, "dataset_two": "completed"}
    session.wait(timeout=60, progress=False)

    results = session.results()
    assert repr(results).splitlines()[0] == (
        "EDA Session collection of datasets: ['dataset_one', 'dataset_two']"
    )
    assert "differential privacy was off" in repr(results)
    one, two = frames["dataset_one"], frames["dataset_two"]
    assert results["dataset_one"]["x1"].mean() == pytest.approx(one["x1"].mean(), rel=1e-9)
    pooled = pd.concat([one["x1"], two["x1"]], ignore_index=True)
    x1 = results.pooled()["x1"]
    assert x1.count() == pooled.count()
    assert x1.std() == pytest.approx(pooled.std(), rel=1e-9)
    assert (x1.min(), x1.max()) == (pooled.min(), pooled.max())
    assert math.isnan(results.describe().loc[("dataset_two", "mean"), "x5"])
    assert set(results["dataset_two"][["x10", "x11"]].uniques()["x10"]) == set(range(5))

    participants = {p.client_name: p for p in session.participants()}
    assert set(participants) == {"dataset_one", "dataset_two"}  # client name = dataset name
    # the join summary names the analysed columns only, never values
    assert [c.name for c in participants["dataset_one"].dataset.columns] == ["x1", "x5", "x7"]
    with pytest.raises(FedsiloError, match="statistics, not a model"):
        session.model().as_pytorch()


def test_results_of_a_training_session_are_refused(client: fedsilo.Client) -> None:
    session = client.create_fl_session(
        "echo",
        min_num_clients=1,
        num_rounds=1,
        package_name="echo",
        model_config={},
        data_config={},
    )
    with pytest.raises(FedsiloError, match="is a hfl session; results\\(\\) reads the results"):
        session.results()


def test_an_eda_session_needs_datasets(client: fedsilo.Client) -> None:
    with pytest.raises(ValidationError, match="name them in data_config"):
        client.create_eda_session("no datasets")
    with pytest.raises(ValueError, match="'num_datasets' parameter must be an integer >= 1"):
        client.create_eda_session("zero", num_datasets=0)
    with pytest.raises(ValidationError, match="epsilon"):
        client.create_eda_session("bad", data_config={"d": []}, epsilon=-1.0)
    three = client.create_eda_session("three", data_config={"d": []}, num_datasets=3)
    assert three.min_num_clients == 3 and three.model_config["num_datasets"] == 3


def test_clients_of_the_wrong_kind_and_small_datasets_are_refused_before_joining(
    client: fedsilo.Client, thread_server: Any, tmp_path: Path
) -> None:
    session = client.create_eda_session("eda", data_config={"small": []}).start()
    path = tmp_path / "small.csv"
    pd.DataFrame({"v": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    with ApiClient(thread_server.url, thread_server.token) as api:
        train = ClientRuntime(api, session.id, "silo", str(path), None, 8)
        with pytest.raises(ConfigError, match="analyses named datasets: join it with `fedsilo"):
            train.run()
        small = ClientRuntime.for_dataset(api, session.id, str(path), "small")
        with pytest.raises(DataError, match="has 3 row\\(s\\); the session's policy requires"):
            small.run()
        missing = ClientRuntime.for_dataset(api, session.id, str(tmp_path / "no.csv"), "small")
        with pytest.raises(DataError, match=r"--dataset-path .* does not exist"):
            missing.run()
        echo = client.create_fl_session(
            "echo", min_num_clients=1, num_rounds=1, package_name="echo",
            model_config={}, data_config={},
        )  # fmt: skip
        named = ClientRuntime.for_dataset(api, echo.id, str(path), "small")
        with pytest.raises(ConfigError, match="does not take named datasets"):
            named.run()
        with pytest.raises(ConfigError, match="dataset name must start with a letter"):
            ClientRuntime.for_dataset(api, session.id, str(path), "no/slash")
    assert session.participants() == []
