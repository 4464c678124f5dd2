"""Faults an operator meets, reproduced with real processes (issue 11).

Exclusive state and operations (items 1 and 7): a second server on the same state is refused
with one line naming the holder (SQLite; PostgreSQL when ``FEDSILO_TEST_POSTGRES_URL`` is
set); a server killed with SIGKILL leaves no lock behind; ``fedsilo admin recover-token`` is
refused while a server runs and, offline, makes a token the next server accepts; the data dir
is the server's alone (0700 / 0600) and its log never shows a generated admin token; JSON logs
are one object a line. Every process is started by ``fedsilo.runners.local`` or
``subprocess`` and stopped by its pid.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy

from fedsilo.runners.local import ServerProcess, free_port, start_server

pytestmark = pytest.mark.e2e

POSTGRES_URL = os.environ.get("FEDSILO_TEST_POSTGRES_URL")
HOST = socket.gethostname()
#: bounds a fedsilo command that should exit at once (imports included, on a loaded machine)
COMMAND_TIMEOUT_S = 60


def fedsilo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fedsilo ARGS`` to its end (a refused server exits by itself)."""
    full_env = {k: v for k, v in os.environ.items() if k != "FEDSILO_ADMIN_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "fedsilo", *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        env={**full_env, **(env or {})},
    )


