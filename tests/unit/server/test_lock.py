"""One server per state (issue 11, item 1): the lock, the file modes of the data dir, and the
bound on what the token cache can miss.

The lock across real processes (a second server refused, a restart after SIGKILL) is in
tests/e2e/test_faults.py; here the lock itself, in one process: ``flock`` locks belong to an
open file, so a second open in the same process contends like another process would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy

from fedsilo.scopes import Scope
from fedsilo.server.access import Principal
from fedsilo.server.app import create_app
from fedsilo.server.auth import TokenCache
from fedsilo.server.datadir import private_directory
from fedsilo.server.lock import StateLocked, acquire_state_lock, advisory_key
from fedsilo.server.settings import Settings
from fedsilo.server.state import SqlStore, utcnow

POSTGRES_URL = os.environ.get("FEDSILO_TEST_POSTGRES_URL")


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'fedsilo.db'}"


def test_a_second_lock_on_an_sqlite_state_is_refused_naming_the_holder(tmp_path: Path) -> None:
    held = acquire_state_lock(sqlite_url(tmp_path), port=8765)
    assert held is not None
    details = json.loads((tmp_path / "server.lock").read_text())
    assert details["pid"] == os.getpid() and details["port"] == 8765
    with pytest.raises(StateLocked) as refused:
        acquire_state_lock(sqlite_url(tmp_path), port=9999)
    message = str(refused.value)
    assert "\n" not in message
    assert f"fedsilo server (pid {os.getpid()} on host {socket.gethostname()}, port 8765, " in (
        message
    )
    assert f"started at {details['started_at']}" in message
    held.release()
    again = acquire_state_lock(sqlite_url(tmp_path), role="recover-token")
    assert again is not None
    with pytest.raises(StateLocked, match=r"in use by fedsilo admin recover-token \(pid"):
        acquire_state_lock(sqlite_url(tmp_path))
    again.release()
    assert (tmp_path / "server.lock").stat().st_mode & 0o777 == 0o600


def test_memory_state_takes_no_lock() -> None:
    assert acquire_state_lock("memory://") is None
    assert acquire_state_lock("memory://") is None


def test_a_locked_but_unwritten_lock_file_still_refuses(tmp_path: Path) -> None:
    held = acquire_state_lock(sqlite_url(tmp_path))
    assert held is not None
    (tmp_path / "server.lock").write_text("")  # the holder between its lock and its write
    with pytest.raises(StateLocked, match="has not written its details yet"):
        acquire_state_lock(sqlite_url(tmp_path))
    held.release()


def test_a_server_on_a_locked_state_fails_before_opening_the_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "server", admin_token="fs_lock-test")
    held = acquire_state_lock(settings.resolved_db_url(), port=1234)
    assert held is not None
    app = create_app(settings)

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    try:
        with pytest.raises(StateLocked, match="port 1234"):
            asyncio.run(start())
        assert not (tmp_path / "server" / "fedsilo.db").exists()  # the store was never opened
    finally:
        held.release()
    asyncio.run(start())  # and starts (then stops) once the lock is free
    after = acquire_state_lock(settings.resolved_db_url())  # released on stop
    assert after is not None
    after.release()


@pytest.mark.skipif(POSTGRES_URL is None, reason="needs FEDSILO_TEST_POSTGRES_URL")
def test_a_second_lock_on_a_postgres_state_is_refused_naming_the_holder() -> None:
    assert POSTGRES_URL is not None
    held = acquire_state_lock(POSTGRES_URL, port=8765)
    assert held is not None
    try:
        with pytest.raises(StateLocked) as refused:
            acquire_state_lock(POSTGRES_URL, port=9999)
        message = str(refused.value)
        database = sqlalchemy.make_url(POSTGRES_URL).database
        assert f"PostgreSQL database {database!r} is in use by fedsilo server (pid " in message
        assert f"{os.getpid()} on host {socket.gethostname()}, port 8765, started at " in message
    finally:
        held.release()
    again = acquire_state_lock(POSTGRES_URL)
    assert again is not None
    again.release()


def test_advisory_keys_are_per_database_and_fit_a_bigint() -> None:
    keys = {advisory_key(name) for name in ("fedsilo", "fedsilo_test", "other")}
    assert len(keys) == 3
    assert all(-(2**63) <= key < 2**63 for key in keys)
    assert advisory_key("fedsilo") == advisory_key("fedsilo")


# ------------------------------------------------------------------------ file modes


def test_the_sqlite_files_are_created_0600_and_an_older_0644_one_is_tightened(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    store = SqlStore(url)
    store.close()
    for name in ("fedsilo.db", "fedsilo.db-wal", "fedsilo.db-shm"):
        if (tmp_path / name).exists():
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    os.chmod(tmp_path / "fedsilo.db", 0o644)  # as an earlier version left it
    SqlStore(url).close()
    assert (tmp_path / "fedsilo.db").stat().st_mode & 0o777 == 0o600


def test_the_data_dir_is_created_0700_and_a_shared_one_is_tightened(tmp_path: Path) -> None:
    made = private_directory(tmp_path / "new" / "data")
    assert made.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    private_directory(shared)
    assert shared.stat().st_mode & 0o777 == 0o700


# ------------------------------------------------------------------- the token cache


def test_a_cached_token_is_trusted_for_at_most_60_seconds() -> None:
    """The bound on a revocation the server did not make (no second server can run on its
    state, so only an offline write or an operator's own SQL): 60 s, then the store decides."""
    cache = TokenCache()
    principal = Principal("t1", "n", "u1", "user", "human", frozenset({Scope.admin}))
    cache.put("hash", principal, expires_at=None)
    now = utcnow()
    assert cache.get("hash", now + timedelta(seconds=59)) is principal
    assert cache.get("hash", now + timedelta(seconds=61)) is None
    # and expiry is checked on every hit, within the 60 s
    cache.put("hash", principal, expires_at=now + timedelta(seconds=5))
    assert cache.get("hash", now + timedelta(seconds=6)) is None


def _terminate_lock_backends(url: str) -> None:
    """End this process's lock connection from the database side, as a PostgreSQL restart
    (or a network cut) would."""
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        conn.execute(
            sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE :name"
            ),
            {"name": f"fedsilo server pid={os.getpid()} %"},
        )
    engine.dispose()


