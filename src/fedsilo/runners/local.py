"""Run a fedsilo server and its clients as real local processes.

Used by the demo, the end-to-end tests and anyone trying fedsilo on one machine::

    with start_server(tmp_path / "server") as server:
        client = fedsilo.connect(server.url, server.admin_token)
        ...
        with start_client(session.id, train, test, 1024, "silo0", server.url,
                          server.admin_token) as silo0:
            silo0.wait(timeout=120)

Every process runs ``python -m fedsilo ...`` with this interpreter, in its own process group,
with its output in a log file. Stopping is by process id (SIGTERM, then SIGKILL); whatever this
module started and nobody stopped is stopped when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import httpx

from fedsilo.errors import FedsiloError, ServerUnavailable

__all__ = [
    "ClientProcess",
    "ServerProcess",
    "free_port",
    "start_client",
    "start_eda_client",
    "start_participant",
    "start_server",
]

# The server imports FastAPI, SQLAlchemy and the engine before it listens: ~2-5 s on a laptop,
# more on a loaded CI machine; 60 s only bounds a server that hangs.
SERVER_START_TIMEOUT_S = 60.0
_HEALTH_POLL_S = 0.1
_LOG_TAIL_LINES = 20

# Strong references: a handle the caller dropped must still be stopped at exit.
_running: set[_ManagedProcess] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now.

    The OS picks it (bind to port 0). Another process could take it before the caller binds,
    which on a test machine is rare enough that callers simply retry on failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class _ManagedProcess:
    """A child process in its own process group whose output goes to a log file."""

    what = "process"

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = list(args)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # The child gets its own copy of the descriptor, so the parent closes its one at once
        # and holds no file open for the process's lifetime.
        with log_path.open("ab") as log:
            # Own session: a Ctrl-C in the terminal reaches only the parent, which then stops
            # the children in order (clients before the server) instead of all dying at once.
            self._popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
            )
        _running.add(self)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process ended (negative: killed by that signal)."""
        return self._popen.poll()

    @property
    def running(self) -> bool:
        return self._popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit and return its exit code.

        Raises
        ------
        TimeoutError
            When it is still running after ``timeout`` seconds (it is left running).
        """
        try:
            code = self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{self.what} (pid {self.pid}) still running after {timeout:g} s; "
                f"expected it to exit. Log: {self.log_path}"
            ) from None
        return code

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Any process it started in its group is killed afterwards, so nothing outlives it.
        Safe to call more than once. Returns the exit code.
        """
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._sweep_group()
        return self._popen.returncode

    def kill(self) -> int:
        """SIGKILL the process (and its group) at once, as a crash would. Returns its exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        code = self._popen.wait()
        self._sweep_group()
        return code

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _sweep_group(self) -> None:
        # The group id is the child's pid (start_new_session); the kernel does not reuse a pid
        # while it names a live group, so this reaches only what the child left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        _running.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self._popen.returncode}"
        return f"{type(self).__name__}(pid={self.pid}, {state}, log={str(self.log_path)!r})"


class ServerProcess(_ManagedProcess):
    """A ``fedsilo server start`` process.

    Attributes
    ----------
    url : str
        Base URL clients and the SDK use, e.g. ``http://127.0.0.1:53211``.
    host : str
        The interface it binds.
    port : int
        The port it listens on (pass it to :func:`start_server` again to restart in place).
    data_dir : Path
        The server's data directory (database, artifacts, admin token).
    """

    what = "fedsilo server"

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        host: str,
        port: int,
        data_dir: Path,
    ) -> None:
        super().__init__(args, env, log_path)
        self.host = host
        self.port = port
        self.url = f"http://{_dial_host(host)}:{port}"
        self.data_dir = data_dir
        self._given_token = env.get("FEDSILO_ADMIN_TOKEN") or None

    @property
    def admin_token(self) -> str:
        """The admin token: FEDSILO_ADMIN_TOKEN when it was given, else the one the server wrote.

        Raises
        ------
        FedsiloError
            When no token was given and ``<data_dir>/admin_token`` does not exist.
        """
        if self._given_token:
            return self._given_token
        path = self.data_dir / "admin_token"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise FedsiloError(
                f"No admin token at {path}; expected the server to write it on first start "
                "(or FEDSILO_ADMIN_TOKEN in start_server's env)."
            ) from None

    def wait_healthy(self, timeout: float = SERVER_START_TIMEOUT_S) -> None:
        """Block until ``GET /healthz`` answers ``{"status": "ok"}``.

        Raises
        ------
        ServerUnavailable
            When the process exits first, or ``timeout`` passes; the message ends with the
            tail of the server log. The process is stopped in both cases.
        """
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        with httpx.Client(timeout=2.0) as http:
            while True:
                code = self.returncode
                if code is not None:
                    self.stop()
                    raise ServerUnavailable(
                        f"fedsilo server exited with code {code} before answering "
                        f"{self.url}/healthz; expected it to keep running. "
                        f"Last log lines ({self.log_path}):\n{self.log_tail()}"
                    )
                try:
                    response = http.get(f"{self.url}/healthz")
                    if response.status_code == 200 and response.json().get("status") == "ok":
                        return
                    last_problem = f"answered {response.status_code}: {response.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    last_problem = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    self.stop()
                    raise ServerUnavailable(
                        f"fedsilo server at {self.url} did not answer /healthz with "
                        f'{{"status": "ok"}} within {timeout:g} s (last: {last_problem}). '
                        f"Last log lines ({self.log_path}):\n{self.log_tail()}"
                    )
                time.sleep(_HEALTH_POLL_S)


class ClientProcess(_ManagedProcess):
    """A ``fedsilo client`` process (train, eda, join); it exits 0 when its session completes."""

    what = "fedsilo client"

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        session_id: str,
        client_name: str,
    ) -> None:
        super().__init__(args, env, log_path)
        self.session_id = session_id
        self.client_name = client_name
        self.what = f"fedsilo client {client_name!r}"


def start_server(
    data_dir: str | os.PathLike[str],
    port: int | None = None,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    *,
    timeout: float = SERVER_START_TIMEOUT_S,
) -> ServerProcess:
    """Start ``fedsilo server start`` and wait until it is healthy.

    Parameters
    ----------
    data_dir : path
        The server's data directory; created if missing.
    port : int, optional
        Port to listen on; a free one when omitted.
    host : str
        Interface to bind; the returned URL uses loopback when it is a wildcard.
    env : mapping, optional
        Extra environment variables (e.g. ``FEDSILO_ADMIN_TOKEN``) over this process's own.
    log_path : path, optional
        Where the server's output goes; ``<data_dir>/server.log`` by default.
    timeout : float
        Seconds to wait for ``/healthz``.

    Returns
    -------
    ServerProcess
        Running and healthy; stop it with ``.stop()`` or use it as a context manager.

    Raises
    ------
    ServerUnavailable
        When the server exits or stays unhealthy; it is stopped and the message carries
        the tail of its log.
    """
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    port = port if port is not None else free_port()
    log = Path(log_path) if log_path is not None else directory / "server.log"
    args = [
        sys.executable, "-m", "fedsilo", "server", "start",
        "--host", host, "--port", str(port), "--data-dir", str(directory),
    ]  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    server = ServerProcess(args, full_env, log, host=host, port=port, data_dir=directory)
    try:
        server.wait_healthy(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def start_participant(
    session_id: str,
    tables: Mapping[str, str | os.PathLike[str] | None],
    client_name: str,
    url: str,
    token: str,
    *,
    dataset_name: str | None = None,
    log_path: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ClientProcess:
    """Start ``fedsilo client join`` with the tables the session's package reads, by role.

    Parameters
    ----------
    session_id : str
        The session to join.
    tables : mapping of role to path
        E.g. ``{"train": a, "test": b}`` or ``{"dataset": d}`` (see
        :mod:`fedsilo.federation.binding`); roles mapped to None are left out.
    client_name : str
        How the client appears in metrics.
    url, token : str
        Server URL and bearer token. The token travels in ``FEDSILO_TOKEN``, not on the
        command line, because any local user can read another process's arguments.
    dataset_name : str, optional
        For sessions of named datasets (EDA).
    log_path : path, optional
        Where the client's output goes; a new temporary file by default.
    extra_args : sequence of str
        Appended to the command line (``--batch-size``, ``--poll-wait``, ...).
    env : mapping, optional
        Extra environment variables over this process's own.

    Returns
    -------
    ClientProcess
        Running; ``.wait(timeout)`` returns its exit code (0 once the session completes).
    """
    table_args = [
        arg
        for role, path in tables.items()
        if path is not None
        for arg in ("--table", f"{role}={os.fspath(path)}")
    ]
    args = [
        "join", "--session", session_id, *table_args,
        *(["--dataset-name", dataset_name] if dataset_name is not None else []),
        "--client-name", client_name,
        "--url", url,
        *extra_args,
    ]  # fmt: skip
    return _start_client(args, session_id, client_name, token, log_path, env)


def start_client(
    session_id: str,
    train_path: str | os.PathLike[str],
    test_path: str | os.PathLike[str] | None,
    batch_size: int,
    client_name: str,
    url: str,
    token: str,
    log_path: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
) -> ClientProcess:
    """Start ``fedsilo client train`` for one silo (the roles ``train`` and ``test`` of
    :func:`start_participant`).

    Parameters
    ----------
    session_id : str
        The session to join.
    train_path, test_path : path
        The silo's parquet/csv files; ``test_path`` None runs the client without a test set.
    batch_size : int
        Local mini-batch size.
    client_name, url, token, log_path, extra_args, env
        As for :func:`start_participant`.

    Returns
    -------
    ClientProcess
        Running; ``.wait(timeout)`` returns its exit code (0 once the session completes).
    """
    args = [
        "train",
        "--session", session_id,
        "--train-path", str(train_path),
        *(["--test-path", str(test_path)] if test_path is not None else []),
        "--batch-size", str(batch_size),
        "--client-name", client_name,
        "--url", url,
        *extra_args,
    ]  # fmt: skip
    return _start_client(args, session_id, client_name, token, log_path, env)


def start_eda_client(
    session_id: str,
    dataset_path: str | os.PathLike[str],
    dataset_name: str,
    url: str,
    token: str,
    client_name: str | None = None,
    log_path: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
) -> ClientProcess:
    """Start ``fedsilo client eda`` for one dataset of an EDA session (the role ``dataset``
    of :func:`start_participant`).

    Parameters
    ----------
    session_id : str
        The session to join.
    dataset_path : path
        The dataset's parquet/csv file.
    dataset_name : str
        Its name (the key of the session's data_config that selects its columns).
    url, token : str
        Server URL and bearer token (the token travels in ``FEDSILO_TOKEN``).
    client_name : str, optional
        Defaults to the dataset name.
    log_path, extra_args, env
        As for :func:`start_participant`.

    Returns
    -------
    ClientProcess
        Running; ``.wait(timeout)`` returns its exit code (0 once the session completes).
    """
    name = client_name if client_name is not None else dataset_name
    args = [
        "eda",
        "--session", session_id,
        "--dataset-path", str(dataset_path),
        "--dataset-name", dataset_name,
        *(["--client-name", client_name] if client_name is not None else []),
        "--url", url,
        *extra_args,
    ]  # fmt: skip
    return _start_client(args, session_id, name, token, log_path, env)


def _start_client(
    command: Sequence[str],
    session_id: str,
    client_name: str,
    token: str,
    log_path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
) -> ClientProcess:
    """``python -m fedsilo client <command>`` with its output in ``log_path``."""
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix=f"fedsilo-client-{client_name}-", suffix=".log")
        os.close(handle)
        log = Path(name)
    else:
        log = Path(log_path)
    args = [sys.executable, "-m", "fedsilo", "client", *command]
    full_env = {**os.environ, **(env or {}), "FEDSILO_TOKEN": token}
    return ClientProcess(args, full_env, log, session_id=session_id, client_name=client_name)


def _dial_host(host: str) -> str:
    """The address to connect to for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@atexit.register
def _stop_leftovers() -> None:
    # Clients first: a server stopped under its clients makes them log connection errors.
    leftovers = sorted(_running, key=lambda proc: isinstance(proc, ServerProcess))
    for proc in leftovers:
        with contextlib.suppress(Exception):
            proc.stop(timeout=5.0)
