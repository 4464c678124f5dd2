"""One server per state: the lock a server holds on its state store for its whole life.

Two servers on one state would both run its active sessions (the second resumes what the
first is running, times out and fails it while the first goes on recording rounds), so a
server takes a lock on its state before it opens the store, and a second one refuses to
start with one line naming the holder:

- **SQLite**: an exclusive ``flock`` on ``server.lock`` beside the database file
  (``<data_dir>/server.lock`` by default). The file holds the holder's pid, host, port and
  start time so the refusal can name it. The kernel drops the lock when the holder's process
  ends, however it ends (SIGKILL included), so a stale lock file never blocks a restart.
- **PostgreSQL**: a session-level ``pg_try_advisory_lock`` on a connection of its own, held
  for the server's life; the key is derived from the database name, so every server of that
  database contends for the same one. The holder is found in ``pg_locks`` and named by its
  connection's ``application_name`` (pid, host, port) and start time. PostgreSQL drops the
  lock when that connection closes: a killed server's lock is freed once its connection is
  gone (at once on a process kill; after TCP keepalive on a lost host). A server checks its
  lock's connection every :data:`PG_CHECK_INTERVAL_S` seconds and takes the lock again on a
  new one when it was lost (PostgreSQL restarted), logging who holds it if it cannot.
- **memory://**: nothing to share, no lock.

The offline ``fedsilo admin recover-token`` takes the same lock, so it refuses while a server
runs and a server refuses while it writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from fedsilo.errors import FedsiloError

logger = logging.getLogger("fedsilo.server")

__all__ = [
    "LOCK_FILE",
    "PG_CHECK_INTERVAL_S",
    "Holder",
    "StateLock",
    "StateLocked",
    "acquire_state_lock",
    "advisory_key",
]

#: the lock file's name, beside the SQLite database
LOCK_FILE = "server.lock"
#: seconds between checks that a PostgreSQL lock's connection (and so the lock) is alive
PG_CHECK_INTERVAL_S = 10.0
# Folds the database name into the advisory-lock key, so another application's advisory
# locks on the same database (their own keys) do not collide with fedsilo's.
_KEY_DOMAIN = b"fedsilo-state-lock:"
# PostgreSQL truncates application_name to 63 bytes (NAMEDATALEN - 1).
_APP_NAME_MAX = 63
_APP_NAME = re.compile(
    r"^fedsilo (?P<role>\S+) pid=(?P<pid>\d+) port=(?P<port>\d+) host=(?P<host>.*)$"
)


#: how a refusal names each kind of holder
_ROLE_NAMES = {"server": "fedsilo server", "recover-token": "fedsilo admin recover-token"}


class StateLocked(FedsiloError):
    """Another process holds the state's lock; the message names it and what to do."""


@dataclass(frozen=True)
class Holder:
    """Who holds a state lock: written into the lock (file or connection) by its holder."""

    role: str
    pid: int
    host: str
    port: int
    started_at: str

    @classmethod
    def this_process(cls, role: str, port: int) -> Holder:
        started = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        return cls(role, os.getpid(), socket.gethostname(), port, started)

    def describe(self) -> str:
        """``fedsilo server (pid 4242 on host db1, port 8765, started at ...)``."""
        what = _ROLE_NAMES.get(self.role, f"fedsilo {self.role}")
        port = f", port {self.port}" if self.port else ""
        return f"{what} (pid {self.pid} on host {self.host}{port}, started at {self.started_at})"

    def application_name(self) -> str:
        return f"fedsilo {self.role} pid={self.pid} port={self.port} host={self.host}"[
            :_APP_NAME_MAX
        ]


