"""Helpers every benchmark shares: machine facts, peak-RSS sampling, bounded child processes.

Every process a benchmark starts goes through :func:`spawn`: it runs in its own process group
(its own session), with its output in a log file, and is registered so :func:`stop_all` (also
run at interpreter exit and on SIGTERM/SIGINT of the harness) stops it by PID and group —
SIGTERM, then SIGKILL — whatever the benchmark's outcome.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PeakSampler",
    "Proc",
    "adopt",
    "facts",
    "free_port",
    "install_signal_handlers",
    "leftovers",
    "peak_rss_mb",
    "spawn",
    "stop_all",
    "wait_port",
]

_started: list[Proc] = []  # running, not yet stopped
_all_ever: list[Proc] = []  # for the leftover check at the end
_lock = threading.Lock()


def facts() -> dict[str, Any]:
    """Machine facts recorded in every result line (the machine may be shared and loaded)."""
    return {
        "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def rss_mb(pid: int) -> float | None:
    """The process's current resident set (VmRSS) in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """The process's high-water resident set (VmHWM) in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) of every live, non-zombie process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "comm)": state ppid pgrp ...
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def tree_pids(root: int, table: dict[int, tuple[int, int]] | None = None) -> list[int]:
    """``root``, its process group and all its descendants (children a launcher starts in
    a new session, e.g. Flower's app processes or Ray workers, are still descendants)."""
    table = table if table is not None else _proc_table()
    found = {pid for pid, (_, pgid) in table.items() if pgid == root or pid == root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return sorted(found)


class PeakSampler(threading.Thread):
    """Samples VmHWM of every process in the watched trees until :meth:`finish`.

    VmHWM only grows, so the last value read for a pid is its peak. Watching process trees
    rather than pids also counts the children a launcher forks (Flower's app processes, Ray
    workers). Several roles may share one root (threads-as-clients); a pid counts once.
    """

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.groups: dict[str, int] = {}  # role -> root pid
        self.peaks: dict[int, tuple[str, float]] = {}  # pid -> (role, MiB)
        self.interval = interval
        self._done = threading.Event()
        self._totals: dict[str, float] = {}
        self.concurrent = 0.0  # the largest sum of VmRSS over the trees in one sample

    def watch(self, role: str, root: int) -> None:
        self.groups[role] = root

    def sample(self) -> None:
        table = _proc_table()
        now = 0.0
        counted: set[int] = set()
        for role, root in list(self.groups.items()):
            for pid in tree_pids(root, table):
                value = peak_rss_mb(pid)
                if value is not None:
                    self.peaks[pid] = (role, value)
                current = rss_mb(pid) if pid not in counted else None
                counted.add(pid)
                now += current or 0.0
        self.concurrent = max(self.concurrent, now)

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def finish(self) -> dict[str, float]:
        """Stop sampling; return peak MiB summed per role prefix, in total and concurrently."""
        if self._done.is_set():
            return self._totals
        if self.is_alive():
            self.sample()
        self._done.set()
        if self.is_alive():
            self.join(timeout=5)
        self._totals = self._sum()
        return self._totals

    def _sum(self) -> dict[str, float]:
        # "total": the sum of every process's own peak (exact for processes that live the whole
        # run); "concurrent": the largest sampled sum of resident sets at one instant, which does
        # not add up short-lived processes that never coexisted (Flower's per-message ClientApp
        # processes).
        out: dict[str, float] = {"total": 0.0, "concurrent": self.concurrent}
        for role, value in self.peaks.values():
            kind = role.rstrip("0123456789")
            out[kind] = out.get(kind, 0.0) + value
            out["total"] += value
        return {k: round(v, 1) for k, v in out.items()}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float, proc: Proc | None = None) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.running:
            raise RuntimeError(
                f"{proc.name} exited ({proc.returncode}) before listening on "
                f"{port}; log {proc.log_path}:\n{proc.log_tail()}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


class Proc:
    """A child in its own process group, output to ``log_path``."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{self.name} (pid {self.pid}) still running after {timeout} s; "
                f"log {self.log_path}:\n{self.log_tail()}"
            ) from None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process, SIGKILL it after ``grace`` s; then SIGKILL every process of
        its tree that is left (its group and its descendants, also those a launcher started
        detached in a new session, like Flower's SuperExec)."""
        tree = [pid for pid in tree_pids(self.pid) if pid != self.pid]
        _remember(tree)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
        # The group id is the child's pid (start_new_session): this reaches only what it forked.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in tree:
            if _same_process(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(
    name: str,
    args: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start and register a child (see :class:`Proc`); :func:`stop_all` will stop it."""
    proc = Proc(name, args, log_path, env, cwd)
    with _lock:
        _started.append(proc)
        _all_ever.append(proc)
    return proc


def stop_all(procs: Sequence[Proc] | None = None) -> None:
    """Stop ``procs`` (default: everything spawned), clients before servers (reverse order)."""
    with _lock:
        targets = list(procs) if procs is not None else list(_started)
    for proc in reversed(targets):
        proc.stop()
    with _lock:
        for proc in targets:
            if proc in _started:
                _started.remove(proc)


_seen: dict[int, bytes] = {}  # pid -> cmdline of every descendant seen at a stop


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _remember(pids: Sequence[int]) -> None:
    for pid in pids:
        cmd = _cmdline(pid)
        if cmd is not None:
            _seen[pid] = cmd


def _same_process(pid: int) -> bool:
    # A pid seen earlier names the same process while its command line is unchanged (a pid
    # is not reused within the seconds between the snapshot and the kill in practice).
    cmd = _cmdline(pid)
    return cmd is not None and cmd == _seen.get(pid)


def adopt(name: str, pid: int) -> None:
    """Track a process started elsewhere (fedsilo.runners.local) for :func:`leftovers`."""

    class _Adopted:
        def __init__(self) -> None:
            self.name, self.pid = name, pid

    with _lock:
        _all_ever.append(_Adopted())  # type: ignore[arg-type]  # only .pid is read


def leftovers() -> list[str]:
    """Processes this harness started (or their descendants) that are still alive."""
    with _lock:
        roots = [p.pid for p in _all_ever]
    alive = []
    table = _proc_table()
    for root in roots:
        for pid in tree_pids(root, table):
            alive.append(f"{pid}: {(_cmdline(pid) or b'')[:120]!r}")
    alive += [f"{pid}: {cmd[:120]!r}" for pid, cmd in _seen.items() if _same_process(pid)]
    return sorted(set(alive))


def install_signal_handlers() -> None:
    """SIGTERM/SIGINT of the harness stop every child before it exits."""

    def handler(signum: int, _frame: Any) -> None:
        stop_all()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


atexit.register(stop_all)
