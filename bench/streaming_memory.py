"""Server peak memory during FedAvg of a 25M-float32 model (100 MB) at N = 2, 10, 50 clients.

For each N a fresh server process runs an echo session (``payload_size`` floats broadcast,
echoed back, averaged), and N lightweight clients -- raw httpx threads in a few processes,
no fedsilo client runtime -- join, poll, and answer every task with a 100 MB update in one
exchange per round (``reply?wait=S``). The server's resident set is sampled with psutil
throughout; its VmHWM at the end is the exact peak. One JSON line per (workflow, N)::

    {"benchmark": "streaming_memory", "workflow": "stream", "clients": 10,
     "update_mb": 100.0, "baseline_rss_mb": ..., "peak_rss_mb": ...,
     "peak_over_baseline_updates": ..., ...}

Workflows:

* ``stream``: echo through FedAvg, replies folded as they arrive (``send`` + ``as_completed``
  into the strategy's float64 running sum, strategies/aggregation.py), registered in the
  server process by this script (``--serve``), as a streaming package would be written;
* ``echo``: the shipped ``echo`` package (its ``ask()`` collects every reply before summing,
  so it holds N updates by construction; a guard stops the server past ``--guard-mb``).

Usage: ``.venv/bin/python bench/streaming_memory.py [--clients 2 10 50] [--workflow stream]``
Every process is started through ``common.spawn`` and stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import facts, install_signal_handlers, leftovers, peak_rss_mb, spawn, stop_all

from fedsilo.wire import (
    OCTET_STREAM,
    PARTICIPANT_HEADER,
    TASK_ID_HEADER,
    ReplyEnvelope,
    encode_frame,
)

BENCH = Path(__file__).resolve().parent
TOKEN = "fs_bench-streaming-memory"
PAYLOAD = 25_000_000
STREAM_MODULE = "fedsilo_bench_echo_stream"
RUN_TIMEOUT_S = 600.0
# clients per process: enough threads that N = 50 needs five processes, not fifty
THREADS_PER_PROCESS = 10


# ------------------------------------------------------------- the streaming workflow


def stream_workflow(ctx: Any, model_config: Any, data_config: Any) -> None:
    """echo through FedAvg: each reply folded into the strategy's float64 running sum as it
    arrives (``send`` + ``as_completed``), the next state that mean plus one."""
    from fedsilo.federation import Task
    from fedsilo.strategies import FedAvg

    if os.environ.get("BENCH_TRACE"):
        _trace_peaks(Path(os.environ["BENCH_TRACE"]))
    if os.environ.get("BENCH_HOLDERS"):
        _report_holders(Path(os.environ["BENCH_HOLDERS"]))
    participants = ctx.wait_for_clients(ctx.session.min_num_clients)
    strategy = FedAvg()
    # FedAvg reads only the names, shapes and dtypes of the global model: a zero-stride
    # stand-in, so the workflow keeps no copy of the model beside the broadcast frame
    template = {"x": np.broadcast_to(np.float32(0.0), (model_config.payload_size,))}
    state = np.zeros(model_config.payload_size, dtype=np.float32)
    for server_round in range(1, ctx.session.num_rounds + 1):
        began = time.perf_counter()
        arrays = {"x": state}
        group = ctx.send(
            [Task(to=p, kind="echo", arrays=arrays, round=server_round) for p in participants]
        )
        del arrays, state  # the broadcast frame is the round's copy of the model
        per_client: dict[str, dict[str, float]] = {}
        state = strategy.aggregate_fit(server_round, template, _noted(group, per_client))["x"]
        state += 1.0
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        ctx.record_round(
            server_round,
            {"loss": 0.0, "round_ms": elapsed_ms, "replies": float(len(per_client))},
            per_client,
        )
        ctx.checkpoint(server_round, {"x": state}, {})
    ctx.save_model({"x": state}, {"rounds": ctx.session.num_rounds}, ctx.session.num_rounds)


def _noted(group: Any, per_client: dict[str, dict[str, float]]) -> Iterator[Any]:
    """The group's replies, each noted in ``per_client`` and let go before the next."""
    for reply in group.as_completed():
        per_client[reply.participant.client_name] = {"num_examples": 1.0}
        yield reply
        del reply


