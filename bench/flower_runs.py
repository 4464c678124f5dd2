"""Flower's side of the benchmarks, run in its own virtualenv (``bench/.venv-flower``).

Deployment runtime: ``flower-superlink --insecure`` + N ``flower-supernode --insecure``
processes on 127.0.0.1, and ``flwr run <app> bench`` against a SuperLink connection named
``bench`` in a private ``FLWR_HOME/config.toml`` (flwr >= 1.2x reads connections from that
Flower Configuration file, not from the app's pyproject). Nothing is downloaded: runtime
dependency installation is disabled and the apps need only flwr and numpy.

Simulation runtime: ``bench/flower_apps/simulate.py`` calls ``flwr.simulation.run_simulation``
in one process (Ray backend).

Each ServerApp writes its round timings to a JSON file (run config ``out``) that is read here.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from common import PeakSampler, free_port, spawn, stop_all, wait_port

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-flower"
APPS = BENCH / "flower_apps"
FLWR_BIN = VENV / "bin"


def available() -> str | None:
    """The installed flwr version, or None when the Flower venv is missing."""
    meta = list((VENV / "lib").glob("python3*/site-packages/flwr-*.dist-info"))
    return meta[0].name.removesuffix(".dist-info").split("-")[1] if meta else None


def _env(home: Path) -> dict[str, str]:
    # flower-superlink starts `flower-superexec` by name, so the venv's bin goes first on PATH.
    return {
        "FLWR_HOME": str(home),
        "PATH": f"{FLWR_BIN}:{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "RAY_DISABLE_USAGE_STATS": "1",
    }


def _config_toml(port: int) -> str:
    return (
        '[superlink]\ndefault = "bench"\n\n'
        f'[superlink.bench]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )


def _wait_file(path: Path, timeout: float, procs: list[Any]) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        for proc in procs:
            if not proc.running:
                raise RuntimeError(
                    f"{proc.name} exited ({proc.returncode}); log {proc.log_path}:\n"
                    f"{proc.log_tail()}"
                )
        time.sleep(0.05)
    raise TimeoutError(f"no result at {path} within {timeout} s")


def run_deployment(
    app: str, n: int, rounds: int, work: Path, run_config: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """One run of ``app`` on the deployment runtime; returns timings and summed peak RSS.

    ``cold_start_s`` runs from launching the SuperLink (supernodes launched right after it,
    ``flwr run`` once it listens) to the ServerApp seeing all ``n`` nodes connected.
    """
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    home = work / "flwr_home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(_config_toml(port))
    env = _env(home)
    out = work / "result.json"
    out.unlink(missing_ok=True)
    sampler = PeakSampler()
    procs = []
    try:
        launched = time.time()
        link = spawn(
            "flower-superlink",
            [
                str(FLWR_BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
            work / "superlink.log",
            env=env,
        )
        procs.append(link)
        sampler.watch("server", link.pid)
        for i in range(n):
            node = spawn(
                f"flower-supernode{i}",
                [
                    str(FLWR_BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    f"partition-id={i} num-partitions={n}",
                ],
                work / f"supernode{i}.log",
                env=env,
            )
            procs.append(node)
            sampler.watch(f"client{i}", node.pid)
        sampler.start()
        wait_port(port, 60, link)
        config = {**run_config, "num-rounds": rounds, "num-nodes": n, "out": str(out)}
        overrides = " ".join(
            f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in config.items()
        )
        cli = spawn(
            "flwr run",
            [str(FLWR_BIN / "flwr"), "run", str(APPS / app), "bench", "-c", overrides],
            work / "flwr_run.log",
            env=env,
        )
        cli.wait(120)
        if cli.returncode != 0:
            raise RuntimeError(f"flwr run failed ({cli.returncode}):\n{cli.log_tail()}")
        result = _wait_file(out, timeout, procs)
        memory = sampler.finish()
    finally:
        sampler.finish()
        stop_all(procs)
    return _summary(result, rounds, launched, memory)


def run_simulation(app: str, n: int, rounds: int, work: Path, timeout: float) -> dict[str, Any]:
    """One run of ``app`` on Flower's simulation runtime with ``n`` virtual supernodes."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "result.json"
    out.unlink(missing_ok=True)
    env = _env(work / "flwr_home")
    sampler = PeakSampler()
    launched = time.time()
    proc = spawn(
        "flwr simulation",
        [
            str(FLWR_BIN / "python"),
            str(APPS / "simulate.py"),
            "--app",
            app,
            "--nodes",
            str(n),
            "--rounds",
            str(rounds),
            "--out",
            str(out),
        ],
        work / "simulation.log",
        env=env,
    )
    sampler.watch("server", proc.pid)
    sampler.start()
    try:
        proc.wait(timeout)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"simulation failed ({proc.returncode}):\n{proc.log_tail()}")
        result = json.loads(out.read_text())
        memory = sampler.finish()
    finally:
        sampler.finish()
        stop_all([proc])
    return _summary(result, rounds, launched, memory)


def _summary(
    result: dict[str, Any], rounds: int, launched: float, memory: dict[str, float]
) -> dict[str, Any]:
    per_round = result["round_ms"]
    summary = {
        "median_ms_per_round": round(statistics.median(per_round), 3),
        "p90_ms_per_round": round(sorted(per_round)[int(0.9 * (len(per_round) - 1))], 3),
        "wall_ms_per_round": round(1000 * result["wall_s"] / rounds, 3),
        "cold_start_s": round(result["joined_at"] - launched, 3),
        "peak_rss_mb": memory,
    }
    for key in ("accuracy", "log_loss"):
        if key in result:
            summary[key] = round(result[key], 4)
    return summary
