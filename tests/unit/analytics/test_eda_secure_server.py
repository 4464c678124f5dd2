"""eda under secure aggregation over HTTP: the real server in a thread, real client runtimes.

The guarantee: nothing the server persisted (``ThreadServer.stored()``: the SQLite database
with its WAL, or every record of the memory store, and the artifacts) and no line of its
logs holds one dataset's statistics -- its mean, std, histogram, sketch, sums or the
unmasked encoding of its secure-sum vectors, each recomputed outside the session from the
dataset and the plan -- while the saved results are the pooled ones.
And the data owner's policy reads a secure reply's unmasked counts before it is masked.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import fedsilo
from fedsilo.client.mods import TaskReply, TaskRequest
from fedsilo.client.policy import DataOwnerPolicy
from fedsilo.client.release_guard import PolicyGuard, ReleasedRows
from fedsilo.client.runtime import ClientRuntime
from fedsilo.data.dataset import LocalDataset
from fedsilo.federation import get_package
from fedsilo.http import ApiClient
from fedsilo.packages.eda.secure_client import SKETCH_SUM, SUMMARY_SUM
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.privacy.secagg.encoding import FixedPoint, encode_update, pack
from fedsilo.wire import SessionStatus

from .conftest import make_frame

CONFIG: dict[str, Any] = {"epsilon": None, "secure_aggregation": {"enabled": True}}
DATA: dict[str, list[Any]] = {"dataset_one": [], "dataset_two": [], "dataset_three": []}


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {
        "dataset_one": make_frame(11, 300),
        "dataset_two": make_frame(12, 250, shift=2.0),
        "dataset_three": make_frame(13, 200, shift=-2.0),
    }


def run_clients(server: Any, session_id: str, folder: Path, frames: dict[str, pd.DataFrame]) -> Any:
    outcomes: dict[str, Any] = {}

    def work(name: str) -> None:
        path = folder / f"{name}.parquet"
        frames[name].to_parquet(path)
        with ApiClient(server.url, server.token) as api:
            try:
                runtime = ClientRuntime.for_dataset(
                    api, session_id, str(path), name, poll_wait=2, on_event=lambda _: None
                )
                outcomes[name] = runtime.run()
            except Exception as exc:  # handed to the test thread
                outcomes[name] = exc

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in frames]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def individual_needles(
    frames: dict[str, pd.DataFrame], plan: dict[str, Any]
) -> list[tuple[str, bytes]]:
    """Each dataset's own statistics and its unmasked secure-sum vectors, as they would be
    stored: float64/int64 bytes of arrays, and the text of floats (JSON uses their repr)."""
    package = get_package("eda")
    mc, dc = package.parse_configs(CONFIG, DATA)
    spec = SecAggSpec()
    fixed = FixedPoint.from_spec(spec)
    scale = spec.clip_range / fixed.max_level
    needles: list[tuple[str, bytes]] = []
    for name, frame in frames.items():
        executor = package.executor(mc, dc, LocalDataset(frame, None, 1, name=name))
        for kind, meta in ((SKETCH_SUM, plan["sketch"]), (SUMMARY_SUM, plan["summary"])):
            _, arrays = executor.handle(kind, meta, {})
            encoded = encode_update(fixed, {k: v * scale for k, v in arrays.items()}, 1)
            # Around the fullest slot: the window's empty buckets and the tails that only
            # this dataset reaches (where the pooled count is its own) are not its secret.
            start = max(int(np.argmax(encoded[:-1])) - 4, 0)
            needles.append((f"{name} {kind} encoding", encoded[start : start + 8].tobytes()))
            width = (spec.modulus_bits + 7) // 8
            packed = pack(encoded, spec.modulus_bits).tobytes()
            needles.append((f"{name} {kind} packed", packed[start * width : (start + 8) * width]))
            for key, value in arrays.items():
                if np.count_nonzero(value) > 1:  # a vector of zeros is no one's statistic
                    needles.append((f"{name} {kind} {key}", np.asarray(value).tobytes()))
        for column in ("x0", "x1", "x5", "x7"):
            values = frame[column].dropna().to_numpy()
            for stat, value in (("mean", values.mean()), ("std", values.std(ddof=1))):
                needles.append((f"{name} {column} {stat}", repr(float(value))[:12].encode()))
            needles.append((f"{name} {column} min", repr(float(values.min())).encode()))
    return needles


def test_the_server_stores_and_logs_no_dataset_s_statistics(
    thread_server: Any, tmp_path: Path, frames: dict[str, pd.DataFrame]
) -> None:
    with fedsilo.connect(thread_server.url, thread_server.token) as client:
        body = {
            "name": "secure eda",
            "description": "",
            "kind": "eda",
            "package_name": "eda",
            "min_num_clients": 3,
            "num_rounds": 2,
            "model_config": CONFIG,
            "data_config": DATA,
        }
        session = client.fl_session(client.api.post_json("/sessions", body)["id"]).start()
        outcomes = run_clients(thread_server, session.id, tmp_path, frames)
        assert outcomes == dict.fromkeys(frames, SessionStatus.completed)
        session.wait(timeout=60, progress=False)
        results = session.results()
        logs = "\n".join(line.message for line in session.logs()).encode()

    assert results.datasets == ["pooled"]
    pooled = pd.concat(frames.values(), ignore_index=True)
    got = results.pooled()
    assert got["x1"].count() == pooled["x1"].count()
    assert got["x1"].mean() == pytest.approx(pooled["x1"].mean(), abs=1e-5)

    # The plan the server sent, rebuilt from the saved results (edges, pooled counts).
    levels = FixedPoint.from_spec(SecAggSpec()).max_level
    columns = [got[c].stats for c in got.columns]
    continuous = [s.name for s in columns if s.kind == "continuous"]
    plan = {
        "sketch": {"columns": [c for c in got.columns if c != "x11"]},
        "summary": {
            "columns": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "edges": None if s.edges is None else s.edges.tolist(),
                }
                for s in columns
            ],
            "norms": {name: int(got[name].count()) for name in continuous},
            "levels": levels,
        },
    }
    needles = individual_needles(frames, plan)
    assert len(needles) > 40
    stored = thread_server.stored()
    assert stored
    found = [
        (what, where)
        for what, needle in needles
        for where, content in [*stored.items(), ("logs", logs)]
        if needle in content
    ]
    assert found == [], found
    # ... while the scan does see what is stored: the pooled histogram of the results
    pooled_histogram = np.asarray(got["x1"].stats.histogram, dtype=np.float64).tobytes()
    assert any(pooled_histogram in content for content in stored.values())


def test_the_policy_reads_the_unmasked_counts_of_a_secure_reply(
    tmp_path: Path, frames: dict[str, pd.DataFrame]
) -> None:
    """The release check (inside the masking, right over the executor) holds each column's
    count of an eda secure-sum reply to min_rows, and the rows to the delta rule."""
    package = get_package("eda")
    frame = frames["dataset_one"].copy()
    frame.loc[frame.index >= 12, "x7"] = np.nan  # 12 values: fewer than min_rows
    mc, dc = package.parse_configs(CONFIG, {"dataset_one": ["x1", "x7"]})
    history = ReleasedRows(tmp_path)
    guard = PolicyGuard(DataOwnerPolicy(min_rows=20), 20, "table.parquet", history)

    def call(task: TaskRequest) -> TaskReply:
        # A fresh executor a task: one answers each kind once.
        executor = package.executor(mc, dc, LocalDataset(frame, None, 1, name="dataset_one"))
        meta, arrays = executor.handle(task.kind, dict(task.meta), dict(task.arrays))
        return TaskReply(status="ok", meta=meta, arrays=arrays)

    task = TaskRequest(id="t1", kind=SKETCH_SUM, round=1, meta={"columns": ["x1", "x7"]}, arrays={})
    reply = guard.check_release(task, call)
    assert not reply.ok
    assert "rule 'min_rows': a release of column 'x7' over 12 value(s)" in str(reply.error)
    # A release over the same table with another row count, closer than min_rows, is refused.
    history.record("table.parquet", 310)
    ok = TaskRequest(id="t2", kind=SKETCH_SUM, round=1, meta={"columns": ["x1"]}, arrays={})
    assert "310 an earlier release" in str(guard.check_release(ok, call).error)
