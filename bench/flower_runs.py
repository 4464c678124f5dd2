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
import resource
import statistics
import time
from pathlib import Path
from typing import Any

from common import PeakSampler, free_port, spawn, stop_all, tree_pids, wait_port

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


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants, each with the children
    it has waited for (a SuperNode's short-lived ClientApp processes, the SuperLink's
    ServerApp): a dead child's time is in its parent's cutime/cstime, a live one's is not,
    so nothing counts twice."""
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "comm)": fields[11:15] are utime stime cutime cstime (proc(5) fields 14-17)
        total += sum(int(v) for v in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
    app: str,
    n: int,
    rounds: int,
    work: Path,
    run_config: dict[str, Any],
    timeout: float,
    detail: bool = False,
) -> dict[str, Any]:
    """One run of ``app`` on the deployment runtime; returns timings and summed peak RSS.

    ``cold_start_s`` runs from launching the SuperLink (supernodes launched right after it,
    ``flwr run`` once it listens) to the ServerApp seeing all ``n`` nodes connected.
    ``detail`` adds the ServerApp's whole result (``result``) and the CPU seconds of the
    SuperLink and the SuperNodes (with the app processes they started) from ``flwr run``
    returning to the result (``process_cpu_s``).
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
        # only when asked: the other workloads' timings stay as they were
        cpu_before = [tree_cpu_s(p.pid) for p in procs] if detail else []
        result = _wait_file(out, timeout, procs)
        cpu_after = [tree_cpu_s(p.pid) for p in procs] if detail else []
        memory = sampler.finish()
    finally:
        sampler.finish()
        stop_all(procs)
    summary = _summary(result, rounds, launched, memory)
    if detail:
        used = [after - before for before, after in zip(cpu_before, cpu_after, strict=True)]
        summary["result"] = result
        summary["process_cpu_s"] = {
            "superlink": round(used[0], 3),
            "supernodes": round(sum(used[1:]), 3),
        }
    return summary


def run_simulation(
    app: str,
    n: int,
    rounds: int,
    work: Path,
    timeout: float,
    settings: dict[str, Any] | None = None,
    detail: bool = False,
) -> dict[str, Any]:
    """One run of ``app`` on Flower's simulation runtime with ``n`` virtual supernodes.

    ``settings`` are run-config keys the app reads from ``BENCH_FLWR_<KEY>`` variables
    (``run_simulation`` passes no run config); ``detail`` adds the ServerApp's whole result
    (``result``) and the CPU seconds of the simulation's process tree (``process_cpu_s``).
    """
    work.mkdir(parents=True, exist_ok=True)
    out = work / "result.json"
    out.unlink(missing_ok=True)
    env = _env(work / "flwr_home")
    for key, value in (settings or {}).items():
        env["BENCH_FLWR_" + key.upper().replace("-", "_")] = str(value)
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
    cpu_before = _children_cpu_s()
    sampler.watch("server", proc.pid)
    sampler.start()
    try:
        proc.wait(timeout)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"simulation failed ({proc.returncode}):\n{proc.log_tail()}")
        result = json.loads(out.read_text())
        memory = sampler.finish()
        # The simulation has exited and been waited for: its CPU (and that of the Ray
        # processes it reaped) is in this process's children usage.
        cpu = _children_cpu_s() - cpu_before
    finally:
        sampler.finish()
        stop_all([proc])
    summary = _summary(result, rounds, launched, memory)
    if detail:
        summary["result"] = result
        summary["process_cpu_s"] = {"simulation": round(cpu, 3)}
    return summary


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


def run_secaggplus(
    n: int,
    rounds: int,
    params: int,
    threshold: int,
    secure: bool,
    work: Path,
    timeout: float,
    runtime: str = "deployment",
) -> dict[str, Any]:
    """Flower's SecAgg+ workflow (``secure``) or plain FedAvg on ``params`` float32 values.

    Runs ``flower_apps/secaggplus`` on ``runtime`` ("deployment" or "simulation") and adds
    to the run summary, as medians over the rounds after the first (the simulation starts
    its Ray workers in round 1; all rounds when there is one), and over the nodes for a
    client:
    ``round_ms`` (the ServerApp's fit workflow, wall), ``server_cpu_ms`` (the ServerApp
    process's CPU in it) and per SecAgg+ stage ``server_stage_ms``; ``client_ms`` (the
    ClientApp's handler for all of a round's messages, wall and CPU, and the fit inside it);
    ``bytes_per_client`` (the serialized reply contents of a round); ``process_cpu_s`` per
    round (SuperLink, and per SuperNode with its ClientApp processes).
    """
    work.mkdir(parents=True, exist_ok=True)
    clients_log = work / "result.json.clients.jsonl"
    clients_log.unlink(missing_ok=True)
    settings = {"params": params, "secure": int(secure), "threshold": threshold}
    if runtime == "deployment":
        summary = run_deployment("secaggplus", n, rounds, work, settings, timeout, detail=True)
    else:
        summary = run_simulation(
            "secaggplus", n, rounds, work, timeout, settings=settings, detail=True
        )
    result = summary.pop("result")
    if not result.get("completed"):
        raise RuntimeError(f"the workflow did not aggregate every round: {result['rounds']}")
    per_node: dict[tuple[int, str], dict[str, float]] = {}
    for line in clients_log.read_text().splitlines():
        row = json.loads(line)
        sums = per_node.setdefault((row["node"], row["round"]), {})
        sums["messages"] = sums.get("messages", 0) + 1
        for key in ("wall_ms", "cpu_ms", "fit_wall_ms", "fit_cpu_ms", "reply_bytes"):
            sums[key] = sums.get(key, 0.0) + row[key]
    if len(per_node) != n * rounds:
        raise RuntimeError(f"{len(per_node)} client rounds logged, expected {n * rounds}")

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    steady = result["rounds"][1:] or result["rounds"]
    first = 2 if rounds > 1 else 1

    def client(key: str) -> float:
        return median([v[key] for (_, r), v in per_node.items() if int(r) >= first])

    stages: dict[str, dict[str, float]] = {}
    for name in steady[0].get("stages", {}):
        stages[name] = {
            unit: median([r["stages"][name][unit] for r in steady])
            for unit in ("wall_ms", "cpu_ms")
        }
    cpu = summary.pop("process_cpu_s")
    summary.update(
        round_ms=median([r["wall_ms"] for r in steady]),
        round_ms_all=[r["wall_ms"] for r in result["rounds"]],
        server_cpu_ms=median([r["cpu_ms"] for r in steady]),
        server_stage_ms=stages,
        client_ms={
            "wall": client("wall_ms"),
            "cpu": client("cpu_ms"),
            "fit_wall": client("fit_wall_ms"),
            "fit_cpu": client("fit_cpu_ms"),
            "messages": client("messages"),
        },
        bytes_per_client=int(client("reply_bytes")),
        process_cpu_s_per_round={
            role: round(value / rounds / (n if role == "supernodes" else 1), 3)
            for role, value in cpu.items()
        },
    )
    return summary
