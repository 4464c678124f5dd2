"""Faults an operator meets, reproduced with real processes (issue 11).

Exclusive state and operations (items 1 and 7): a second server on the same state is refused
with one line naming the holder (SQLite; PostgreSQL when ``FEDSILO_TEST_POSTGRES_URL`` is
set); a server killed with SIGKILL leaves no lock behind; ``fedsilo admin recover-token`` is
refused while a server runs and, offline, makes a token the next server accepts; the data dir
is the server's alone (0700 / 0600) and its log never shows a generated admin token; JSON logs
are one object a line. Every process is started by ``fedsilo.runners.local`` or
``subprocess`` and stopped by its pid.

Liveness and the store (items 2 and 3): a ``fedsilo client train`` process killed with
SIGKILL mid-session is noticed within the grace period and the other clients finish the
session without waiting on it; a server whose disk fills up (a real tmpfs, filled) exits with
status 75 without failing the session, and restarted with the space back resumes it.

Bounded input (item 5): a JSON body announced or streamed past its limit is refused while it
is read, and offering 256 MiB leaves the server's resident memory where it was. (Poisoned and
malformed replies, item 4, are in ``test_reply_faults.py``.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

from fedsilo import connect
from fedsilo.data.synth import write_sample_data
from fedsilo.runners.local import ServerProcess, free_port, start_client, start_server
from fedsilo.wire import PARTICIPANT_HEADER

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


# ---------------------------------------------------------------- liveness and the store

#: the grace period of the liveness tests (FEDSILO_PARTICIPANT_GRACE), seconds
GRACE_S = 3.0
#: slack for a loaded machine on top of grace + one sweep (a quarter of the grace, at most 1 s)
LIVENESS_SLACK_S = 3.0
FFNET_CONFIG: dict[str, Any] = {
    "strategy": {
        "name": "FedAvg",
        "params": {"min_fit_clients": 2, "min_eval_clients": 2, "accept_failures": True},
    },
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [8], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2}},
    "save_best_model": None,
}
FFNET_DATA = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}


def session_round(data_dir: Path) -> int:
    """The session's round as the server last wrote it (0 before the first checkpoint)."""
    with contextlib.closing(sqlite3.connect(data_dir / "fedsilo.db", timeout=30)) as conn:
        row = conn.execute("SELECT round FROM sessions").fetchone()
    return int(row[0]) if row else 0