class StateLock:
    """A held lock; :meth:`release` frees it (also freed by the OS when the process ends)."""

    def __init__(self, description: str) -> None:
        #: what is locked, for log lines: a file path or a database name (never a password)
        self.description = description

    def release(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _FileLock(StateLock):
    def __init__(self, path: Path, fd: int) -> None:
        super().__init__(str(path))
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no stale holder left behind for a reader to misread
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class _AdvisoryLock(StateLock):
    """The advisory lock and its connection, watched: a connection lost (PostgreSQL
    restarted, a network cut) loses the lock with it, so a thread checks the connection every
    ``check_every`` seconds and takes the lock again on a new one; when another process took
    it meanwhile, it says so in the log, naming that process, until it gets the lock back."""

    def __init__(
        self, database: str, engine: Engine, connection: Connection, key: int, check_every: float
    ) -> None:
        super().__init__(f"PostgreSQL database {database!r}")
        self._engine = engine
        self._connection: Connection | None = connection
        self._key = key
        self._guard = threading.Lock()
        self._released = threading.Event()
        self._watch = threading.Thread(
            target=self._keep, args=(check_every,), name="fedsilo-state-lock", daemon=True
        )
        self._watch.start()

    def release(self) -> None:
        self._released.set()
        with self._guard:
            connection, self._connection = self._connection, None
            if connection is not None:
                # Closing the connection frees a session lock anyway; unlocking says so.
                with contextlib.suppress(Exception):
                    connection.execute(_UNLOCK, {"key": self._key})
                with contextlib.suppress(Exception):
                    connection.close()
            self._engine.dispose()

    def _keep(self, every: float) -> None:
        problem = None  # the last problem logged, so a lasting one is logged once
        while not self._released.wait(every):
            with self._guard:
                if self._released.is_set() or self._alive():
                    continue
                now = self._retake()
            if now is None:
                if problem is not None:
                    logger.warning("state lock on %s taken again", self.description)
            elif now != problem:
                logger.error("%s", now)
            problem = now

    def _alive(self) -> bool:
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
            return True
        except Exception:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None
            return False

    def _retake(self) -> str | None:
        """Take the lock on a new connection: ``None`` when held again, else the problem."""
        try:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if connection.execute(_TRY_LOCK, {"key": self._key}).scalar_one():
                self._connection = connection
                return None
            holder = _pg_holder(connection.execute(_HOLDER_SQL, _key_parts(self._key)).first())
            connection.close()
        except Exception as exc:
            return (
                f"lost the state lock on {self.description} with its connection "
                f"({type(exc).__name__}); taking it again once PostgreSQL answers"
            )
        return (
            f"lost the state lock on {self.description} to {holder}: two servers may now run "
            "on this state; stop one of them (this one takes the lock again once it is free)"
        )


def acquire_state_lock(
    db_url: str, *, role: str = "server", port: int = 0, check_every: float = PG_CHECK_INTERVAL_S
) -> StateLock | None:
    """Take the lock of the state at ``db_url``; ``None`` for ``memory://`` (nothing shared).

    Parameters
    ----------
    db_url : str
        The state store's URL (``sqlite:///...``, ``postgresql+psycopg://...``, ``memory://``).
    role : {"server", "recover-token"}
        What the holder is, for another process's refusal.
    port : int
        The port the holder serves on (0 when none).
    check_every : float
        PostgreSQL: seconds between checks of the lock's connection (see :class:`_AdvisoryLock`).

    Raises
    ------
    StateLocked
        When another process holds it; the message names the holder (pid, host, started at).
    """
    if db_url.startswith("memory://"):
        return None
    holder = Holder.this_process(role, port)
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None  # an in-memory SQLite database is private to its process
        return _lock_file(Path(url.database).expanduser().resolve().parent / LOCK_FILE, holder)
    if url.get_backend_name() == "postgresql":
        return _lock_postgres(db_url, holder, check_every)
    raise StateLocked(
        f"Cannot lock the state store {url.get_backend_name()!r}: expected sqlite, postgresql "
        "or memory://, so two servers could share it unnoticed."
    )


# ---------------------------------------------------------------------------- SQLite


def _lock_file(path: Path, holder: Holder) -> StateLock:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # No O_TRUNC: the file is opened before the lock is known to be ours, and a holder's
    # details must survive a refused contender's open.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateLocked(
            f"The state in {path.parent} is in use by {_file_holder(path)}; {_advice(holder)}"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    details = json.dumps(
        {
            "role": holder.role,
            "pid": holder.pid,
            "host": holder.host,
            "port": holder.port,
            "started_at": holder.started_at,
        }
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, (details + "\n").encode(), 0)
    return _FileLock(path, fd)


def _advice(contender: Holder) -> str:
    if contender.role == "server":
        return "stop it first, or give this server a state of its own (one server per state)."
    return "stop it first (this command writes the state only while no server runs)."


def _file_holder(path: Path) -> str:
    try:
        data: Any = json.loads(path.read_text())
        return Holder(
            str(data["role"]),
            int(data["pid"]),
            str(data["host"]),
            int(data["port"]),
            str(data["started_at"]),
        ).describe()
    except (OSError, ValueError, KeyError, TypeError):
        # Locked but not yet written (the holder is between its lock and its write).
        return f"another process (it holds {path} and has not written its details yet)"


# ------------------------------------------------------------------------ PostgreSQL


def advisory_key(database: str) -> int:
    """The advisory-lock key of a database: 64 bits of a hash of its name, signed (bigint)."""
    digest = hashlib.sha256(_KEY_DOMAIN + database.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")
# pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits).
_HOLDER_SQL = text(
    "SELECT a.pid, a.application_name, a.backend_start, a.client_addr FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.classid::text::bigint = :high AND l.objid::text::bigint = :low "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _key_parts(key: int) -> dict[str, int]:
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF}


def _lock_postgres(db_url: str, holder: Holder, check_every: float) -> StateLock:
    engine = create_engine(
        db_url, poolclass=NullPool, connect_args={"application_name": holder.application_name()}
    )
    try:
        # Autocommit: the lock is the session's, and an idle transaction held for the
        # server's life would pin a snapshot (and trip idle_in_transaction_session_timeout).
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        database = str(connection.execute(text("SELECT current_database()")).scalar_one())
        key = advisory_key(database)
        if connection.execute(_TRY_LOCK, {"key": key}).scalar_one():
            return _AdvisoryLock(database, engine, connection, key, check_every)
        row = connection.execute(_HOLDER_SQL, _key_parts(key)).first()
        connection.close()
    except BaseException:
        engine.dispose()
        raise
    engine.dispose()
    raise StateLocked(
        f"The state in PostgreSQL database {database!r} is in use by {_pg_holder(row)}; "
        f"{_advice(holder)}"
    )


def _pg_holder(row: Any) -> str:
    if row is None:
        return "another process (its lock was freed as this one looked)"
    backend_pid, application_name, backend_start, client_addr = row
    started = (
        backend_start.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        if backend_start is not None
        else "an unknown time"
    )
    match = _APP_NAME.match(application_name or "")
    if match is None:
        where = f" from {client_addr}" if client_addr else ""
        return f"another process (PostgreSQL backend pid {backend_pid}{where}, since {started})"
    return Holder(
        match["role"], int(match["pid"]), match["host"], int(match["port"]), started
    ).describe()