def _refused(url: str) -> bool:
    try:
        lock = acquire_state_lock(url, role="recover-token")
    except StateLocked:
        return True
    assert lock is not None
    lock.release()
    return False


@pytest.mark.skipif(POSTGRES_URL is None, reason="needs FEDSILO_TEST_POSTGRES_URL")
def test_a_postgres_lock_whose_connection_was_lost_is_taken_again() -> None:
    assert POSTGRES_URL is not None
    held = acquire_state_lock(POSTGRES_URL, port=8765, check_every=0.1)
    assert held is not None
    try:
        _terminate_lock_backends(POSTGRES_URL)
        deadline = time.monotonic() + 10
        while not _refused(POSTGRES_URL):  # until the watcher holds it again
            assert time.monotonic() < deadline, "the lock was not taken again"
            time.sleep(0.05)
    finally:
        held.release()
    assert not _refused(POSTGRES_URL)


@pytest.mark.skipif(POSTGRES_URL is None, reason="needs FEDSILO_TEST_POSTGRES_URL")
def test_a_lost_postgres_lock_taken_by_another_is_logged_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert POSTGRES_URL is not None
    held = acquire_state_lock(POSTGRES_URL, port=8765, check_every=0.5)
    assert held is not None
    try:
        _terminate_lock_backends(POSTGRES_URL)
        deadline = time.monotonic() + 10
        while True:  # the terminated backend's lock is freed as it exits
            try:
                other = acquire_state_lock(POSTGRES_URL, role="recover-token")
                break
            except StateLocked:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert other is not None
        with caplog.at_level(logging.ERROR, logger="fedsilo.server"):
            while "to fedsilo admin recover-token (pid" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)
        assert "two servers may now run on this state" in caplog.text
        other.release()
        while not _refused(POSTGRES_URL):  # ... and takes it back once it is free
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        held.release()