def wait_for_round(data_dir: Path, target: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while session_round(data_dir) < target:
        assert time.monotonic() < deadline, f"the session never reached round {target}"
        time.sleep(0.05)


def ffnet_session(server: ServerProcess, token: str, clients: int, rounds: int) -> str:
    with connect(server.url, token) as sdk:
        session = sdk.create_fl_session(
            name="faults",
            description="",
            min_num_clients=clients,
            num_rounds=rounds,
            package_name="ffnet",
            model_config=FFNET_CONFIG,
            data_config=FFNET_DATA,
        )
        return str(session.start().id)


@pytest.mark.slow
def test_a_killed_client_is_noticed_within_the_grace_period_and_skipped(
    tmp_path: Path, scoped_tokens: Any
) -> None:
    files = write_sample_data(tmp_path / "data")
    env = {"FEDSILO_PARTICIPANT_GRACE": f"{GRACE_S:g}"}
    data_dir = tmp_path / "server"
    rounds = 8
    with start_server(data_dir, env=env, log_path=tmp_path / "server.log") as server:
        token = scoped_tokens.analyst(server.url, server.admin_token)
        session_id = ffnet_session(server, token, clients=3, rounds=rounds)
        silos = {"silo0": "train_silo0", "silo1": "train_silo1", "silo2": "train_silo0"}
        clients = {
            name: start_client(
                session_id,
                str(files[f"{table}.parquet"]),
                str(files["test.parquet"]),
                256,
                name,
                server.url,
                scoped_tokens.client(server.url, server.admin_token, name),
                log_path=tmp_path / f"{name}.log",
            )
            for name, table in silos.items()
        }
        try:
            wait_for_round(data_dir, 2)
            killed_at = datetime.now(UTC)
            assert clients["silo2"].kill() == -9
            with connect(server.url, token) as sdk:
                session = sdk.fl_session(session_id)
                # Minutes before the fix (the task timeout, per round); seconds now.
                session.wait(timeout=120, progress=False)
                assert [clients[n].wait(timeout=60) for n in ("silo0", "silo1")] == [0, 0]
                metrics = session.metrics().as_dict()
                logs = session.logs()
        finally:
            for client in clients.values():
                client.stop()
    assert len(metrics["federated_metrics"]) == rounds
    offline = [line for line in logs if line.message.startswith("client 'silo2' offline: ")]
    assert len(offline) == 1, [line.message for line in logs]
    at = offline[0].time if offline[0].time.tzinfo else offline[0].time.replace(tzinfo=UTC)
    noticed = (at - killed_at).total_seconds()
    assert noticed <= GRACE_S + 1.0 + LIVENESS_SLACK_S, (noticed, offline[0].message)
    # Every later round went on with the two others, failing silo2's tasks at once.
    skipped = [line.message for line in logs if "failed on 1 client(s): silo2: " in line.message]
    assert skipped, [line.message for line in logs]
    assert all("offline" in message for message in skipped), skipped


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs (root only: skipped where mounting is not allowed), unmounted after."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip() or made.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(mount: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to give the space back)."""
    filler = mount / "filler"
    size = 1 << 20
    with filler.open("wb", buffering=0) as handle:
        while size:
            try:
                handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                size //= 2
    return filler


@pytest.mark.slow
def test_a_full_disk_makes_the_server_exit_non_zero_and_a_restart_with_space_resumes(
    tmp_path: Path, small_disk: Path, scoped_tokens: Any
) -> None:
    files = write_sample_data(tmp_path / "data")
    data_dir = small_disk / "server"
    env = {"FEDSILO_STORE_RETRY_TIMEOUT": "2"}
    rounds = 10
    server = start_server(data_dir, env=env, log_path=tmp_path / "server1.log")
    port = server.port
    token = scoped_tokens.analyst(server.url, server.admin_token)
    clients = []
    try:
        session_id = ffnet_session(server, token, clients=2, rounds=rounds)
        clients = [
            start_client(
                session_id,
                str(files[f"train_silo{i}.parquet"]),
                str(files["test.parquet"]),
                256,
                f"silo{i}",
                server.url,
                scoped_tokens.client(server.url, server.admin_token, f"silo{i}"),
                log_path=tmp_path / f"client{i}.log",
            )
            for i in range(2)
        ]
        wait_for_round(data_dir, 2)
        filler = fill_disk(small_disk)
        # The next checkpoint meets the full disk: unhealthy, then the server gives up.
        code = server.wait(timeout=60)
        assert code == 75, server.log_tail()
        log = (tmp_path / "server1.log").read_text()
        assert "the state store refuses writes" in log and "giving up" in log, log[-2000:]
        stopped_at = session_round(data_dir)
        assert 2 <= stopped_at < rounds
        # Not failed: the session stays running in the store, to resume.
        with contextlib.closing(sqlite3.connect(data_dir / "fedsilo.db")) as conn:
            assert conn.execute("SELECT status FROM sessions").fetchone() == ("running",)

        filler.unlink()  # space is back: a supervisor's restart resumes the session
        server = start_server(data_dir, port=port, env=env, log_path=tmp_path / "server2.log")
        with connect(server.url, token) as sdk:
            session = sdk.fl_session(session_id)
            session.wait(timeout=240, progress=False)
            assert [c.wait(timeout=60) for c in clients] == [0, 0]
            metrics = session.metrics().as_dict()
            logs = [line.message for line in session.logs()]
        assert len(metrics["federated_metrics"]) == rounds
        assert any(m.startswith("resuming from the checkpoint of round") for m in logs), logs
    finally:
        for client in clients:
            client.stop()
        server.stop()


def test_a_stopping_server_answers_open_long_polls_503_for_their_clients_to_retry(
    tmp_path: Path,
) -> None:
    """SIGTERM: a poll held open is answered 503 (retried by the client, which then finds
    the restarted server), not cut off by the shutdown with a 500 on which a client stops."""
    server = start_server(tmp_path / "server", log_path=tmp_path / "server.log")
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    try:
        with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=60) as api:
            body = {
                "name": "drain",
                "package_name": "echo",
                "min_num_clients": 2,  # stays pending with one: no task ever comes
                "num_rounds": 1,
                "model_config": {},
                "data_config": {"columns": ["a"]},
            }
            sid = api.post("/sessions", json=body).json()["id"]
            assert api.post(f"/sessions/{sid}/start").status_code == 200
            join = {
                "client_name": "poller",
                "dataset": {
                    "train_rows": 3,
                    "test_rows": 0,
                    "columns": [{"name": "a", "dtype": "float64"}],
                },
                "public_key": "A" * 43,
            }
            joined = api.post(f"/sessions/{sid}/participants", json=join).json()
            answers: list[httpx.Response] = []
            poll = threading.Thread(
                target=lambda: answers.append(
                    api.get(
                        f"/sessions/{sid}/participants/{joined['id']}/tasks/next",
                        params={"wait": 30},
                        headers={PARTICIPANT_HEADER: joined["credential"]},
                    )
                )
            )
            poll.start()
            time.sleep(1.0)  # the poll is open
            stopped = time.monotonic()
            server.stop()  # SIGTERM (uvicorn re-raises it once shut down: status -15)
            poll.join(timeout=30)
        assert time.monotonic() - stopped < 10
        (answer,) = answers
        assert answer.status_code == 503, answer.text
        assert answer.json()["detail"].startswith("The server is stopping; retry")
        assert "Exception in ASGI application" not in (tmp_path / "server.log").read_text()
    finally:
        server.stop()


