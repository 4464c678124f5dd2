"""End to end, seed 002: fedsilo as a model-fusion service over plain REST.

A real server process; examples/model_fusion_rest.py (httpx only) creates a session, uploads
its safetensors initial model (``PUT .../initial-model``), waits for three real ``fedsilo
client train`` parties, trains with fedavg on a random two of the three per round
(``fraction_fit``), and fetches the global model as JSON and as the frame; a second run fuses
with iter_avg and is stopped after round 1. A third trains one round at learning rate 0, so
the reference for its global model is the upload itself: the session started from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file, save, save_file

from fedsilo.data.synth import write_sample_data
from fedsilo.runners.local import ClientProcess, start_client, start_server
from fedsilo.wire import decode_frame

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "examples" / "model_fusion_rest.py"
SCOPES = (
    "create_session",
    "start_session",
    "read_user_session",
    "user_model_download",
    "cancel_user_session",
)
SHAPES = {
    "hidden0.weight": (6, 15),
    "hidden0.bias": (6,),
    "output.weight": (2, 6),
    "output.bias": (2,),
}


def initial_model(path: Path) -> dict[str, np.ndarray]:
    """An ffnet state dict (15 -> 6 -> 2) as a safetensors file, as torch would save it."""
    rng = np.random.default_rng(0)
    state = {n: (0.3 * rng.standard_normal(s)).astype(np.float32) for n, s in SHAPES.items()}
    save_file(state, str(path))
    return state


def parties(tmp_path: Path) -> tuple[list[Path], Path]:
    files = write_sample_data(tmp_path / "data")
    pooled = pd.read_parquet(files["train_centralized.parquet"])
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(pooled)), 3)):
        path = tmp_path / "data" / f"party{i}.parquet"
        pooled.iloc[part].to_parquet(path, index=False)
        paths.append(path)
    return paths, files["test.parquet"]


def run_fusion(
    tmp_path: Path, server: Any, tokens: tuple[str, str], name: str, extra: list[str]
) -> tuple[subprocess.Popen[bytes], str, list[ClientProcess]]:
    """Start the example, read its session id, start the three parties."""
    token, silo_token = tokens
    id_file = tmp_path / f"{name}.id"
    with (tmp_path / f"{name}.log").open("wb") as log:  # the child keeps its own copy
        script = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--url", server.url, "--model-file",
             str(tmp_path / "initial.safetensors"), "--num-parties", "3", "--id-file", str(id_file),
             "--out", str(tmp_path / f"{name}.json"), *extra],
            env={**os.environ, "FEDSILO_TOKEN": token},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not id_file.exists():
        assert script.poll() is None, (tmp_path / f"{name}.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    sid = id_file.read_text()
    paths, test = parties(tmp_path)
    clients = [
        start_client(
            sid,
            str(p),
            str(test),
            64,
            f"party{i}",
            server.url,
            silo_token,
            log_path=tmp_path / f"{name}-party{i}.log",
        )
        for i, p in enumerate(paths)
    ]
    return script, sid, clients


@pytest.mark.slow
def test_model_fusion_over_rest_with_real_processes(tmp_path: Path, scoped_tokens: Any) -> None:
    state = initial_model(tmp_path / "initial.safetensors")
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        token = scoped_tokens(server.url, server.admin_token, SCOPES, "meera")
        tokens = (token, scoped_tokens.client(server.url, server.admin_token, "edges"))

        # fedavg, two of the three parties per round, trained to completion
        script, sid, clients = run_fusion(
            tmp_path, server, tokens, "fedavg",
            ["--fusion", "fedavg", "--rounds", "3", "--fraction-fit", "0.67"],
        )  # fmt: skip
        try:
            assert script.wait(timeout=300) == 0, (tmp_path / "fedavg.log").read_text()
            assert [c.wait(timeout=60) for c in clients] == [0, 0, 0]
        finally:
            for c in clients:
                c.stop()
            if script.poll() is None:
                script.kill()
        weights = json.loads((tmp_path / "fedavg.json").read_text())
        assert weights["session_id"] == sid and weights["package_name"] == "ffnet"
        assert weights["shapes"] == {n: list(s) for n, s in SHAPES.items()}
        assert set(weights["dtypes"].values()) == {"float32"}
        framed, _ = decode_frame((tmp_path / "fedavg.frame").read_bytes())
        for name, array in framed.items():  # the JSON is the frame's weights, exactly
            np.testing.assert_array_equal(
                np.asarray(weights["global_model"][name], np.float32), array
            )
            assert not np.allclose(array, state[name])  # trained away from the upload

        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url + "/api/v1", headers=headers) as http:
            metrics = http.get(f"/sessions/{sid}/metrics").json()
            session = http.get(f"/sessions/{sid}").json()
            bad = http.get(f"/sessions/{sid}/model", params={"format": "pickle"})
        assert bad.status_code == 422
        assert session["model_config"]["strategy"]["name"] == "fedavg"  # as the seed spells it
        fitted = [
            sorted(n for n, m in per_round.items() if "train_loss" in m)
            for per_round in metrics["client_metrics"]
        ]
        assert [len(f) for f in fitted] == [2, 2, 2], fitted  # floor(0.67 * 3) per round
        assert len({tuple(f) for f in fitted}) > 1 or len(fitted) == 3

        # the upload's digest, as the server computed it (the example prints it)
        sent = save(load_file(str(tmp_path / "initial.safetensors")))
        assert f"sha256 {hashlib.sha256(sent).hexdigest()}" in (tmp_path / "fedavg.log").read_text()

        # one round at learning rate 0: each party returns the weights it got, so the
        # global model is the round-1 model the session started from -- the upload
        script, sid, clients = run_fusion(
            tmp_path, server, tokens, "frozen",
            ["--fusion", "iter_avg", "--rounds", "1", "--learning-rate", "0"],
        )  # fmt: skip
        try:
            assert script.wait(timeout=300) == 0, (tmp_path / "frozen.log").read_text()
            assert [c.wait(timeout=60) for c in clients] == [0, 0, 0]
        finally:
            for c in clients:
                c.stop()
            if script.poll() is None:
                script.kill()
        frozen, _ = decode_frame((tmp_path / "frozen.frame").read_bytes())
        assert frozen.keys() == state.keys()
        for name, array in frozen.items():
            np.testing.assert_allclose(array, state[name], rtol=1e-6, atol=1e-7)

        # iter_avg, stopped (canceled) once round 1 is recorded
        script, sid, clients = run_fusion(
            tmp_path, server, tokens, "iter_avg",
            ["--fusion", "iter_avg", "--rounds", "200", "--stop-after-round", "1"],
        )  # fmt: skip
        try:
            assert script.wait(timeout=300) == 0, (tmp_path / "iter_avg.log").read_text()
            for c in clients:
                c.wait(timeout=60)
        finally:
            for c in clients:
                c.stop()
            if script.poll() is None:
                script.kill()
        with httpx.Client(base_url=server.url + "/api/v1", headers=headers) as http:
            session = http.get(f"/sessions/{sid}").json()
        assert session["status"] == "canceled"
        assert session["model_config"]["strategy"]["name"] == "iter_avg"
        assert 1 <= session["round"] < 200