def serve(port: int, data_dir: str, gate: int) -> None:
    """The server process: the real app, with ``echo_stream`` registered beside the packages
    and the reply gate's capacity set to ``gate``."""
    import fedsilo.server.engine.runner as runner
    from fedsilo.federation import REGISTRY, ModelPackage
    from fedsilo.packages.echo.config import EchoDataConfig, EchoModelConfig
    from fedsilo.server.app import serve as serve_app
    from fedsilo.server.settings import Settings
    from fedsilo.wire import SessionKind

    module = types.ModuleType(STREAM_MODULE)
    module.PACKAGE = ModelPackage(  # type: ignore[attr-defined]
        name="echo_stream",
        description="echo, streamed into the running sum",
        kind=SessionKind.hfl,
        model_config_type=EchoModelConfig,
        data_config_type=EchoDataConfig,
        workflow=stream_workflow,
        executor_ref="fedsilo.packages.echo.client:EchoExecutor",
        export_ref="fedsilo.packages.echo.export:EchoModel",
    )
    sys.modules[STREAM_MODULE] = module
    REGISTRY["echo_stream"] = STREAM_MODULE
    runner.REPLIES_IN_FLIGHT = gate
    serve_app(Settings(host="127.0.0.1", port=port, data_dir=Path(data_dir), admin_token=TOKEN))


def _trace_peaks(out: Path) -> None:
    """Diagnostics (``BENCH_TRACE=file``): a new high of Python-traced memory past
    ``BENCH_TRACE_FLOOR`` updates (default 3.5) is written to ``file`` with the allocations
    alive at that moment, by origin (at most one every 2 s: a snapshot holds the GIL)."""
    import tracemalloc

    tracemalloc.start(10)
    floor = float(os.environ.get("BENCH_TRACE_FLOOR", "3.5")) * PAYLOAD * 4

    def watch() -> None:
        best = floor
        while True:
            current, _ = tracemalloc.get_traced_memory()
            if current > best:
                best = current
                stats = tracemalloc.take_snapshot().statistics("traceback")
                with out.open("a") as log:
                    print(f"== traced {current / 2**20:.0f} MiB", file=log)
                    for stat in stats[:6]:
                        if stat.size < 2**20:
                            break
                        print(f"-- {stat.size / 2**20:.0f} MiB", file=log)
                        print("\n".join(stat.traceback.format()[-20:]), file=log)
                time.sleep(2.0)
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()


def _report_holders(out: Path) -> None:
    """Diagnostics (``BENCH_HOLDERS=file``): once the server's resident set passes 6 updates
    over its level now, which objects keep reply bodies alive (live ``Reply`` objects and
    large buffers, with what refers to them)."""
    import gc

    me = psutil.Process()
    limit = me.memory_info().rss + float(os.environ.get("BENCH_HOLDERS_AT", "4.6")) * PAYLOAD * 4

    def describe(thing: Any) -> str:
        kind = type(thing).__name__
        if type(thing).__name__ == "frame":
            return f"frame {thing.f_code.co_filename}:{thing.f_lineno} {thing.f_code.co_name}"
        if isinstance(thing, dict):
            return f"dict keys={list(thing)[:6]}"
        if isinstance(thing, BaseException):
            return f"exception {kind}: {str(thing)[:80]}"
        if isinstance(thing, list | tuple):
            return f"{kind} len={len(thing)}"
        return kind

    def watch() -> None:
        while me.memory_info().rss < limit:
            time.sleep(0.01)
        before = me.memory_info().rss
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        garbage = list(gc.garbage)
        gc.set_debug(0)
        gc.garbage.clear()
        counts: dict[str, int] = {}
        for thing in garbage:
            counts[describe(thing)] = counts.get(describe(thing), 0) + 1
        with out.open("a") as log:
            print(f"rss {before / 2**20:.0f} MiB, {found} unreachable", file=log)
            for line, n in sorted(counts.items(), key=lambda kv: -kv[1])[:60]:
                print(f"  {n:5d} {line}", file=log)
            big = [g for g in garbage if isinstance(g, memoryview) and g.nbytes >= 2**20]
            print(f"{len(big)} large memoryviews among them", file=log)
            live = [o for o in gc.get_objects() if isinstance(o, memoryview) and o.nbytes >= 2**25]
            for view in live:
                print(
                    f"live memoryview {view.nbytes >> 20} MiB of {type(view.obj).__name__}",
                    file=log,
                )
                for holder in gc.get_referrers(view):
                    if holder is live:
                        continue
                    print("  held by", describe(holder), file=log)
                    for outer in gc.get_referrers(holder)[:5]:
                        if outer is not live:
                            print("    held by", describe(outer), file=log)
            del live
        del garbage
        gc.collect()

    threading.Thread(target=watch, daemon=True).start()


