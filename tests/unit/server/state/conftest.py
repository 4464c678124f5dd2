"""The ``store`` fixture of the state-layer tests: each test runs once per implementation of
the store protocol — the in-memory one, SQLite, and PostgreSQL when
``FEDSILO_TEST_POSTGRES_URL`` names a throwaway database (every test then starts empty)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from fedsilo.server.state import StateStore, open_store
from fedsilo.server.state.tables import Base

POSTGRES_URL = os.environ.get("FEDSILO_TEST_POSTGRES_URL")
BACKENDS = ["memory", "sqlite", *(["postgresql"] if POSTGRES_URL else [])]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    opened: StateStore
    if request.param == "memory":
        opened = open_store("memory://")
    elif request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    else:
        assert POSTGRES_URL is not None
        engine = sqlalchemy.create_engine(POSTGRES_URL)
        Base.metadata.drop_all(engine)
        engine.dispose()
        opened = open_store(POSTGRES_URL)
    try:
        yield opened
    finally:
        opened.close()