def holder_line(server: ServerProcess) -> str:
    """How a refusal names ``server``: pid, host and port (the start time follows)."""
    return f"fedsilo server (pid {server.pid} on host {HOST}, port {server.port}, started at "


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def users_status(server: ServerProcess, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{server.url}/api/v1/users", headers=headers, timeout=10).status_code


# ------------------------------------------------------------------- exclusive state


def test_a_second_server_on_the_same_data_dir_is_refused_naming_the_holder(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "server"
    with start_server(data_dir, log_path=tmp_path / "first.log") as first:
        second = fedsilo("server", "start", "--data-dir", str(data_dir), "--port", str(free_port()))
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr  # one line, no traceback
        assert lines[0].startswith(f"Error: The state in {data_dir.resolve()} is in use by ")
        assert holder_line(first) in lines[0]
        # The first one is untouched: healthy, and still the lock's holder.
        assert httpx.get(f"{first.url}/healthz", timeout=10).json()["status"] == "ok"
        assert json.loads((data_dir / "server.lock").read_text())["pid"] == first.pid


@pytest.mark.skipif(POSTGRES_URL is None, reason="needs FEDSILO_TEST_POSTGRES_URL")
def test_a_second_server_on_the_same_postgres_database_is_refused_naming_the_holder(
    tmp_path: Path,
) -> None:
    assert POSTGRES_URL is not None
    database = sqlalchemy.make_url(POSTGRES_URL).database
    env = {"FEDSILO_DB_URL": POSTGRES_URL, "FEDSILO_ADMIN_TOKEN": "fs_faults-admin"}
    # Each server its own data dir: the database alone is what they would share.
    with start_server(tmp_path / "one", env=env, log_path=tmp_path / "one.log") as first:
        second = fedsilo(
            "server", "start", "--data-dir", str(tmp_path / "two"), "--port", str(free_port()),
            env=env,
        )  # fmt: skip
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith(
            f"Error: The state in PostgreSQL database {database!r} is in use by "
        )
        assert holder_line(first) in lines[0]
        assert httpx.get(f"{first.url}/healthz", timeout=10).json()["status"] == "ok"
    # Stopped, it freed the lock: the next server starts.
    with start_server(tmp_path / "two", env=env, log_path=tmp_path / "three.log"):
        pass


def test_a_restart_after_sigkill_takes_the_lock(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    first = start_server(data_dir, log_path=tmp_path / "first.log")
    token = first.admin_token
    assert first.kill() == -9  # no shutdown hook ran; the lock file still names it
    assert json.loads((data_dir / "server.lock").read_text())["pid"] == first.pid
    with start_server(data_dir, port=first.port, log_path=tmp_path / "second.log") as second:
        assert json.loads((data_dir / "server.lock").read_text())["pid"] == second.pid
        assert users_status(second, token) == 200


@pytest.mark.skipif(POSTGRES_URL is None, reason="needs FEDSILO_TEST_POSTGRES_URL")
def test_a_restart_after_sigkill_takes_the_postgres_lock(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    env = {"FEDSILO_DB_URL": POSTGRES_URL, "FEDSILO_ADMIN_TOKEN": "fs_faults-admin"}
    first = start_server(tmp_path / "one", env=env, log_path=tmp_path / "one.log")
    assert first.kill() == -9  # its connection, and so its advisory lock, dies with it
    with start_server(tmp_path / "one", env=env, log_path=tmp_path / "two.log") as second:
        assert users_status(second, "fs_faults-admin") == 200


# ---------------------------------------------------------------------- recovery


def test_recover_token_is_refused_while_a_server_runs_and_works_offline(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    with start_server(data_dir, log_path=tmp_path / "first.log") as first:
        original = first.admin_token
        refused = fedsilo("admin", "recover-token", "--data-dir", str(data_dir))
        assert refused.returncode != 0
        assert refused.stdout == ""  # no token made
        (line,) = refused.stderr.strip().splitlines()
        assert holder_line(first) in line
        assert "stop it first" in line
        assert (data_dir / "admin_token").read_text().strip() == original

    recovered = fedsilo("admin", "recover-token", "--data-dir", str(data_dir))
    assert recovered.returncode == 0, recovered.stderr
    (token,) = recovered.stdout.splitlines()  # printed once, alone on stdout
    assert token.startswith("fs_") and token != original
    assert token not in recovered.stderr
    assert f"{data_dir.resolve() / 'admin_token'}, mode 0600" in recovered.stderr
    assert (data_dir / "admin_token").read_text() == token + "\n"
    assert mode(data_dir / "admin_token") == 0o600

    with start_server(data_dir, log_path=tmp_path / "second.log") as second:
        assert users_status(second, token) == 200
        assert users_status(second, original) == 200  # earlier tokens are unchanged
        headers = {"Authorization": f"Bearer {token}"}
        audit = httpx.get(
            f"{second.url}/api/v1/audit", params={"action": "token.recover"}, headers=headers
        ).json()
        assert [entry["outcome"] for entry in audit] == ["ok"]


def test_recover_token_needs_a_server_s_data_dir(tmp_path: Path) -> None:
    result = fedsilo("admin", "recover-token", "--data-dir", str(tmp_path / "nothing"))
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: No database at {tmp_path / 'nothing' / 'fedsilo.db'}")
    assert not (tmp_path / "nothing").exists()


# -------------------------------------------------------------------- file modes


def test_the_data_dir_is_the_server_s_alone_and_its_log_never_shows_the_token(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)  # as a user might have made it
    log = tmp_path / "server.log"
    with start_server(data_dir, log_path=log) as server:
        token = server.admin_token
        assert mode(data_dir) == 0o700
        assert mode(data_dir / "artifacts") == 0o700
        for name in (
            "fedsilo.db",
            "fedsilo.db-wal",
            "fedsilo.db-shm",
            "admin_token",
            "server.lock",
        ):
            path = data_dir / name
            if name.endswith(("-wal", "-shm")) and not path.exists():
                continue  # SQLite may have checkpointed them away
            assert mode(path) == 0o600, name
    text = log.read_text()
    assert token not in text  # stderr was a file, not a terminal
    assert f"admin token created in {data_dir.resolve() / 'admin_token'} (mode 0600)" in text
    assert "was mode 0755; set to 0700" in text


# -------------------------------------------------------------------------- logs


def test_json_logs_are_one_object_a_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    env = {"FEDSILO_LOG_FORMAT": "json", "FEDSILO_LOG_LEVEL": "info"}
    with start_server(tmp_path / "server", env=env, log_path=log) as server:
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        token = server.admin_token
    lines = log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, uvicorn's included
    assert len(entries) >= 3
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)
    loggers = {entry["logger"] for entry in entries}
    assert "uvicorn.error" in loggers and "fedsilo.server" in loggers
    assert token not in log.read_text()