# ------------------------------------------------------------------------ clients


def client_process(url: str, session_id: str, names: list[str]) -> None:
    """Several participants as threads: one shared 100 MB reply body, downloads discarded."""
    body = encode_frame(
        {"x": np.zeros(PAYLOAD, dtype=np.float32)}, ReplyEnvelope(meta={"num_examples": 1})
    )
    errors: list[str] = []

    def participant(name: str) -> None:
        try:
            run_participant(url, session_id, name, body)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=participant, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        print("\n".join(errors), file=sys.stderr, flush=True)
        raise SystemExit(1)


def run_participant(url: str, session_id: str, name: str, body: bytes) -> None:
    base = f"{url}/api/v1/sessions/{session_id}/participants"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # the server only relays to this key, so random bytes do (no sealed payloads here)
    public_key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    with httpx.Client(headers=auth, timeout=httpx.Timeout(120.0)) as http:
        joined = http.post(
            base,
            json={
                "client_name": name,
                "dataset": {"train_rows": 1, "test_rows": 0, "columns": []},
                "public_key": public_key,
            },
        )
        joined.raise_for_status()
        pid, credential = joined.json()["id"], joined.json()["credential"]
        headers = {PARTICIPANT_HEADER: credential}
        request = http.build_request(
            "GET", f"{base}/{pid}/tasks/next", params={"wait": 30}, headers=headers
        )
        while True:
            response = http.send(request, stream=True)
            try:
                status = response.status_code
                task_id = response.headers.get(TASK_ID_HEADER, "")
                for _ in response.iter_bytes(1 << 20):  # read the broadcast, keep nothing
                    pass
            finally:
                response.close()
            if status == 410:
                return
            if status == 204:
                request = http.build_request(
                    "GET", f"{base}/{pid}/tasks/next", params={"wait": 30}, headers=headers
                )
                continue
            if status != 200:
                raise RuntimeError(f"unexpected {status} from the server")
            request = http.build_request(
                "POST",
                f"{base}/{pid}/tasks/{task_id}/reply",
                params={"wait": 30},
                # in pieces: httpcore re-slices a whole bytes body after every partial send,
                # which for 100 MB costs the client seconds of copying per reply
                content=_pieces(body),
                headers={
                    **headers,
                    "Content-Type": OCTET_STREAM,
                    "Content-Length": str(len(body)),
                },
            )


def _pieces(body: bytes, size: int = 1 << 20) -> Iterator[memoryview]:
    view = memoryview(body)
    for start in range(0, len(view), size):
        yield view[start : start + size]


# --------------------------------------------------------------------------- runs


class RssSampler(threading.Thread):
    def __init__(self, pid: int, guard_mb: float) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.guard_mb = guard_mb
        self.samples: list[tuple[float, float]] = []
        self.tripped = False
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                rss = self.process.memory_info().rss / 2**20
            except psutil.Error:
                return
            self.samples.append((time.monotonic(), rss))
            if rss > self.guard_mb and not self.tripped:
                self.tripped = True
                self.process.kill()  # the server we started, by its pid
                return
            self.done.wait(0.005)


