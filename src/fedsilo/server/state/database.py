"""Database engine and sessions (SQLite embedded by default, PostgreSQL by URL).

An SQLite database file is created with mode 0600 before SQLite opens it, and an existing one
(with its ``-wal`` / ``-shm`` files) is tightened to 0600: it holds every session's configs and
results and the token hashes, for the server's user alone. SQLite creates the ``-wal`` and
``-shm`` files with the database file's mode.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database"]


class Database:
    """One engine and session factory; ``with db.session() as s:`` commits or rolls back."""

    def __init__(self, url: str) -> None:
        self.url = url
        sqlite_file = _sqlite_file(url)
        if sqlite_file is not None:
            _private_sqlite_files(sqlite_file, create=True)
        self.engine: Engine = _make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        # Tables are created or upgraded by the store's migrations
        # (fedsilo.server.state.migrations), in one transaction, right after this.
        if sqlite_file is not None:
            _private_sqlite_files(sqlite_file, create=False)  # -wal/-shm exist by now

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._factory() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL; ``None`` for another backend or in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def _private_sqlite_files(path: Path, *, create: bool) -> None:
    """Mode 0600 for the database file (created empty when missing and ``create``: SQLite
    takes an empty file as an empty database) and for its ``-wal`` / ``-shm`` files."""
    if create and path.parent.is_dir():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(name.stat().st_mode)
            if mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            continue


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the long-poll readers run while the engine writes; NORMAL sync is durable
        # across process kills (only an OS crash can lose the last transactions).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine
