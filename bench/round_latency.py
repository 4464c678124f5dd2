"""Round latency and peak memory of a real fedsilo deployment on 127.0.0.1.

Starts a server process and N client processes (``python -m fedsilo client train``), runs a
session, and prints one JSON line per workload:

* ``echo``: clients answer at once, so a round is pure platform overhead (task queueing,
  long-poll delivery, codec, HTTP, persistence of the round and its checkpoint);
* ``ffnet``: the demo's model and data (two silos of 16,000 rows, batch 1024).

ms/round comes from the server's per-round timer for echo (``round_ms``: from queueing the
tasks to the last reply aggregated) and from the session's wall clock between round records
for ffnet. Peak RSS is each process's high-water mark (VmHWM), sampled until it exits.

Usage: ``.venv/bin/python bench/round_latency.py [--rounds 50] [--clients 2]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import facts, peak_rss_mb

import fedsilo
from fedsilo.data.synth import write_sample_data
from fedsilo.runners.local import start_client, start_server

FFNET_CONFIG: dict[str, Any] = {
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
PREDICTORS = [f"x{i}" for i in range(15)]


class PeakSampler(threading.Thread):
    """Keeps the last VmHWM seen per pid (VmHWM only grows, so the last read is the peak)."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in list(self.pids.items()):
                value = peak_rss_mb(pid)
                if value is not None:
                    self.peaks[name] = value
            time.sleep(0.02)


def round_times(client: fedsilo.Client, session_id: str, timeout: float) -> list[float]:
    """Poll the session; return the monotonic time at which each round was first recorded."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.api.get_json(f"/sessions/{session_id}")
        while len(seen) < state["round"]:
            seen.append(time.monotonic())
        if state["status"] in ("completed", "failed", "canceled"):
            if state["status"] != "completed":
                raise RuntimeError(f"session {session_id} {state['status']}: {state}")
            return seen
        time.sleep(0.005)
    raise TimeoutError(f"session {session_id} did not end within {timeout} s")


def run_workload(kind: str, rounds: int, n_clients: int, work: Path) -> dict[str, Any]:
    files = write_sample_data(work / "data")
    model_config: dict[str, Any]
    data_config: dict[str, Any]
    if kind == "echo":
        package, model_config, data_config = "echo", {"payload_size": 16}, {"columns": []}
    else:
        package, model_config = "ffnet", FFNET_CONFIG
        data_config = {"predictors": PREDICTORS, "target": "y"}
    with start_server(work / f"server-{kind}", log_path=work / f"server-{kind}.log") as server:
        sampler = PeakSampler({"server": server.pid})
        sampler.start()
        with fedsilo.connect(server.url, server.admin_token) as client:
            session = client.create_fl_session(
                name=f"bench-{kind}",
                description="",
                min_num_clients=n_clients,
                num_rounds=rounds,
                package_name=package,
                model_config=model_config,
                data_config=data_config,
            ).start()
            procs = [
                start_client(
                    session.id,
                    str(files[f"train_silo{i % 2}.parquet"]),
                    str(files["test.parquet"]),
                    1024,
                    f"silo{i}",
                    server.url,
                    server.admin_token,
                    log_path=work / f"client-{kind}-{i}.log",
                )
                for i in range(n_clients)
            ]
            for i, proc in enumerate(procs):
                sampler.pids[f"client{i}"] = proc.pid
            began = time.perf_counter()
            round_seen = round_times(client, session.id, timeout=600)
            wall = time.perf_counter() - began
            codes = [proc.wait(timeout=60) for proc in procs]
            metrics = session.metrics().as_dict()["federated_metrics"]
        sampler.done.set()
        sampler.join()
    # echo: the server's own timer. ffnet: time between successive round records, as a user
    # watching the session sees it (the first round also waits for clients to start).
    per_round = (
        [m["round_ms"] for m in metrics]
        if kind == "echo"
        else [1000.0 * (b - a) for a, b in itertools.pairwise(round_seen)]
    )
    clients_peak = [v for k, v in sampler.peaks.items() if k.startswith("client")]
    return {
        "benchmark": "round_latency",
        "system": "fedsilo",
        "workload": kind,
        "clients": n_clients,
        "rounds": rounds,
        "median_ms_per_round": round(statistics.median(per_round), 3),
        "p90_ms_per_round": round(sorted(per_round)[int(0.9 * (len(per_round) - 1))], 3),
        "session_wall_s": round(wall, 3),
        "server_peak_rss_mb": round(sampler.peaks.get("server", float("nan")), 1),
        "client_peak_rss_mb": round(max(clients_peak), 1) if clients_peak else None,
        "client_exit_codes": codes,
        **facts(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/round_latency.jsonl"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, args.out.open("a") as sink:
        for kind, rounds in (("echo", args.rounds), ("ffnet", 5)):
            result = run_workload(kind, rounds, args.clients, Path(tmp))
            line = json.dumps(result)
            print(line, flush=True)
            sink.write(line + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
