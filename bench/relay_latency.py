"""Latency of the fast exchange (issue 9, item 3): one hop client -> server -> client.

Starts a real server process on 127.0.0.1 and a started ``echo`` session with two
participants: ``alice`` in this process and ``bob`` in a process of its own (each with its own
persistent HTTP connection). Alice sends a payload to bob through the relay and waits for bob
to send it back; each ping-pong is two hops (``POST .../relay/{to}`` answered 204, then the
peer's long-poll ``GET .../relay`` answered 200), so one hop is half the round trip. Payloads
are random bytes of the size of a sealed payload (what the wire carries: the relay never
opens them).

With ``--lock-step`` both sides use ``HttpExchange.send_and_receive`` instead (the send
and the wait for the answer in one request, as SplitNN's parties do): a hop is then one
``POST .../relay/{to}?wait=W`` whose queued message answers the peer's pending one.

Prints one JSON line per payload size::

    {"bench": "relay_latency", "mode": "send+poll", "payload_bytes": 1024, "messages": 2000,
     "hop_ms": {"median": ..., "p90": ..., "p99": ...}, "round_trip_ms": {...}, ...}

Usage: ``.venv/bin/python bench/relay_latency.py [--messages 2000] [--sizes 1024 65536]
[--lock-step]``.
Everything is bounded by ``--timeout`` seconds; both processes are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import facts, install_signal_handlers, spawn, stop_all

from fedsilo.client.exchange import HttpExchange
from fedsilo.client.keys import KeyPair
from fedsilo.errors import SessionError
from fedsilo.http import ApiClient
from fedsilo.runners.local import start_server

_STOP_TAG = "stop"
_LOCK_STEP = "lock-step"
#: round trips run before the measured ones (connections, caches, first imports)
_WARMUP = 100


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "median": round(statistics.median(ordered), 3),
        "p90": round(at(0.90), 3),
        "p99": round(at(0.99), 3),
        "min": round(ordered[0], 3),
    }


def join(api: ApiClient, sid: str, name: str) -> tuple[str, str]:
    """Join through the real route; returns ``(participant id, credential)``."""
    body = {
        "client_name": name,
        "dataset": {"train_rows": 1, "test_rows": 0, "columns": []},
        "public_key": KeyPair.generate().public_text,
    }
    joined = api.post_json(f"/sessions/{sid}/participants", body)
    return joined["id"], joined["credential"]


def run_peer(url: str, token: str, sid: str, pid: str, credential: str, mode: str) -> None:
    """Bob: send every message back to its sender until the stop tag (or the session ends)."""
    with ApiClient(url, token) as api:
        exchange = HttpExchange(api, sid, pid, credential)
        got: tuple[str, str, bytes] | None = None
        while True:
            try:
                sender, tag, payload = got if got is not None else exchange.receive()
                if tag == _STOP_TAG:
                    return
                if mode == _LOCK_STEP:
                    got = exchange.send_and_receive(sender, payload, tag=tag)
                else:
                    exchange.send(sender, payload, tag=tag)
            except SessionError:
                return


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    alice: HttpExchange,
    bob_id: str,
    size: int,
    count: int,
    deadline: float,
    mode: str,
    pids: dict[str, int],
) -> Any:
    payload = os.urandom(size)
    round_trips: list[float] = []
    sends: list[float] = []
    cpu: dict[str, float] = {}
    for i in range(_WARMUP + count):
        if i == _WARMUP:
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            cpu["alice"] = time.process_time()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"relay_latency ran out of time after {i} round trips")
        started = time.perf_counter()
        got = None
        if mode == _LOCK_STEP:
            got = alice.send_and_receive(bob_id, payload, tag="ping", wait=min(10.0, remaining))
        else:
            alice.send(bob_id, payload, tag="ping")
        sent = time.perf_counter()
        if got is None:
            got = alice.receive(timeout=min(10.0, remaining))
        echoed = got[2]
        ended = time.perf_counter()
        if len(echoed) != size:
            raise AssertionError(f"bob sent back {len(echoed)} bytes; expected {size}")
        if i >= _WARMUP:
            round_trips.append((ended - started) * 1000)
            sends.append((sent - started) * 1000)
    spent = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
    spent["alice"] = time.process_time() - cpu["alice"]
    result = {
        "hop_ms": percentiles([v / 2 for v in round_trips]),
        "round_trip_ms": percentiles(round_trips),
        # CPU per hop (a hop is one request in lock step, a send and a poll otherwise)
        "cpu_ms_per_hop": {k: round(v * 1000 / (2 * count), 3) for k, v in spent.items()},
    }
    if mode != _LOCK_STEP:  # in lock step the send is the whole round trip
        result["send_ms"] = percentiles(sends)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="measured round trips per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 65536])
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of the whole run")
    parser.add_argument(
        "--lock-step", action="store_true", help="send and await the answer in one request"
    )
    parser.add_argument("--peer", nargs=5, metavar=("URL", "TOKEN", "SID", "PID", "CRED"))
    args = parser.parse_args()
    mode = _LOCK_STEP if args.lock_step else "send+poll"
    if args.peer:
        run_peer(*args.peer, mode)
        return
    install_signal_handlers()
    deadline = time.monotonic() + args.timeout
    token = "fs_" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="fedsilo-relay-") as tmp:
        data_dir = Path(tmp) / "server"
        server = start_server(data_dir, env={"FEDSILO_ADMIN_TOKEN": token})
        try:
            with ApiClient(server.url, token, timeout=60) as api:
                session = {
                    "name": "relay latency",
                    "package_name": "echo",
                    "min_num_clients": 2,
                    "num_rounds": 1,
                    # the workflow's task to each participant stays unanswered while the two
                    # exchange messages: the session keeps running for the whole measurement
                    "model_config": {"payload_size": 1, "task_timeout": args.timeout + 60},
                    "data_config": {"columns": []},
                }
                sid = api.post_json("/sessions", session)["id"]
                api.post_json(f"/sessions/{sid}/start")
                alice_id, alice_credential = join(api, sid, "alice")
                bob_id, bob_credential = join(api, sid, "bob")
                peer = spawn(
                    "relay peer bob",
                    [sys.executable, __file__, "--peer", server.url, token, sid, bob_id,
                     bob_credential, *(["--lock-step"] if args.lock_step else [])],
                    Path(tmp) / "bob.log",
                )  # fmt: skip
                alice = HttpExchange(api, sid, alice_id, alice_credential)
                for size in args.sizes:
                    pids = {"server": server.pid, "bob": peer.pid}
                    result = measure(alice, bob_id, size, args.messages, deadline, mode, pids)
                    line = {
                        "bench": "relay_latency",
                        "mode": mode,
                        "payload_bytes": size,
                        "messages": args.messages,
                        **result,
                        **facts(),
                    }
                    print(json.dumps(line), flush=True)
                alice.send(bob_id, b"", tag=_STOP_TAG)
                peer.wait(timeout=10)
        finally:
            stop_all()
            server.stop()


if __name__ == "__main__":
    main()
