"""fedsilo's side of the benchmarks: a real server and real clients on 127.0.0.1.

The server and clients are started with :mod:`fedsilo.runners.local` (``python -m fedsilo``,
own process group each). Timings come from the server's records, not from polling:

* ``median_ms_per_round``: echo's ``round_ms`` metric (tasks queued -> last reply averaged);
* ``wall_ms_per_round``: (session ``ended_at`` - last participant's ``joined_at``) / rounds,
  i.e. everything a round costs including the metric/checkpoint persistence and, once, the
  final model save;
* ``cold_start_s``: launching the server -> the last client joined (``joined_at``).
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import PeakSampler, adopt, spawn, stop_all

import fedsilo
from fedsilo.runners.local import start_client, start_server

BENCH = Path(__file__).resolve().parent

#: (package name, model_config, data_config)
Workload = tuple[str, dict[str, Any], dict[str, Any]]

ECHO: Workload = ("echo", {"payload_size": 16}, {"columns": []})


def logreg_config(rounds: int) -> Workload:
    """ffnet without hidden layers: softmax regression over 2 classes, i.e. logistic regression
    (the ``glm`` package, which fits it by Newton's method, was not finished when this was
    written; SGD is also what the Flower side runs)."""
    model = {
        "strategy": {"name": "FedAvg", "params": {}},
        "model": {"params": {"input_size": 15, "hidden_layer_sizes": [], "output_size": 2}},
        "ml_task": {"type": "classification", "params": {}},
        "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
        "save_best_model": {"metric": "loss", "mode": "min"},
        "seed": 23,
    }
    return "ffnet", model, {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run(
    workload: Workload,
    n: int,
    rounds: int,
    work: Path,
    train: list[Path],
    test: Path | None,
    timeout: float,
    threads_per_process: int = 0,
) -> dict[str, Any]:
    """One fedsilo session with ``n`` clients; ``train[i % len(train)]`` is client i's table.

    ``threads_per_process`` > 0 runs the clients as threads, that many per process
    (``bench/fedsilo_vclients.py``), instead of one ``fedsilo client train`` process each.
    """
    package, model_config, data_config = workload
    work.mkdir(parents=True, exist_ok=True)
    sampler = PeakSampler()
    clients: list[Any] = []
    launched = time.time()
    server = start_server(work / "server", log_path=work / "server.log")
    try:
        adopt("fedsilo server", server.pid)
        sampler.watch("server", server.pid)
        sampler.start()
        with fedsilo.connect(server.url, server.admin_token) as sdk:
            session = sdk.create_fl_session(
                name=f"bench-{package}-{n}",
                description="fedsilo bench",
                min_num_clients=n,
                num_rounds=rounds,
                package_name=package,
                model_config=model_config,
                data_config=data_config,
            ).start()
            if threads_per_process:
                for first in range(0, n, threads_per_process):
                    count = min(threads_per_process, n - first)
                    proc = spawn(
                        f"vclients{first}",
                        [
                            sys.executable,
                            str(BENCH / "fedsilo_vclients.py"),
                            "--url",
                            server.url,
                            "--session",
                            session.id,
                            "--train",
                            str(train[0]),
                            "--count",
                            str(count),
                            "--first",
                            str(first),
                        ],
                        work / f"vclients{first}.log",
                        env={"FEDSILO_TOKEN": server.admin_token},
                    )
                    clients.append(proc)
                    sampler.watch(f"client{first}", proc.pid)
            else:
                for i in range(n):
                    client = start_client(
                        session.id,
                        str(train[i % len(train)]),
                        str(test) if test is not None else None,
                        1024,
                        f"silo{i}",
                        server.url,
                        server.admin_token,
                        log_path=work / f"client{i}.log",
                    )
                    adopt(f"fedsilo client{i}", client.pid)
                    clients.append(client)
                    sampler.watch(f"client{i}", client.pid)
            deadline = time.monotonic() + timeout
            while True:
                state = sdk.api.get_json(f"/sessions/{session.id}")
                if state["status"] in ("completed", "failed", "canceled"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"fedsilo session not done within {timeout} s: {state}")
                time.sleep(0.25)  # slow polling: the measurement must not load the server
            if state["status"] != "completed":
                raise RuntimeError(f"fedsilo session {state['status']}: {state}")
            for proc in clients:
                proc.wait(timeout=60)
            participants = sdk.api.get_json(f"/sessions/{session.id}/participants")
            metrics = session.metrics().as_dict()["federated_metrics"]
        memory = sampler.finish()
    finally:
        sampler.finish()
        for proc in clients:
            proc.stop()
        server.stop()
        stop_all(clients)
    joined = max(_ts(p["joined_at"]) for p in participants)
    ended = _ts(state["ended_at"])
    out: dict[str, Any] = {
        "wall_ms_per_round": round(1000 * (ended - joined) / rounds, 3),
        "cold_start_s": round(joined - launched, 3),
        "peak_rss_mb": memory,
    }
    if package == "echo":
        per_round = [m["round_ms"] for m in metrics]
        out["median_ms_per_round"] = round(statistics.median(per_round), 3)
        out["p90_ms_per_round"] = round(sorted(per_round)[int(0.9 * (len(per_round) - 1))], 3)
    else:
        out["median_ms_per_round"] = out["wall_ms_per_round"]
        out["accuracy"] = round(metrics[-1]["accuracy"], 4)
        out["log_loss"] = round(metrics[-1]["loss"], 4)
    return out
