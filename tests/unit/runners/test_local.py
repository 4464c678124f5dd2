"""Local process runners: a real ``fedsilo server start`` process on a free port."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import httpx
import pytest

from fedsilo.errors import ServerUnavailable
from fedsilo.runners.local import (
    ClientProcess,
    free_port,
    start_client,
    start_participant,
    start_server,
)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (the pid was reused)
        return True
    return True


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_server_process_lifecycle(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    server = start_server(data_dir)
    try:
        assert server.running
        assert server.url == f"http://127.0.0.1:{server.port}"
        health = httpx.get(f"{server.url}/healthz", timeout=5).json()
        assert health["status"] == "ok"

        token_file = data_dir / "admin_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert server.admin_token == token_file.read_text().strip()
        assert len(server.admin_token) >= 20
        sessions = httpx.get(
            f"{server.url}/api/v1/sessions",
            headers={"Authorization": f"Bearer {server.admin_token}"},
            timeout=5,
        )
        assert sessions.status_code == 200
        assert f"pid={server.pid}, running" in repr(server)
    finally:
        code = server.stop(timeout=15)
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal (exit -15)
    assert code in (0, -signal.SIGTERM), server.log_tail()
    assert not server.running
    assert not _pid_exists(server.pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2)
    assert server.stop() == code  # idempotent


def test_admin_token_from_env_and_kill(tmp_path: Path) -> None:
    token = "fs_given-admin-token-for-runner-test"
    with start_server(tmp_path / "server", env={"FEDSILO_ADMIN_TOKEN": token}) as server:
        assert server.admin_token == token
        response = httpx.get(
            f"{server.url}/api/v1/sessions",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert response.status_code == 200
        assert server.kill() == -9
        assert not _pid_exists(server.pid)


def test_a_server_that_dies_reports_its_log(tmp_path: Path) -> None:
    # Another socket holds the port, so the server cannot bind and exits.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServerUnavailable, match=r"exited with code \d+ before answering"):
            start_server(tmp_path / "server", port=port, timeout=30)


def test_client_process_runs_and_reports(tmp_path: Path) -> None:
    # No server listens on port 1 and the client may not retry: it must say so and exit 7.
    log = tmp_path / "silo0.log"
    client = start_client(
        "0123456789",
        tmp_path / "missing-train.parquet",
        tmp_path / "missing-test.parquet",
        1024,
        "silo0",
        "http://127.0.0.1:1",
        "secret-token",
        log_path=log,
        extra_args=("--reconnect-timeout", "0"),
    )
    try:
        code = client.wait(timeout=60)
    finally:
        client.stop()
    assert code == 7, client.log_tail()
    assert "cannot reach fedsilo server at http://127.0.0.1:1" in client.log_tail()
    assert "secret-token" not in " ".join(client.args)
    assert not _pid_exists(client.pid)


def test_participant_process_takes_tables_by_role(tmp_path: Path) -> None:
    client = start_participant(
        "0123456789",
        {"train": tmp_path / "train.parquet", "test": None},
        "silo0",
        "http://127.0.0.1:1",
        "secret-token",
        log_path=tmp_path / "silo0.log",
        extra_args=("--reconnect-timeout", "0"),
    )
    try:
        code = client.wait(timeout=60)
    finally:
        client.stop()
    assert client.args[3:6] == ["client", "join", "--session"]
    assert ["--table", f"train={tmp_path / 'train.parquet'}"] == client.args[7:9]
    assert "test=" not in " ".join(client.args)
    assert code == 7, client.log_tail()
    assert "cannot reach fedsilo server at http://127.0.0.1:1" in client.log_tail()


def test_wait_timeout_then_stop(tmp_path: Path) -> None:
    # A process that outlives the timeout exercises wait/stop without the CLI.
    sleeper = ClientProcess(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        dict(os.environ),
        tmp_path / "sleeper.log",
        session_id="0123456789",
        client_name="sleeper",
    )
    with pytest.raises(TimeoutError, match=r"'sleeper' \(pid \d+\) still running after 0.2 s"):
        sleeper.wait(timeout=0.2)
    assert sleeper.running
    assert sleeper.stop(timeout=5) == -signal.SIGTERM
    assert not _pid_exists(sleeper.pid)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    stubborn = ClientProcess(
        [
            sys.executable,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        dict(os.environ),
        tmp_path / "stubborn.log",
        session_id="0123456789",
        client_name="stubborn",
    )
    deadline = time.monotonic() + 20
    while "ready" not in stubborn.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stubborn.stop(timeout=0.5) == -signal.SIGKILL
    assert not _pid_exists(stubborn.pid)
