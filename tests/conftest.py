"""Shared fixtures: a real fedsilo server served in a thread of the test process.

The server is the real app under uvicorn on a free 127.0.0.1 port (httpx's own test-suite
pattern), so unit tests of the SDK and the API go through real HTTP without the cost of a
process start. End-to-end tests start real processes instead (``fedsilo.runners.local``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
import uvicorn
from fastapi import FastAPI

from fedsilo.server.app import create_app
from fedsilo.server.settings import Settings
from fedsilo.server.state import MEMORY_URL, MemoryStore, SqlStore
from fedsilo.server.state.tables import Base

ADMIN_TOKEN = "fs_test-admin-token"
#: the key of :meth:`ThreadServer.stored` under which a database server's rows are dumped
DATABASE_DUMP = "database-rows"


@pytest.fixture(autouse=True, scope="session")
def client_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Clients keep the replies they released on disk; in tests, not under $HOME."""
    path = tmp_path_factory.mktemp("client-state")
    previous = os.environ.get("FEDSILO_CLIENT_STATE_DIR")
    os.environ["FEDSILO_CLIENT_STATE_DIR"] = str(path)  # inherited by client processes too
    yield path
    if previous is None:
        os.environ.pop("FEDSILO_CLIENT_STATE_DIR", None)
    else:
        os.environ["FEDSILO_CLIENT_STATE_DIR"] = previous


@dataclass
class ThreadServer:
    url: str
    token: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    app: FastAPI

    @property
    def app_state(self) -> Any:
        return self.app.state

    def stored(self) -> dict[str, bytes]:
        """Everything the server persisted: each file under its data dir (the database, its
        WAL, artifacts) by path, and for the memory store the text of every record it holds
        (under ``memory://``), so a test can assert what never reaches any of them."""
        data_dir = self.settings.resolved_data_dir()
        found = {str(p): p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
        store = self.app_state.store
        if isinstance(store, MemoryStore):
            held = {name: value for name, value in vars(store).items() if name != "_lock"}
            found[MEMORY_URL] = repr(held).encode()
        elif isinstance(store, SqlStore) and not store.url.startswith("sqlite"):
            # A database server keeps its files elsewhere: scan every row of every table.
            with store.database.engine.connect() as conn:
                rows = [conn.execute(t.select()).all() for t in Base.metadata.sorted_tables]
            found[DATABASE_DUMP] = repr(rows).encode()
        return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_in_thread(settings: Settings) -> ThreadServer:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("in-thread fedsilo server did not start")
        time.sleep(0.01)
    return ThreadServer(
        url=f"http://127.0.0.1:{settings.port}",
        token=ADMIN_TOKEN,
        settings=settings,
        server=server,
        thread=thread,
        app=app,
    )


def stop_thread_server(ts: ThreadServer) -> None:
    ts.server.should_exit = True
    ts.thread.join(timeout=15)


# The in-memory state store runs every server test too (it must keep the SQL store's
# semantics); PostgreSQL joins the backends when a URL to a throwaway database is given
# (.ci/run starts one); every test then starts from empty tables.
POSTGRES_URL = os.environ.get("FEDSILO_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "memory", *(["postgresql"] if POSTGRES_URL else [])]


@pytest.fixture(params=BACKENDS)
def server_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    db_url = MEMORY_URL if request.param == "memory" else None
    if request.param == "postgresql":
        assert POSTGRES_URL is not None
        engine = sqlalchemy.create_engine(POSTGRES_URL)
        Base.metadata.drop_all(engine)
        engine.dispose()
        db_url = POSTGRES_URL
    return Settings(
        data_dir=tmp_path / "server",
        db_url=db_url,
        port=_free_port(),
        admin_token=ADMIN_TOKEN,
        task_timeout=60,
    )


@pytest.fixture
def thread_server(server_settings: Settings) -> Iterator[ThreadServer]:
    """A real server (uvicorn + the app) on a free port, in a thread; stopped after the test."""
    ts = serve_in_thread(server_settings)
    try:
        yield ts
    finally:
        stop_thread_server(ts)


# ----------------------------------------------------------------- least-privilege tokens

#: what an analyst's notebook needs to run a session it creates: create, start, follow it
#: (status, metrics, logs) and fetch its model or results -- nothing of another user's
ANALYST_SCOPES = ("create_session", "start_session", "read_user_session", "user_model_download")


class ScopedTokens:
    """Mints least-privilege tokens over the API (``POST /api/v1/tokens``) with an admin
    token, creating their user when missing: tests drive sessions and clients with what a
    real deployment would hand out, never with the admin token itself."""

    def __call__(self, url: str, admin_token: str, scopes: Sequence[str], user: str) -> str:
        """The secret of a new token of ``user`` holding only ``scopes``."""
        headers = {"Authorization": f"Bearer {admin_token}"}
        with httpx.Client(base_url=url + "/api/v1", headers=headers, timeout=60) as http:
            made = http.post("/users", json={"name": user})
            assert made.status_code in (201, 409), f"creating user {user!r}: {made.text}"
            body = {"user_id": user, "name": f"{user}-{'-'.join(scopes)}", "scopes": list(scopes)}
            created = http.post("/tokens", json=body)
            assert created.status_code == 201, (
                f"minting {list(scopes)} for {user!r}: {created.text}"
            )
            secret: str = created.json()["token"]
            return secret

    def analyst(self, url: str, admin_token: str, user: str = "analyst") -> str:
        """A notebook's token: :data:`ANALYST_SCOPES`, on the sessions ``user`` creates."""
        return self(url, admin_token, ANALYST_SCOPES, user)

    def client(self, url: str, admin_token: str, user: str) -> str:
        """A silo client's token: ``client`` only (join, then poll and reply as itself)."""
        return self(url, admin_token, ("client",), user)


@pytest.fixture
def scoped_tokens() -> ScopedTokens:
    """``scoped_tokens.analyst(url, admin)``, ``scoped_tokens.client(url, admin, "silo0")``,
    ``scoped_tokens(url, admin, scopes, user)`` (a fixture: importlib mode cannot import
    conftest)."""
    return ScopedTokens()