def run_one(
    workflow: str, n_clients: int, rounds: int, gate: int, guard_mb: float, work: Path
) -> dict[str, Any]:
    from common import free_port, wait_port

    port = free_port()
    data_dir = work / f"server-{workflow}-{n_clients}"
    server = spawn(
        f"server-{workflow}-{n_clients}",
        [
            sys.executable,
            str(BENCH / "streaming_memory.py"),
            "--serve",
            str(port),
            str(data_dir),
            str(gate),
        ],
        work / f"server-{workflow}-{n_clients}.log",
    )
    clients: list[Any] = []
    try:
        wait_port(port, 60, server)
        url = f"http://127.0.0.1:{port}"
        api = httpx.Client(
            base_url=url + "/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        created = api.post(
            "/sessions",
            json={
                "name": f"memory-{n_clients}",
                "package_name": "echo" if workflow == "echo" else "echo_stream",
                "min_num_clients": n_clients,
                "num_rounds": rounds,
                "model_config": {"payload_size": PAYLOAD},
                "data_config": {"columns": []},
            },
        )
        created.raise_for_status()
        sid = created.json()["id"]
        api.post(f"/sessions/{sid}/start").raise_for_status()
        time.sleep(0.5)  # let the server settle after importing the package
        baseline = psutil.Process(server.pid).memory_info().rss / 2**20
        sampler = RssSampler(server.pid, guard_mb)
        sampler.start()
        names = [f"silo{i}" for i in range(n_clients)]
        for start in range(0, n_clients, THREADS_PER_PROCESS):
            chunk = names[start : start + THREADS_PER_PROCESS]
            clients.append(
                spawn(
                    f"clients{start}",
                    [sys.executable, str(BENCH / "streaming_memory.py"), "--client", url, sid,
                     *chunk],
                    work / f"clients-{workflow}-{n_clients}-{start}.log",
                )
            )  # fmt: skip
        began = time.monotonic()
        status = "running"
        session: dict[str, Any] = {}
        while time.monotonic() - began < RUN_TIMEOUT_S:
            if sampler.tripped:
                status = "guard"
                break
            try:
                session = api.get(f"/sessions/{sid}").json()
            except httpx.TimeoutException:
                continue  # a loaded server: ask again
            status = session["status"]
            if status in ("completed", "failed", "canceled"):
                break
            time.sleep(0.1)
        wall = time.monotonic() - began
        peak = peak_rss_mb(server.pid) if not sampler.tripped else None
        sampler.done.set()
        sampler.join(timeout=5)
        sampled_peak = max((rss for _, rss in sampler.samples), default=baseline)
        metrics = (
            api.get(f"/sessions/{sid}/metrics").json()["federated_metrics"]
            if status == "completed"
            else []
        )
        api.close()
    finally:
        stop_all([server, *clients])
    update_mb = PAYLOAD * 4 / 2**20
    peak_mb = peak if peak is not None else sampled_peak
    return {
        "benchmark": "streaming_memory",
        "system": "fedsilo",
        "workflow": workflow,
        "reply_gate": gate,
        "clients": n_clients,
        "rounds": rounds,
        "status": status,
        **({} if status == "completed" else {"reason": session.get("failure_reason")}),
        "update_mb": round(update_mb, 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "sampled_peak_rss_mb": round(sampled_peak, 1),
        "peak_over_baseline_updates": round((peak_mb - baseline) / update_mb, 2),
        "round_ms": [round(m["round_ms"], 1) for m in metrics],
        **({"timeline": _timeline(sampler.samples)} if os.environ.get("BENCH_TIMELINE") else {}),
        "wall_s": round(wall, 1),
        **facts(),
    }


def _timeline(samples: list[tuple[float, float]]) -> list[tuple[float, int]]:
    """(seconds, MiB) at every change of 50 MiB or more: the shape of the run."""
    if not samples:
        return []
    start, shown, last = samples[0][0], [], -1e9
    for at, rss in samples:
        if abs(rss - last) >= 50:
            shown.append((round(at - start, 3), int(rss)))
            last = rss
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 10, 50])
    parser.add_argument("--workflow", choices=("stream", "echo"), nargs="+", default=["stream"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gate", type=int, default=1, help="large replies admitted at once")
    parser.add_argument(
        "--guard-mb", type=float, default=4096.0, help="stop the server past this RSS"
    )
    args = parser.parse_args()
    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="fedsilo-streaming-memory-") as tmp:
        for workflow in args.workflow:
            for n_clients in args.clients:
                result = run_one(
                    workflow, n_clients, args.rounds, args.gate, args.guard_mb, Path(tmp)
                )
                print(json.dumps(result), flush=True)
    left = leftovers()
    if left:
        print(json.dumps({"leftover_processes": left}), file=sys.stderr)
        stop_all()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_process(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main()
