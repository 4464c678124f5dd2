"""End to end: the seed's "PRL Session Example" with real processes.

A real server process and two ``fedsilo client prl`` processes (CSV train and test tables
each, string ids); the analyst creates the session with the seed's call as written and reads
the overlap statistics, which must equal pandas' merge on the ids. A third silo whose ids
repeat refuses before joining: exit code 2, one line naming the count and row positions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import fedsilo
from fedsilo.runners.local import start_server

pytestmark = pytest.mark.e2e

NAMES = ("passive_client", "active_client")


def table(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    people = rng.choice(int(rows * 1.2), rows, replace=False)
    return pd.DataFrame({"id": [f"p{p:06d}" for p in people], "x": rng.normal(size=rows)})


def prl_client(
    sid: str, name: str, paths: dict[str, Path], url: str, token: str, log: Path
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "fedsilo", "client", "prl", "--session", sid,
        "--train-path", str(paths["train"]), "--test-path", str(paths["test"]),
        "--client-name", name, "--url", url, "--poll-wait", "2",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "FEDSILO_TOKEN": token}
        )


def test_the_seed_prl_walkthrough(
    tmp_path: Path, request: pytest.FixtureRequest, scoped_tokens: Any
) -> None:
    frames = {
        name: {"train": table(i, 1440), "test": table(10 + i, 360)} for i, name in enumerate(NAMES)
    }
    paths: dict[str, dict[str, Path]] = {}
    for name, tables in frames.items():
        paths[name] = {}
        for role, frame in tables.items():
            paths[name][role] = tmp_path / f"{name}_{role}.csv"
            frame.to_csv(paths[name][role], index=False)
    duplicated = frames[NAMES[0]]["train"].iloc[[0, 1, 0, 2]]
    bad = {"train": tmp_path / "dup_train.csv", "test": paths[NAMES[0]]["test"]}
    duplicated.to_csv(bad["train"], index=False)

    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        analyst = scoped_tokens.analyst(server.url, server.admin_token)
        tokens = {n: scoped_tokens.client(server.url, server.admin_token, n) for n in NAMES}
        client = fedsilo.connect(server.url, analyst)
        request.addfinalizer(client.close)
        prl_data_config = {
            "clients": {
                "passive_client": {"id_columns": ["id"]},
                "active_client": {"id_columns": ["id"]},
            }
        }
        prl_session = client.create_prl_session(
            name="Testing notebook - PRL",
            description="I am testing PRL session creation through a notebook",
            data_config=prl_data_config,
        ).start()
        refusing = prl_client(
            prl_session.id, NAMES[0], bad, server.url, tokens[NAMES[0]], tmp_path / "dup.log"
        )
        assert refusing.wait(timeout=120) == 2
        refusal = (tmp_path / "dup.log").read_text()
        assert "1 row(s) repeat an id tuple of an earlier row (row 2 repeats row 0)" in refusal
        assert "Traceback" not in refusal
        procs = [
            prl_client(prl_session.id, n, paths[n], server.url, tokens[n], tmp_path / f"{n}.log")
            for n in NAMES
        ]
        try:
            deadline = time.monotonic() + 120
            while prl_session.status in ("pending", "running"):
                assert time.monotonic() < deadline, "PRL session did not finish"
                time.sleep(0.2)
            codes = [p.wait(timeout=60) for p in procs]
        finally:
            for p in procs:
                p.kill()
        assert codes == [0, 0], [(tmp_path / f"{n}.log").read_text()[-2000:] for n in NAMES]
        got = prl_session.metrics().as_dict()
    assert got["session_id"] == prl_session.id and got["federated_metrics"] == []
    for role in ("train", "test"):
        shared = len(frames[NAMES[0]][role].merge(frames[NAMES[1]][role], on="id"))
        for name in NAMES:
            rows = len(frames[name][role])
            assert got["client_metrics"][name][role] == {
                "n_records": rows,
                "n_overlapped_records": shared,
                "frac_overlapped": shared / rows,
            }
