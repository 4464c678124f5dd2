"""A VFL (SplitNN) epoch on 14,400 aligned rows at batch 1024, beside the same split network
trained centrally (issue 13: <= 3x).

One JSON line::

    {"bench": "vfl_epoch", "aligned_rows": 14400, "batch_size": 1024, "vfl_epoch_s": ...,
     "central_epoch_s": ..., "ratio": ..., "goal_ratio": 3.0, ...}

* fedsilo: a real server process and two real ``fedsilo client`` processes (one torch thread
  each): ``prl`` links the tables (16,000 train rows each, 14,400 shared; 4,000 test rows,
  3,600 shared), then ``vfl-train`` trains the seed's network (7 + 8 predictors, feature
  models [6] -> 5, label model [5] -> 2, SGD) for ``--rounds`` rounds. A round is one epoch
  over the aligned rows -- 15 batches, each an embedding sealed and relayed to the active
  party and its gradient back -- plus the test evaluation (the passive party's 3,600
  embeddings, in 4 messages) and each party's checkpoint. ``vfl_epoch_s`` is the median time
  between the session log's consecutive ``round N`` lines (round 1 is left out: it includes
  the start).
* central: :class:`fedsilo.packages.splitnn.model.SplitNetwork` in this process (one torch
  thread, as each party), the same batches, the same epoch plus the test evaluation; run
  ``--rounds`` epochs before the federated run and as many after it, alone on the machine
  (the server and clients stopped), and take the median of all: the machine is shared, and
  its load drifts during a run.
* Beside the wall-time ratio (``ratio``): ``work_ratio``, the active party's own
  ``train_s + evaluate_s`` (the same work as the central epoch: no task hand-out, reply or
  checkpoint) over the central epoch; and ``cpu_ratio``, the CPU seconds of the server and
  both clients per round (sampled from ``/proc`` while rounds 1 .. N-1 ran, so about one
  round's edge either way) over the central epoch's CPU seconds, which a loaded machine
  changes much less than wall times. The bench polls the session four times a second only,
  so its own requests do not compete with the relay.

Usage: ``.venv/bin/python bench/vfl_epoch.py [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import facts, install_signal_handlers, spawn, stop_all

import fedsilo
from fedsilo.runners.local import start_server

NAMES = ("passive_client", "active_client")
COLUMNS = {
    "passive_client": [f"x{j}" for j in range(1, 15, 2)],
    "active_client": [f"x{j}" for j in range(0, 15, 2)],
}
MODEL_CONFIG: dict[str, Any] = {
    "strategy": {"name": "SplitNN", "params": {}},
    "model": {
        "feature_models": {
            "passive_client": {
                "params": {"input_size": 7, "hidden_layer_sizes": [6], "output_size": 5}
            },
            "active_client": {
                "params": {"input_size": 8, "hidden_layer_sizes": [6], "output_size": 5}
            },
        },
        "label_model": {"params": {"hidden_layer_sizes": [5], "output_size": 2}},
    },
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "seed": 23,
}
DATA_CONFIG = {
    "passive_client": {
        "label_client": False,
        "predictors": COLUMNS["passive_client"],
        "target": None,
    },
    "active_client": {"label_client": True, "predictors": COLUMNS["active_client"], "target": "y"},
}
GOAL_RATIO = 3.0


def tables(folder: Path, shared: int, own: int, test_shared: int, test_own: int) -> dict[str, Any]:
    rng = np.random.default_rng(5)
    paths: dict[str, dict[str, Path]] = {n: {} for n in NAMES}
    start = 0
    for table, (n_shared, n_own) in {
        "train": (shared, own),
        "test": (test_shared, test_own),
    }.items():
        population = np.arange(start, start + n_shared + 2 * n_own)
        start += len(population)
        x = rng.normal(size=(len(population), 15)).astype(np.float32)
        y = (x[:, 0] + x[:, 1] - x[:, 2] > 0).astype(np.int64)
        members = {
            "passive_client": np.r_[0:n_shared, n_shared : n_shared + n_own],
            "active_client": np.r_[0:n_shared, n_shared + n_own : n_shared + 2 * n_own],
        }
        for name in NAMES:
            kept = rng.permutation(members[name])
            frame = pd.DataFrame({c: x[kept, int(c[1:])] for c in COLUMNS[name]})
            frame.insert(0, "id", population[kept])
            if name == "active_client":
                frame["y"] = y[kept]
            paths[name][table] = folder / f"{name}-{table}.parquet"
            frame.to_parquet(paths[name][table], index=False)
    return paths


def client(
    command: list[str], name: str, url: str, token: str, folder: Path, env: dict[str, str]
) -> Any:
    return spawn(
        f"{command[0]} {name}",
        [sys.executable, "-m", "fedsilo", "client", *command, "--client-name", name,
         "--url", url, "--token", token, "--poll-wait", "5", "--quiet"],
        folder / f"{command[0]}-{name}.log",
        env=env,
    )  # fmt: skip


def cpu_seconds(pids: list[int]) -> list[float]:
    """User + system CPU seconds of each of processes ``pids`` so far (Linux ``/proc``)."""
    spent = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        spent.append(int(fields[11]) + int(fields[12]))  # utime, stime (fields 14, 15)
    return [ticks / os.sysconf("SC_CLK_TCK") for ticks in spent]


def wait(
    session: Any, timeout: float, pids: list[int] | None = None, rounds: int = 0
) -> list[float] | None:
    """Wait for ``session`` to complete; with ``pids``, the CPU seconds each of those
    processes used per round between the first completed round and the last one seen
    before the end."""
    deadline = time.monotonic() + timeout
    first: tuple[int, list[float]] | None = None
    last: tuple[int, list[float]] | None = None
    while True:
        public = session.refresh()
        if public.status.ended:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"session {session.id} did not end in {timeout:g} s")
        if pids and 1 <= public.round < rounds:
            with contextlib.suppress(OSError, IndexError):
                sample = (public.round, cpu_seconds(pids))
                first = first or sample
                last = sample
        time.sleep(0.25)
    if str(public.status) != "completed":
        raise RuntimeError(f"session {session.id} {public.status}: {public.failure_reason}")
    if first is None or last is None or last[0] == first[0]:
        return None
    n = last[0] - first[0]
    return [(b - a) / n for a, b in zip(first[1], last[1], strict=True)]


def run_fedsilo(folder: Path, paths: dict[str, Any], rounds: int, batch: int) -> dict[str, Any]:
    token = "fs_" + secrets.token_urlsafe(24)
    server = start_server(folder / "server", env={"FEDSILO_ADMIN_TOKEN": token})
    env = {"FEDSILO_CLIENT_STATE_DIR": str(folder / "state")}
    try:
        with fedsilo.connect(server.url, token) as api:
            prl = api.create_prl_session(
                name="bench prl",
                data_config={"clients": {n: {"id_columns": ["id"]} for n in NAMES}},
            ).start()
            for name in NAMES:
                client(
                    ["prl", "--session", prl.id, "--train-path", str(paths[name]["train"]),
                     "--test-path", str(paths[name]["test"])],
                    name, server.url, token, folder, env,
                )  # fmt: skip
            wait(prl, 300)
            stop_all()
            aligned = prl.metrics().as_dict()["client_metrics"]["active_client"]["train"]
            vfl = api.create_vfl_session(
                name="bench vfl",
                prl_session_id=prl.id,
                num_rounds=rounds,
                package_name="ffnet",
                data_config=DATA_CONFIG,
                model_config=MODEL_CONFIG,
            ).start()
            pids = [server.pid]  # whose CPU time is sampled
            for name in NAMES:
                trainer = client(
                    ["vfl-train", "--session", vfl.id, "--train-path", str(paths[name]["train"]),
                     "--test-path", str(paths[name]["test"]), "--batch-size", str(batch),
                     "--storage-path", str(folder / f"storage-{name}"), "--threads", "1"],
                    name, server.url, token, folder, env,
                )  # fmt: skip
                pids.append(trainer.pid)
            cpu = wait(vfl, 600, pids, rounds)
            lines = [line for line in vfl.logs() if line.message.startswith("round ")]
            times = [line.time for line in lines]
            # The active party's phases (train_s, evaluate_s, save_s) from the round lines.
            phases = [
                {
                    key: round(float(value), 3)
                    for key, value in (
                        part.strip().split(" ") for part in line.message.split(":", 1)[1].split(",")
                    )
                    if key.endswith("_s")
                }
                for line in lines
            ]
            losses = [m["loss"] for m in vfl.metrics().as_dict()["federated_metrics"]]
    finally:
        stop_all()
        server.stop()
    epochs = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    return {
        "aligned_rows": int(aligned["n_overlapped_records"]),
        "vfl_epoch_s": round(statistics.median(epochs), 3),
        "vfl_epochs_s": [round(e, 3) for e in epochs],
        "vfl_test_loss": [round(v, 6) for v in losses],
        "vfl_active_phases_s": phases,
        "vfl_work_s": round(
            statistics.median(p["train_s"] + p["evaluate_s"] for p in phases[1:]), 3
        ),
        "vfl_cpu_s_per_round": None if cpu is None else round(sum(cpu), 3),
        # server, passive party, active party
        "vfl_cpu_s_per_round_each": None if cpu is None else [round(c, 4) for c in cpu],
    }


def run_central(paths: dict[str, Any], rounds: int, batch: int) -> dict[str, Any]:
    import torch

    from fedsilo.packages.splitnn.config import SplitnnDataConfig, SplitnnModelConfig
    from fedsilo.packages.splitnn.model import SplitNetwork, batches, label_loss, task_metrics
    from fedsilo.training.optimizers import build_optimizer

    torch.set_num_threads(1)
    merged = {}
    for table in ("train", "test"):
        passive = pd.read_parquet(paths["passive_client"][table])
        active = pd.read_parquet(paths["active_client"][table])
        both = passive.merge(active, on="id")
        merged[table] = {
            name: torch.tensor(both[COLUMNS[name]].to_numpy(np.float32)) for name in NAMES
        } | {"y": both["y"].to_numpy(np.int64)}
    mc = SplitnnModelConfig.model_validate({**MODEL_CONFIG, "prl_session_id": "0" * 10})
    network = SplitNetwork(mc, SplitnnDataConfig.model_validate(DATA_CONFIG))
    assert mc.optimizer is not None
    optimizer = build_optimizer(mc.optimizer, network.parameters())
    loss_fn = label_loss(mc.task)
    train, test = merged["train"], merged["test"]
    labels = torch.tensor(train["y"])
    epochs, cpus = [], []
    for server_round in range(1, rounds + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        for idx in batches(len(labels), batch, mc.seed, server_round):
            index = torch.from_numpy(idx)
            outputs = network({name: train[name][index] for name in NAMES})
            loss = loss_fn(outputs, labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            outputs = network({name: test[name] for name in NAMES}).numpy()
        task_metrics(mc.task, outputs, test["y"])
        epochs.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu_started)
    return {"epochs": epochs, "cpus": cpus}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-vfl-") as tmp:
        folder = Path(tmp)
        paths = tables(folder, shared=14_400, own=1_600, test_shared=3_600, test_own=400)
        line: dict[str, Any] = {"bench": "vfl_epoch", "batch_size": args.batch_size}
        before = run_central(paths, args.rounds, args.batch_size)
        line |= run_fedsilo(folder, paths, args.rounds, args.batch_size)
        after = run_central(paths, args.rounds, args.batch_size)
    # the first epoch of each run warms torch up: left out, as the VFL's round 1 is
    epochs = before["epochs"][1:] + after["epochs"][1:]
    line["central_epoch_s"] = round(statistics.median(epochs), 4)
    line["central_epochs_s"] = [round(e, 4) for e in epochs]
    central_cpu = statistics.median(before["cpus"][1:] + after["cpus"][1:])
    line["central_cpu_s"] = round(central_cpu, 4)
    line["ratio"] = round(line["vfl_epoch_s"] / line["central_epoch_s"], 1)
    line["work_ratio"] = round(line["vfl_work_s"] / line["central_epoch_s"], 1)
    if line["vfl_cpu_s_per_round"] is not None:
        line["cpu_ratio"] = round(line["vfl_cpu_s_per_round"] / central_cpu, 1)
    line["goal_ratio"] = GOAL_RATIO
    line |= facts()
    print(json.dumps(line))


if __name__ == "__main__":
    main()