# ------------------------------------------------------------------- bounded input


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux: /proc/<pid>/status, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_oversize_bodies_are_refused_without_the_server_s_memory_growing(tmp_path: Path) -> None:
    # Item 5: a JSON body over its limit (4 MiB by default) is refused while it is read --
    # at once when Content-Length says so, and when it streams chunked, as soon as the count
    # passes the limit -- so sending 256 MiB never puts 256 MiB in the server.
    total = 256 * 1024 * 1024
    with start_server(tmp_path / "server", log_path=tmp_path / "server.log") as server:
        headers = {
            "Authorization": f"Bearer {server.admin_token}",
            "Content-Type": "application/json",
        }
        url = f"{server.url}/api/v1/sessions"
        with httpx.Client(timeout=60) as http:
            assert http.get(f"{server.url}/healthz").status_code == 200
            before = rss_bytes(server.pid)

            # Announced: headers only, then wait -- the answer must come before any body.
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
                raw.sendall(
                    (
                        f"POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Authorization: Bearer {server.admin_token}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
                    ).encode()
                )
                answer = b""
                while b'"detail"' not in answer and len(answer) < 8192:
                    piece = raw.recv(4096)
                    if not piece:
                        break
                    answer += piece
            assert answer.startswith(b"HTTP/1.1 413"), answer
            assert b'"detail"' in answer

            sent = 0

            def chunks() -> Iterator[bytes]:
                nonlocal sent
                piece = b" " * (1024 * 1024)
                while sent < total:
                    sent += len(piece)
                    yield piece

            try:
                streamed = http.post(url, headers=headers, content=chunks())
                status = streamed.status_code
            except httpx.HTTPError:
                status = 413  # the server may close the connection while we still send
            assert status == 413
            after = rss_bytes(server.pid)
        # The server read at most about one limit's worth of each body; what it holds now
        # grew by far less than the 256 MiB offered (allocator slack and caches aside).
        assert after - before < 64 * 1024 * 1024, (before, after)
