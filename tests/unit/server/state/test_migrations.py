"""Schema migrations of the SQL state store, on SQLite and on PostgreSQL when
``FEDSILO_TEST_POSTGRES_URL`` names a throwaway database: the revisions build exactly the
models' schema, the baseline is the first release's schema, a real first-release database
(built with that release's own table definitions, ``fixtures/release_1_tables.py``) keeps its
rows through the upgrade and gains the identity features, a newer database is refused, and
``fedsilo admin db`` reports and upgrades."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from fedsilo.cli.app import app as cli
from fedsilo.errors import ConfigError
from fedsilo.server.auth import hash_token
from fedsilo.server.lock import acquire_state_lock
from fedsilo.server.state import AuditRecord, SqlStore, UserRecord
from fedsilo.server.state.migrations import (
    BASELINE,
    alembic_config,
    check_revision,
    current_revision,
    head_revision,
    known_revisions,
    upgrade,
)
from fedsilo.server.state.tables import Base

POSTGRES_URL = os.environ.get("FEDSILO_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", *(["postgresql"] if POSTGRES_URL else [])]
FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@functools.cache
def release_1_tables() -> ModuleType:
    """The first release's tables module (its own declarative base and metadata)."""
    name = "fedsilo_release_1_tables"
    spec = importlib.util.spec_from_file_location(name, FIXTURES / "release_1_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the mapped annotations are resolved through it
    spec.loader.exec_module(module)
    return module


def drop_everything(url: str) -> None:
    """Every table, ``alembic_version`` included (the other suites drop only the models')."""
    engine = sqlalchemy.create_engine(url)
    try:
        tables = sqlalchemy.MetaData()
        tables.reflect(engine)
        tables.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fedsilo.db'}"
        return
    assert POSTGRES_URL is not None
    drop_everything(POSTGRES_URL)
    try:
        yield POSTGRES_URL
    finally:
        drop_everything(POSTGRES_URL)


def schema_diffs(engine: Engine, metadata: sqlalchemy.MetaData = Base.metadata) -> list[Any]:
    """What alembic's autogenerate would change to make the database match ``metadata``."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def run_alembic(engine: Engine, verb: str, revision: str) -> None:
    with engine.begin() as connection:
        getattr(command, verb)(alembic_config(connection), revision)


# ---------------------------------------------------------------------- the revisions


def test_the_revisions_build_the_models_schema(url: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        run_alembic(engine, "upgrade", "head")
        assert schema_diffs(engine) == []
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_the_baseline_is_the_first_releases_schema(url: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        run_alembic(engine, "upgrade", BASELINE)
        assert schema_diffs(engine, release_1_tables().Base.metadata) == []
    finally:
        engine.dispose()


def test_every_revision_goes_down_and_up_again(url: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        run_alembic(engine, "upgrade", "head")
        run_alembic(engine, "downgrade", "base")
        assert set(sqlalchemy.inspect(engine).get_table_names()) <= {"alembic_version"}
        run_alembic(engine, "upgrade", "head")
        assert schema_diffs(engine) == []
    finally:
        engine.dispose()


def test_one_linear_history_from_the_baseline() -> None:
    revisions = known_revisions()
    assert revisions[0] == head_revision() and revisions[-1] == BASELINE
    assert len(set(revisions)) == len(revisions)


# ------------------------------------------------------------------- opening a store


def test_a_new_database_is_made_at_head_and_stamped(url: str) -> None:
    store = SqlStore(url)
    try:
        assert store.schema.after == head_revision() and store.schema.changed
        assert current_revision(store.database.engine) == head_revision()
        assert schema_diffs(store.database.engine) == []
    finally:
        store.close()
    again = SqlStore(url)
    try:
        assert (again.schema.before, again.schema.found) == (head_revision(), "versioned")
        assert not again.schema.changed
    finally:
        again.close()


def test_an_empty_database_is_created_from_the_models_and_stamped(url: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        done = upgrade(engine)
        assert (done.before, done.after, done.found) == (None, head_revision(), "new")
        assert current_revision(engine) == head_revision()
        assert schema_diffs(engine) == []
        assert not upgrade(engine).changed
    finally:
        engine.dispose()


def test_a_database_whose_tables_were_dropped_is_made_anew(url: str) -> None:
    # What the other suites' PostgreSQL fixtures do between tests: drop the models' tables,
    # leaving alembic_version at head.
    SqlStore(url).close()
    engine = sqlalchemy.create_engine(url)
    Base.metadata.drop_all(engine)
    try:
        assert upgrade(engine).found == "new"
        with engine.connect() as connection:
            stamps = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version"))
            assert stamps.scalars().all() == [head_revision()]
    finally:
        engine.dispose()
    store = SqlStore(url)
    try:
        assert schema_diffs(store.database.engine) == []
        assert store.list_sessions() == []
    finally:
        store.close()


def test_a_database_of_a_newer_fedsilo_is_refused(url: str) -> None:
    SqlStore(url).close()
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE alembic_version SET version_num = '0099_future'")
        )
    engine.dispose()
    with pytest.raises(ConfigError) as refused:
        SqlStore(url)
    message = str(refused.value)
    assert "'0099_future'" in message and repr(head_revision()) in message
    assert "newer than this fedsilo" in message


def test_sqlite_foreign_keys_are_on_again_after_a_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fedsilo.db'}"
    build_release_1(url)
    store = SqlStore(url)
    try:
        assert store.schema.found == "unversioned"
        with store.database.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


# ----------------------------------------------------- a first-release database upgraded


#: the secret of the first-release database's admin token
RELEASE_1_ADMIN = "fs_release-1-admin-token"


def build_release_1(url: str, *, status: str = "running") -> None:
    """A database as the first release left it: a session (running: a round done and one
    under way) with two participants, its model, log lines; an admin token and a revoked one."""
    old = release_1_tables()
    engine = sqlalchemy.create_engine(url)
    old.Base.metadata.create_all(engine)
    config = {"payload_size": 4}
    with Session(engine) as s, s.begin():
        s.add(
            old.SessionRow(
                id="0123456789",
                name="churn",
                description="two hospitals",
                kind="hfl",
                package_name="echo",
                min_num_clients=2,
                num_rounds=3,
                model_config_=config,
                data_config={"label": "y"},
                status=status,
                round=1,
                failure_reason=None,
                created_by="admin",
                created_at=T0,
                updated_at=T0 + timedelta(minutes=2),
                started_at=T0 + timedelta(minutes=1),
                ended_at=None,
            )
        )
        s.flush()
        for seq, name in enumerate(("silo0", "silo1"), start=1):
            s.add(
                old.ParticipantRow(
                    id=f"p{seq:015d}",
                    session_id="0123456789",
                    client_name=name,
                    dataset={"train_rows": 100 * seq},
                    seq=seq,
                    joined_at=T0 + timedelta(seconds=seq),
                    last_seen_at=T0 + timedelta(minutes=2),
                )
            )
        s.flush()
        for seq in (1, 2):
            s.add(
                old.TaskRow(
                    id=f"t{seq:015d}",
                    session_id="0123456789",
                    participant_id=f"p{seq:015d}",
                    kind="fit",
                    round=2,
                    meta={"round": 2},
                    status="queued" if seq == 1 else "done",
                    reply_meta=None if seq == 1 else {"num_examples": 200},
                    error=None,
                    created_at=T0 + timedelta(minutes=2),
                    delivered_at=T0 + timedelta(minutes=2),
                    replied_at=None if seq == 1 else T0 + timedelta(minutes=3),
                )
            )
        s.add(
            old.RoundRow(
                session_id="0123456789",
                round=1,
                federated={"loss": 0.25},
                per_client={"silo0": {"loss": 0.3}, "silo1": {"loss": 0.2}},
                created_at=T0 + timedelta(minutes=2),
            )
        )
        s.add(
            old.ModelRow(
                session_id="0123456789",
                round=1,
                key="models/0123456789.fsm",
                meta={"format": "frame"},
                created_at=T0 + timedelta(minutes=2),
            )
        )
        for minute, message in ((1, "session started"), (2, "round 1 done")):
            s.add(
                old.SessionLogRow(
                    session_id="0123456789",
                    created_at=T0 + timedelta(minutes=minute),
                    message=message,
                )
            )
        s.add(
            old.TokenRow(
                id="a" * 16,
                name="admin",
                token_hash=hash_token(RELEASE_1_ADMIN),
                scopes=["admin"],
                user_id=None,
                created_at=T0 - timedelta(days=30),
                expires_at=None,
                revoked_at=None,
                last_used_at=T0,
            )
        )
        s.add(
            old.TokenRow(
                id="b" * 16,
                name="old-analyst",
                token_hash="2" * 64,
                scopes=["admin"],
                user_id=None,
                created_at=T0 - timedelta(days=20),
                expires_at=T0 + timedelta(days=10),
                revoked_at=T0 - timedelta(days=1),
                last_used_at=None,
            )
        )
    engine.dispose()


def test_a_first_release_database_keeps_its_rows_and_gains_identity(url: str) -> None:
    build_release_1(url)
    store = SqlStore(url)
    try:
        assert (store.schema.before, store.schema.found) == (None, "unversioned")
        assert store.schema.after == head_revision()
        assert schema_diffs(store.database.engine) == []

        session = store.get_session("0123456789")
        assert session is not None
        assert (session.name, session.description, str(session.status), session.round) == (
            "churn",
            "two hospitals",
            "running",
            1,
        )
        assert session.model_config == {"payload_size": 4} and session.owner_id is None
        assert session.started_at == T0 + timedelta(minutes=1)
        participants = store.list_participants("0123456789")
        assert [(p.client_name, p.dataset, p.credential_hash) for p in participants] == [
            ("silo0", {"train_rows": 100}, ""),
            ("silo1", {"train_rows": 200}, ""),
        ]
        tasks = store.list_tasks("0123456789")
        assert [(t.id, str(t.status), t.reply_meta) for t in tasks] == [
            ("t000000000000001", "queued", None),
            ("t000000000000002", "done", {"num_examples": 200}),
        ]
        (round_1,) = store.list_rounds("0123456789")
        assert round_1.federated == {"loss": 0.25} and round_1.per_client["silo1"] == {"loss": 0.2}
        model = store.get_model("0123456789")
        assert model is not None and model.key == "models/0123456789.fsm"
        assert [log.message for log in store.list_logs("0123456789")] == [
            "session started",
            "round 1 done",
        ]
        tokens = {t.name: t for t in store.list_tokens()}
        assert set(tokens) == {"admin", "old-analyst"}
        assert tokens["old-analyst"].revoked_at == T0 - timedelta(days=1)
        assert all(t.user_id is None for t in tokens.values())

        # The identity features on the old rows: users adopt the tokens, sessions get owners,
        # the audit log records, and the widened user id fits.
        admin = UserRecord(
            id="a" * 10 + "@" + "w" * 150,
            name="admin",
            user_type="human",
            created_at=T0 + timedelta(days=2),
        )
        store.add_user(admin)
        assert store.adopt_tokens(admin.id) == 2
        assert [t.name for t in store.list_user_tokens(admin.id)] == ["admin", "old-analyst"]
        got = store.get_token_by_hash(hash_token(RELEASE_1_ADMIN))
        assert got is not None and got.user_id == admin.id
        store.append_audit(
            AuditRecord(
                at=T0 + timedelta(days=2), action="user.create", target="admin", user_id=admin.id
            )
        )
        assert [(e.action, e.user_id) for e in store.list_audit()] == [("user.create", admin.id)]
        store.delete_session("0123456789")  # the cascade still holds after the table copies
        assert store.list_participants("0123456789") == []
        assert store.list_tasks("0123456789") == []
    finally:
        store.close()


@pytest.mark.parametrize("server_settings", BACKENDS, indirect=True)
def test_a_server_started_on_a_first_release_database_serves_it(
    server_settings: Any, request: pytest.FixtureRequest
) -> None:
    url = server_settings.resolved_db_url()
    if server_settings.db_url is None:
        server_settings.resolved_data_dir().mkdir(parents=True)
    else:
        drop_everything(url)  # the fixture leaves alembic_version behind
        request.addfinalizer(lambda: drop_everything(url))
    build_release_1(url, status="completed")  # nothing for the engine to resume
    server = request.getfixturevalue("thread_server")
    headers = {"Authorization": f"Bearer {RELEASE_1_ADMIN}"}
    with httpx.Client(base_url=server.url + "/api/v1", headers=headers) as api:
        assert [u["name"] for u in api.get("/users").json()] == ["admin"]
        tokens = {t["name"]: t["user_name"] for t in api.get("/tokens").json()}
        assert tokens == {"admin": "admin", "old-analyst": "admin"}
        old = api.get("/sessions/0123456789")
        assert old.status_code == 200, old.text
        assert (old.json()["name"], old.json()["owner_id"]) == ("churn", None)
        made = api.post("/users", json={"name": "analyst"})
        assert made.status_code == 201, made.text
        audit = api.get("/audit", params={"action": "user.create"}).json()
        assert [entry["target"] for entry in audit] == ["analyst"]
    assert current_revision_of(url) == head_revision()


def test_a_database_made_by_a_pre_migration_fedsilo_at_head_is_stamped(url: str) -> None:
    # A development build between the first release and migrations created every table with
    # create_all (and added sessions.owner_id by hand): nothing to change but the stamp.
    engine = sqlalchemy.create_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO users (id, name, user_type, active, created_at) "
                "VALUES ('u@fedsilo', 'admin', 'human', true, '2026-11-30 10:00:00')"
            )
        )
    engine.dispose()
    store = SqlStore(url)
    try:
        assert store.schema.found == "unversioned"
        assert [u.name for u in store.list_users()] == ["admin"]
        assert schema_diffs(store.database.engine) == []
    finally:
        store.close()


# ------------------------------------------------------------------ fedsilo admin db

runner = CliRunner()


def fedsilo(*args: str) -> Result:
    return runner.invoke(cli, ["admin", "db", *args])


def test_admin_db_current_and_upgrade_on_a_data_dir(tmp_path: Path) -> None:
    build_release_1(f"sqlite:///{tmp_path / 'fedsilo.db'}")
    before = fedsilo("current", "--data-dir", str(tmp_path))
    assert before.exit_code == 0, before.output
    assert before.stdout.splitlines() == [
        "database: none (new, or made before migrations)",
        f"fedsilo:  {head_revision()}",
    ]
    upgraded = fedsilo("upgrade", "--data-dir", str(tmp_path))
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout.strip() == (
        f"made before migrations: taken as its first release, upgraded to {head_revision()}"
    )
    again = fedsilo("upgrade", "--data-dir", str(tmp_path))
    assert again.stdout.strip() == f"already at {head_revision()}"
    after = fedsilo("current", "--data-dir", str(tmp_path))
    assert after.stdout.splitlines()[0] == f"database: {head_revision()} (up to date)"


def test_admin_db_on_a_url(url: str) -> None:
    SqlStore(url).close()
    result = fedsilo("current", "--db-url", url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"database: {head_revision()} (up to date)"


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0 and result.stdout == "", result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_admin_db_refuses_a_data_dir_without_a_database(tmp_path: Path) -> None:
    error = one_line_error(fedsilo("upgrade", "--data-dir", str(tmp_path / "typo")))
    assert "no database there" in error
    assert not (tmp_path / "typo").exists()


def test_admin_db_refuses_a_newer_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fedsilo.db'}"
    SqlStore(url).close()
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '0099_x'"))
    engine.dispose()
    current = fedsilo("current", "--data-dir", str(tmp_path))
    assert current.stdout.splitlines()[0] == (
        "database: 0099_x (newer than this fedsilo: a server start refuses it)"
    )
    assert "'0099_x', newer than this fedsilo's" in one_line_error(
        fedsilo("upgrade", "--data-dir", str(tmp_path))
    )


def test_admin_db_upgrade_waits_for_no_server(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fedsilo.db'}"
    build_release_1(url)
    lock = acquire_state_lock(url)  # as a running server holds it
    assert lock is not None
    try:
        error = one_line_error(fedsilo("upgrade", "--data-dir", str(tmp_path)))
    finally:
        lock.release()
    assert str(os.getpid()) in error
    assert current_revision_of(url) is None  # untouched


def current_revision_of(url: str) -> str | None:
    engine = sqlalchemy.create_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def test_check_revision_refuses_only_a_newer_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fedsilo.db'}"
    check_revision(url)  # no database yet: nothing to refuse, and nothing created
    assert not (tmp_path / "fedsilo.db").exists()
    build_release_1(url)
    check_revision(url)
    SqlStore(url).close()
    check_revision(url)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '0099_x'"))
    engine.dispose()
    with pytest.raises(ConfigError, match="'0099_x', newer than this fedsilo's"):
        check_revision(url)


def test_a_failed_upgrade_changes_nothing(url: str) -> None:
    build_release_1(url)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        # Takes the name of the index the identity revision creates, after its other steps.
        connection.execute(sqlalchemy.text("CREATE INDEX ix_tokens_user_id ON sessions (name)"))
    engine.dispose()
    with pytest.raises(sqlalchemy.exc.DatabaseError):
        SqlStore(url)
    engine = sqlalchemy.create_engine(url)
    try:
        inspector = sqlalchemy.inspect(engine)
        assert "alembic_version" not in inspector.get_table_names()
        assert "credential_hash" not in {c["name"] for c in inspector.get_columns("participants")}
        assert "owner_id" not in {c["name"] for c in inspector.get_columns("sessions")}
        user_id = next(c for c in inspector.get_columns("tokens") if c["name"] == "user_id")
        assert user_id["type"].length == 64
    finally:
        engine.dispose()
