"""End to end: the seed's "EDA in Individual Mode" walkthrough with real processes.

A real server process and two ``fedsilo client eda`` processes, each with its own parquet
file; the session runs with the seed's call as written (so with the default epsilon of 1.0:
differential privacy on), and the analyst reads the results through the SDK.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import fedsilo
from fedsilo.analytics.histograms import histogram
from fedsilo.runners.local import start_eda_client, start_server

pytestmark = pytest.mark.e2e

ALPHA = 1e-9  # per released number; OpenDP's noise cannot be seeded


def silo(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x0": rng.uniform(size=rows),
            "x1": rng.normal(40.0, 8.0, rows),
            "x5": rng.normal(0.0, 1.0, rows),
            "x7": rng.uniform(100.0, 200.0, rows),
            # codes as text: under DP a numeric column is classified from a noisy distinct
            # count, which at epsilon 1 over three columns misses small counts too often
            "x10": rng.choice(["c0", "c1", "c2"], rows),
            "x11": rng.choice(["north", "south", "east"], rows, p=[0.5, 0.3, 0.2]),
        }
    )
    frame.loc[frame.index % 20 == 0, "x1"] = np.nan
    return frame


def test_the_seed_eda_walkthrough(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    frames = {"dataset_one": silo(1, 20_000), "dataset_two": silo(2, 16_000)}
    for name, frame in frames.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
    silo(3, 3).to_csv(tmp_path / "tiny.csv", index=False)

    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        # least privilege: the admin token only mints the analyst's and each silo's token
        analyst = scoped_tokens.analyst(server.url, server.admin_token)
        silo_token = {
            name: scoped_tokens.client(server.url, server.admin_token, name)
            for name in [*frames, "tiny"]
        }
        client = fedsilo.connect(server.url, analyst)
        request.addfinalizer(client.close)

        dataset_config = {"dataset_one": [1, "x5", "x7"], "dataset_two": ["x1", "x10", "x11"]}
        eda_session = client.create_eda_session(
            name="Testing notebook - EDA",
            description="I am testing EDA session creation through a notebook",
            data_config=dataset_config,
        ).start()

        # A dataset below the policy's minimum is refused by its own client, before joining;
        # it runs beside the two real clients (a process start costs seconds).
        tiny = start_eda_client(
            eda_session.id, tmp_path / "tiny.csv", "dataset_one", server.url,
            silo_token["tiny"], client_name="tiny", log_path=tmp_path / "tiny.log",
        )  # fmt: skip
        clients = [
            start_eda_client(
                eda_session.id,
                tmp_path / f"{name}.parquet",
                name,
                server.url,
                silo_token[name],
                log_path=tmp_path / f"{name}.log",
            )
            for name in frames
        ]
        try:
            deadline = time.monotonic() + 120
            while eda_session.status in ("pending", "running"):  # the seed's polling loop
                assert time.monotonic() < deadline, "EDA session did not finish"
                time.sleep(0.2)
            eda_session.wait(timeout=10, progress=False)
            codes = [c.wait(timeout=60) for c in clients]
        finally:
            for c in clients:
                c.stop()
        assert codes == [0, 0], [c.log_tail() for c in clients]
        assert tiny.wait(timeout=60) == 2
        assert "the session's policy requires at least 10" in tiny.log_tail()
        assert {p.client_name for p in eda_session.participants()} == set(frames)
        assert eda_session.round == 2

        results = eda_session.results()
        assert repr(results).splitlines()[0] == (
            "EDA Session collection of datasets: ['dataset_one', 'dataset_two']"
        )
        described = results.describe()
        assert described.loc[("dataset_one", "count"), "x1"] > 0
        assert math.isnan(described.loc[("dataset_two", "mean"), "x5"])  # x5 not in dataset_two
        assert list(results["dataset_one"].describe().columns) == ["x1", "x5", "x7"]
        uniques = results["dataset_two"][["x10", "x11"]].uniques()
        assert sorted(uniques["x10"]) == ["c0", "c1", "c2"]
        assert sorted(uniques["x11"]) == ["east", "north", "south"]
        assert results["dataset_one"].mean().index.tolist() == ["x1", "x5", "x7"]
        assert isinstance(results["dataset_two"].plot_hist(), Figure)
        assert isinstance(results["dataset_two"]["x1"].plot_hist(), Figure)

        # differential privacy: each dataset spent the session's epsilon, and the released
        # numbers are within their mechanisms' stated accuracy
        assert results.epsilon == 1.0
        for name, frame in frames.items():
            spent = results.privacy[name]
            assert spent.epsilon == pytest.approx(1.0, rel=1e-9) and spent.delta <= 1e-6
            releases = {(r.column, r.statistic): r for r in spent.releases}
            x1 = results[name]["x1"]
            values = frame["x1"].dropna().to_numpy()
            a_count = releases[("x1", "counts")].accuracy(ALPHA)
            assert abs(x1.count() - values.size) <= a_count
            edges = x1.stats.edges
            a_hist = releases[("x1", "histogram")].accuracy(ALPHA)
            assert np.all(np.abs(x1.stats.histogram - histogram(values, edges)) <= a_hist)
            center = (edges[0] + edges[-1]) / 2
            true_sum = float((np.clip(values, edges[0], edges[-1]) - center).sum())
            a_sum = releases[("x1", "sum")].accuracy(ALPHA)
            n = values.size
            bound = (n * a_sum + abs(true_sum) * a_count) / (n * (n - a_count))
            assert abs(x1.mean() - (center + true_sum / n)) <= bound
        pooled = results.pooled()
        assert pooled["x1"].count() == pytest.approx(
            results["dataset_one"]["x1"].count() + results["dataset_two"]["x1"].count()
        )


@pytest.mark.slow
def test_a_secure_eda_session_gives_the_pooled_statistics_and_stores_no_dataset_s(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    """Under secure aggregation, real processes: the results are the pooled dataset only,
    equal to pandas on the pooled data (counts exact, mean within the stated quantization
    bound), and no file of the server (database, WAL, artifacts, its log) holds a dataset's
    own mean."""
    frames = {"dataset_one": silo(4, 5_000), "dataset_two": silo(5, 4_000)}
    for name, frame in frames.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        analyst = scoped_tokens.analyst(server.url, server.admin_token)
        client = fedsilo.connect(server.url, analyst)
        request.addfinalizer(client.close)
        body = {
            "name": "secure EDA",
            "description": "",
            "kind": "eda",
            "package_name": "eda",
            "min_num_clients": 2,
            "num_rounds": 2,
            "model_config": {"epsilon": None, "secure_aggregation": {"enabled": True}},
            "data_config": {name: [] for name in frames},
        }
        session = client.fl_session(client.api.post_json("/sessions", body)["id"]).start()
        clients = [
            start_eda_client(
                session.id,
                tmp_path / f"{name}.parquet",
                name,
                server.url,
                scoped_tokens.client(server.url, server.admin_token, name),
                log_path=tmp_path / f"{name}.log",
            )
            for name in frames
        ]
        try:
            session.wait(timeout=180, progress=False)
            codes = [c.wait(timeout=60) for c in clients]
        finally:
            for c in clients:
                c.stop()
        assert codes == [0, 0], [c.log_tail() for c in clients]
        results = session.results()
    assert results.datasets == ["pooled"]
    pooled = pd.concat(frames.values(), ignore_index=True)
    got = results.pooled()
    for column in ("x0", "x1", "x5", "x7"):
        edges = got[column].stats.edges
        values = pooled[column].dropna().to_numpy()
        assert got[column].count() == values.size
        np.testing.assert_array_equal(got[column].stats.histogram, histogram(values, edges))
        bound = 2 * (edges[-1] - edges[0]) / 2 / (2 * (2**23 - 1))  # n h / (2 L)
        assert abs(got[column].mean() - values.mean()) <= bound + 1e-12
    assert got["x10"].stats.value_counts is None  # omitted under secure aggregation
    everything = [p.read_bytes() for p in (tmp_path / "server").rglob("*") if p.is_file()]
    everything.append((tmp_path / "server.log").read_bytes())
    for frame in frames.values():
        for column in ("x1", "x7"):
            own = repr(float(frame[column].mean()))[:12].encode()
            assert not any(own in content for content in everything), column
