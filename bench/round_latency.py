"""Round latency, join time and peak memory of a real fedsilo deployment on 127.0.0.1.

Starts a server process and N client processes (``python -m fedsilo client train``), runs one
session per workload and prints one JSON line each:

* ``echo``: clients answer at once, so a round is pure platform overhead (task queueing,
  long-poll delivery, codec, HTTP, persistence of the round and its checkpoint);
* ``ffnet``: the demo's model and data (two silos of 16,000 rows, batch 1024);
* ``ffnet-tiny``: the demo's model on ``--rows``-row shards (default 200, and a test shard of
  the same size), one per client: what the platform costs around a training step that
  itself takes a millisecond (issue 9, item 10: N = 10, <= 40 ms a round).

Figures:

* ``median_ms_per_round``: echo's own ``round_ms`` metric (tasks queued -> last reply
  averaged); for ffnet, the median gap between successive round records, read from the
  server's database after the session (no polling while it runs, which would load the
  server); the wall clock per round when the database cannot be read;
* ``wall_ms_per_round``: (session ``ended_at`` - last ``joined_at``) / rounds;
* ``join_s``: launching the first client -> the last client joined; ``cold_start_s`` starts
  at the server's launch instead;
* peak RSS (VmHWM) of the server and of each client process with its children, and whether
  the server, or any client, mapped torch (``server_imports_torch``, ``clients_import_torch``:
  a client of a package that does not train with torch must not).

Usage::

    .venv/bin/python bench/round_latency.py --workload ffnet-tiny --clients 10 --rounds 20
    .venv/bin/python bench/round_latency.py            # echo then ffnet, N = 2 (the first run)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import PeakSampler, adopt, facts, stop_all

import fedsilo
from fedsilo.data.synth import FEATURES, TARGET, make_frames, write_sample_data
from fedsilo.runners.local import start_client, start_server

FFNET_CONFIG: dict[str, Any] = {
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
WORKLOADS = ("echo", "ffnet", "ffnet-tiny")
BATCH_SIZE = 1024


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def tiny_shards(work: Path, n: int, rows: int) -> list[tuple[Path, Path]]:
    """``n`` disjoint (train, test) parquet shards of ``rows`` rows from the demo data."""
    frames = make_frames()
    train, test = frames["train_centralized"], frames["test"]
    if n * rows > len(train) or n * rows > len(test):
        raise ValueError(f"{n} shards of {rows} rows need more rows than the demo data has")
    work.mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(n):
        pair = []
        for name, frame in (("train", train), ("test", test)):
            path = work / f"{name}{i}.parquet"
            frame.iloc[i * rows : (i + 1) * rows].to_parquet(path, index=False)
            pair.append(path)
        shards.append((pair[0], pair[1]))
    return shards


def round_gaps_ms(data_dir: Path, session_id: str) -> list[float]:
    """Gaps between successive round records, from the server's SQLite database.

    Read after the session ended, so the measurement does not load the server. Empty when
    the database or its ``rounds`` table is not there (another store, a renamed table).
    """
    path = data_dir / "fedsilo.db"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT created_at FROM rounds WHERE session_id = ? ORDER BY round", (session_id,)
            ).fetchall()
    except sqlite3.Error:
        return []
    stamps = [_ts(str(r[0])) for r in rows]
    return [1000.0 * (b - a) for a, b in itertools.pairwise(stamps)]


def maps_torch(pid: int) -> bool | None:
    """Whether the process has torch's shared library mapped; None once it is gone."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


def run_workload(kind: str, rounds: int, n_clients: int, rows: int, work: Path) -> dict[str, Any]:
    model_config: dict[str, Any]
    data_config: dict[str, Any]
    if kind == "echo":
        package, model_config, data_config = "echo", {"payload_size": 16}, {"columns": []}
    else:
        package, model_config = "ffnet", FFNET_CONFIG
        data_config = {"predictors": FEATURES, "target": TARGET}
    if kind == "ffnet-tiny":
        shards = tiny_shards(work / "shards", n_clients, rows)
    else:
        files = write_sample_data(work / "data")
        shards = [(files[f"train_silo{i % 2}"], files["test"]) for i in range(n_clients)]
    sampler = PeakSampler()
    clients: list[Any] = []
    server_dir = work / f"server-{kind}"
    launched = time.time()
    server = start_server(server_dir, log_path=work / f"server-{kind}.log")
    server_torch: bool | None = None
    clients_torch = False
    try:
        adopt("fedsilo server", server.pid)
        sampler.watch("server", server.pid)
        sampler.start()
        with fedsilo.connect(server.url, server.admin_token) as sdk:
            session = sdk.create_fl_session(
                name=f"bench-{kind}-{n_clients}",
                description="bench/round_latency.py",
                min_num_clients=n_clients,
                num_rounds=rounds,
                package_name=package,
                model_config=model_config,
                data_config=data_config,
            ).start()
            clients_launched = time.time()
            for i, (train, test) in enumerate(shards):
                client = start_client(
                    session.id,
                    str(train),
                    str(test),
                    BATCH_SIZE,
                    f"silo{i}",
                    server.url,
                    server.admin_token,
                    log_path=work / f"client-{kind}-{i}.log",
                )
                adopt(f"fedsilo client{i}", client.pid)
                clients.append(client)
                sampler.watch(f"client{i}", client.pid)
            deadline = time.monotonic() + 600
            while True:
                # Clients exit when the session ends: look at their libraries while it runs.
                for client in clients:
                    clients_torch = clients_torch or bool(maps_torch(client.pid))
                state = sdk.api.get_json(f"/sessions/{session.id}")
                if state["status"] in ("completed", "failed", "canceled"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"session not done within 600 s: {state}")
                time.sleep(0.25)  # slow polling: the measurement must not load the server
            server_torch = maps_torch(server.pid)
            if state["status"] != "completed":
                raise RuntimeError(f"session {session.id} {state['status']}: {state}")
            codes = [client.wait(timeout=60) for client in clients]
            participants = sdk.api.get_json(f"/sessions/{session.id}/participants")
            metrics = session.metrics().as_dict()["federated_metrics"]
        sampler.finish()
    finally:
        sampler.finish()
        for client in clients:
            client.stop()
        server.stop()
        stop_all()
    joined = max(_ts(p["joined_at"]) for p in participants)
    wall_ms = 1000.0 * (_ts(state["ended_at"]) - joined) / rounds
    if kind == "echo":
        per_round, source = [float(m["round_ms"]) for m in metrics], "round_ms metric"
    else:
        per_round, source = round_gaps_ms(server_dir, session.id), "round records"
        if not per_round:
            per_round, source = [wall_ms], "wall clock"
    per_role: dict[str, float] = {}
    for role, value in sampler.peaks.values():
        per_role[role] = per_role.get(role, 0.0) + value
    client_rss = [v for role, v in per_role.items() if role.startswith("client")]
    return {
        "benchmark": "round_latency",
        "system": "fedsilo",
        "workload": kind,
        "clients": n_clients,
        "rounds": rounds,
        "rows_per_client": rows if kind == "ffnet-tiny" else None,
        "median_ms_per_round": round(statistics.median(per_round), 3),
        "p90_ms_per_round": round(sorted(per_round)[int(0.9 * (len(per_round) - 1))], 3),
        "median_source": source,
        "wall_ms_per_round": round(wall_ms, 3),
        "join_s": round(joined - clients_launched, 3),
        "cold_start_s": round(joined - launched, 3),
        "server_peak_rss_mb": round(per_role.get("server", float("nan")), 1),
        "client_peak_rss_mb": round(max(client_rss), 1) if client_rss else None,
        "client_mean_peak_rss_mb": round(statistics.fmean(client_rss), 1) if client_rss else None,
        "server_imports_torch": server_torch,
        "clients_import_torch": clients_torch,
        "client_exit_codes": codes,
        **({"accuracy": round(metrics[-1]["accuracy"], 4)} if kind != "echo" else {}),
        **facts(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workload", action="append", choices=WORKLOADS, help="repeatable; default echo, ffnet"
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 50 (echo), 5, 20")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rows", type=int, default=200, help="rows per ffnet-tiny shard")
    parser.add_argument("--out", type=Path, default=None, help="append the JSON lines here too")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="work in this directory and keep it (the server's and clients' logs, the shards)",
    )
    args = parser.parse_args()
    default_rounds = {"echo": 50, "ffnet": 5, "ffnet-tiny": 20}
    code = 0
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="fedsilo-round-latency-"))
        for kind in args.workload or ["echo", "ffnet"]:
            rounds = args.rounds or default_rounds[kind]
            result = run_workload(kind, rounds, args.clients, args.rows, Path(tmp) / kind)
            code = code or int(any(c != 0 for c in result["client_exit_codes"]))
            line = json.dumps(result)
            print(line, flush=True)
            if args.out is not None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with args.out.open("a") as sink:
                    sink.write(line + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
