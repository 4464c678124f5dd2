"""Private record linkage (issue 13): fedsilo's PSI end to end beside openmined-psi.

Three measurements in one run, one JSON line each::

    {"bench": "prl", "protocol": "keyed_hash", "rows_per_client": 1000000, ...}
    {"bench": "prl", "protocol": "ecdh", "rows_per_client": 100000, "extrapolated_1m_s": ...}
    {"bench": "prl", "protocol": "openmined-psi", "rows_per_client": 100000, ...}

* ``keyed_hash`` and ``ecdh``: a real server process (``fedsilo server start``) and two real
  client processes (``fedsilo client prl``), each client with its own parquet table of int64
  ids, ``--overlap`` of them shared. ``end_to_end_s`` runs from launching the clients to the
  session completed (their start-up, loading and checking the ids, joining, the protocol, the
  alignment saved); ``protocol_s`` from the last join to the session's end. ``client_peak_rss_mb``
  is each client process's high-water resident set (VmHWM, sampled until it exits);
  ``client_cpu_s`` and ``server_cpu_s`` the CPU seconds each process used (user + system,
  from /proc), which a loaded machine inflates far less than the wall times. The overlap
  found is checked against numpy's ``intersect1d``.
* ECDH costs, per id and party, one hash to the curve (Elligator 2) and two X25519
  multiplications (its own ids, the peer's), four multiplications per shared pair; it runs
  at ``--ecdh-rows`` and ``extrapolated_1m_s`` scales its protocol time linearly to
  1M x 1M (every step is per id; the sort is negligible), which the line says
  (``"extrapolated": true``); ``--ecdh-rows 1000000`` measures it.
* ``openmined-psi`` (2.0.6, the library NVFlare's PSI uses; P-256, ``reveal_intersection``)
  runs both roles in this process, no network: server setup, client request, server
  response, intersection. At ``--ecdh-rows`` too, so the ECDH lines compare like for like;
  ``cpu_s`` is this process's CPU time over those steps.

Usage: ``.venv/bin/python bench/prl.py [--rows 1000000] [--ecdh-rows 100000] [--overlap 0.5]``
(``--skip-openmined`` when it is not installed: ``pip install 'fedsilo[bench]'``). Goals
(issue 13): keyed hash 1M x 1M <= 5 s end to end with <= 600 MB per client; ECDH <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import facts, install_signal_handlers, peak_rss_mb, spawn, stop_all

import fedsilo
from fedsilo.runners.local import start_server

NAMES = ("passive_client", "active_client")
GOALS = {"keyed_hash": 5.0, "ecdh": 60.0}


def tables(rows: int, overlap: float, folder: Path, seed: int = 13) -> tuple[list[Path], int]:
    """Two parquet tables of ``rows`` unique int64 ids, ``overlap * rows`` of them shared."""
    rng = np.random.default_rng(seed)
    shared = int(rows * overlap)
    population = rng.choice(2**40, 2 * rows - shared, replace=False).astype(np.int64)
    ids = [population[:rows], population[rows - shared :]]
    paths = []
    for name, values in zip(NAMES, ids, strict=True):
        path = folder / f"{name}-{rows}.parquet"
        pd.DataFrame({"id": rng.permutation(values)}).to_parquet(path, index=False)
        paths.append(path)
    return paths, len(np.intersect1d(ids[0], ids[1]))


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds the process has used; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of stat(5); the split starts at field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakSampler:
    """The last VmHWM and CPU time seen of each pid, sampled every 50 ms until stopped.

    CPU seconds do not depend on how loaded the shared machine is the way wall time does
    (beyond cache and frequency effects), so the lines carry them beside the wall times.
    """

    def __init__(self, pids: list[int]) -> None:
        self.peaks: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self._pids = pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self._pids:
                peak = peak_rss_mb(pid)
                if peak is not None:
                    self.peaks[pid] = peak
                used = cpu_s(pid)
                if used is not None:
                    self.cpu[pid] = used
            self._stop.wait(0.05)

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def run_fedsilo(
    protocol: str, rows: int, overlap: float, folder: Path, timeout: float
) -> dict[str, Any]:
    paths, expected = tables(rows, overlap, folder)
    token = "fs_" + secrets.token_urlsafe(24)
    server = start_server(folder / f"server-{protocol}", env={"FEDSILO_ADMIN_TOKEN": token})
    try:
        with fedsilo.connect(server.url, token) as client:
            prl = client.create_prl_session(
                name=f"bench {protocol}",
                data_config={
                    "clients": {name: {"id_columns": ["id"]} for name in NAMES},
                    "psi_protocol": protocol,
                },
            ).start()
            env = {"FEDSILO_CLIENT_STATE_DIR": str(folder / f"state-{protocol}")}
            server_cpu = cpu_s(server.pid) or 0.0
            started = time.perf_counter()
            launched = datetime.now(UTC)
            procs = [
                spawn(
                    f"prl client {name}",
                    [
                        sys.executable,
                        "-m",
                        "fedsilo",
                        "client",
                        "prl",
                        "--session",
                        prl.id,
                        "--train-path",
                        str(path),
                        "--client-name",
                        name,
                        "--url",
                        server.url,
                        "--token",
                        token,
                        "--poll-wait",
                        "5",
                        "--quiet",
                    ],
                    folder / f"{protocol}-{name}.log",
                    env=env,
                )
                for name, path in zip(NAMES, paths, strict=True)
            ]
            sampler = PeakSampler([p.pid for p in procs])
            deadline = time.monotonic() + timeout
            while not prl.status.ended:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {protocol} session did not end in {timeout:g} s")
                time.sleep(0.02)
            end_to_end = time.perf_counter() - started
            server_cpu = (cpu_s(server.pid) or 0.0) - server_cpu
            for proc in procs:
                proc.wait(timeout=60)
            peaks = sampler.stop()
            public = prl.refresh()
            if str(public.status) != "completed":
                raise RuntimeError(
                    f"the {protocol} session {public.status}: {public.failure_reason}"
                )
            joins = [p.joined_at for p in prl.participants()]
            joined = max(joins)
            join_s = [round((j - launched).total_seconds(), 3) for j in sorted(joins)]
            assert public.ended_at is not None
            protocol_s = (public.ended_at - joined).total_seconds()
            overlap_stats = prl.metrics().as_dict()["client_metrics"]
            # Phases from the session's log: ids checked and agreed ("linking"), then the
            # PSI done ("shared records"), relative to the last join.
            phases = {
                key: round((line.time - joined).total_seconds(), 3)
                for line in prl.logs()
                for key, start in (
                    ("agreed_s", "linking"),
                    ("key_shared_s", "session key shared"),
                    ("blinded_s", "ids blinded at both"),
                    ("blinded_twice_s", "ids blinded twice"),
                    ("hashes_received_s", "hashes received"),
                    ("intersected_s", "shared records"),
                    ("saved_s", "alignment saved"),
                )
                if line.message.startswith(start)
            }
    finally:
        stop_all()
        server.stop()
    found = {name: stats["train"]["n_overlapped_records"] for name, stats in overlap_stats.items()}
    if set(found.values()) != {expected}:
        raise AssertionError(f"{protocol}: found {found} shared records; numpy says {expected}")
    line: dict[str, Any] = {
        "bench": "prl",
        "protocol": protocol,
        "rows_per_client": rows,
        "shared": expected,
        "end_to_end_s": round(end_to_end, 3),
        "protocol_s": round(protocol_s, 3),
        "joins_after_launch_s": join_s,
        "phases_after_last_join": phases,
        "client_peak_rss_mb": {
            name: round(peaks.get(proc.pid, float("nan")), 1)
            for name, proc in zip(NAMES, procs, strict=True)
        },
        "client_cpu_s": {
            name: round(sampler.cpu.get(proc.pid, float("nan")), 2)
            for name, proc in zip(NAMES, procs, strict=True)
        },
        "server_cpu_s": round(server_cpu, 2),
        "goal_s": GOALS[protocol],
    }
    if rows < 1_000_000:
        scale = 1_000_000 / rows
        line["extrapolated"] = True
        line["extrapolated_1m_s"] = round(protocol_s * scale, 1)
    line["goal_met"] = line.get("extrapolated_1m_s", end_to_end) <= GOALS[protocol]
    return line


def run_openmined(rows: int, overlap: float) -> dict[str, Any]:
    import private_set_intersection.python as psi

    shared = int(rows * overlap)
    rng = np.random.default_rng(13)
    population = rng.choice(2**40, 2 * rows - shared, replace=False)
    client_items = [str(v) for v in population[:rows]]
    server_items = [str(v) for v in population[rows - shared :]]
    timings = {}
    cpu = time.process_time()
    started = time.perf_counter()
    server = psi.server.CreateWithNewKey(True)
    client = psi.client.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(0.0, len(client_items), server_items, psi.DataStructure.RAW)
    timings["server_setup_s"] = time.perf_counter() - started
    mark = time.perf_counter()
    request = client.CreateRequest(client_items)
    timings["client_request_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    response = server.ProcessRequest(request)
    timings["server_response_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    intersection = client.GetIntersection(setup, response)
    timings["intersection_s"] = time.perf_counter() - mark
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu
    if len(intersection) != shared:
        raise AssertionError(f"openmined-psi found {len(intersection)}; expected {shared}")
    return {
        "bench": "prl",
        "protocol": "openmined-psi",
        "rows_per_client": rows,
        "shared": shared,
        "total_s": round(total, 3),
        "cpu_s": round(cpu, 2),
        **{k: round(v, 3) for k, v in timings.items()},
        "extrapolated": rows < 1_000_000,
        "extrapolated_1m_s": round(total * 1_000_000 / rows, 1),
        "note": "both roles in one process, no network",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="ids per client, keyed hash")
    parser.add_argument("--ecdh-rows", type=int, default=100_000, help="ids per client, ECDH")
    parser.add_argument("--overlap", type=float, default=0.5, help="share of ids in common")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound per session")
    parser.add_argument("--skip-openmined", action="store_true")
    args = parser.parse_args()
    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="fedsilo-prl-bench-") as tmp:
        folder = Path(tmp)
        runs = [("keyed_hash", args.rows), ("ecdh", args.ecdh_rows)]
        for protocol, rows in runs:
            line = run_fedsilo(protocol, rows, args.overlap, folder, args.timeout)
            print(json.dumps({**line, **facts()}), flush=True)
        if not args.skip_openmined:
            print(
                json.dumps({**run_openmined(args.ecdh_rows, args.overlap), **facts()}), flush=True
            )


if __name__ == "__main__":
    main()
