"""Schema migrations of the SQL state store (alembic), run when the store opens a database.

The revisions in ``versions/`` lead from the schema of fedsilo's first release
(``0001_release_1``) to the tables of :mod:`fedsilo.server.state.tables`; ``env.py`` runs them
on the connection handed over here, so no ``alembic.ini`` is needed. :func:`upgrade` looks at
the database and does what it needs:

- no fedsilo table: a new database, created at head from the models and stamped;
- fedsilo tables but no ``alembic_version``: made before migrations, so taken as the first
  release (the revisions after it skip what a later pre-migration fedsilo already added),
  stamped with it and upgraded;
- a revision of this fedsilo: upgraded to head (nothing to do when already there);
- a revision this fedsilo does not know: written by a newer fedsilo, refused.

A new revision goes in ``versions/`` (``down_revision`` = the current head) with every change
to ``tables.py``; tests compare the migrated schema with the models on SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.engine import Connection, Engine

from fedsilo.errors import ConfigError
from fedsilo.server.state.tables import Base

__all__ = [
    "BASELINE",
    "MIGRATIONS_DIR",
    "Upgrade",
    "alembic_config",
    "check_revision",
    "current_revision",
    "head_revision",
    "known_revisions",
    "upgrade",
]

#: where env.py and versions/ are (shipped inside the package)
MIGRATIONS_DIR = Path(__file__).resolve().parent
#: the revision of a database made before migrations: the first release's schema
BASELINE = "0001_release_1"
#: PostgreSQL advisory lock key held while migrating, so two servers starting at once on one
#: database take turns (the second then finds the schema at head)
_PG_LOCK_KEY = 0x0FED5170


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` found and did."""

    #: the database's revision before (None: a new database or one made before migrations)
    before: str | None
    #: its revision now (this fedsilo's head)
    after: str
    #: how it was found: "new", "unversioned" (made before migrations), or "versioned"
    found: str

    @property
    def changed(self) -> bool:
        return self.found != "versioned" or self.before != self.after


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic :class:`~alembic.config.Config` for the shipped scripts, running on
    ``connection`` when given (for alembic's command API; ``upgrade`` is the usual way in)."""
    config = Config()
    # Config values go through configparser interpolation: a '%' in the path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    # A new revision's file: r<rev id>.py, an importable module name for mypy and ruff.
    config.set_main_option("file_template", "r%%(rev)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this fedsilo knows (the models' schema)."""
    head = _scripts().get_current_head()
    assert head is not None, "the shipped migrations have one head"
    return head


def known_revisions() -> list[str]:
    """Every revision this fedsilo knows, newest first."""
    return [script.revision for script in _scripts().walk_revisions()]


def current_revision(engine: Engine) -> str | None:
    """The database's revision (None: no ``alembic_version``, i.e. new or pre-migration)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database behind ``engine`` to :func:`head_revision` (see the module docstring).

    Raises
    ------
    ConfigError
        When the database is at a revision this fedsilo does not know (a newer one made it).
    """
    head = head_revision()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        at_head = current == head and _has_our_tables(connection)
        connection.rollback()
        if at_head:
            return Upgrade(before=head, after=head, found="versioned")  # the usual start
        if current is not None and current not in known_revisions():
            raise _newer(engine, current)
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A batch migration copies a table and drops the old one; with foreign keys on,
            # dropping sessions would cascade-delete every participant, task and round.
            # (The pragma is a no-op inside a transaction, so it is set before one starts.)
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                return _migrate(connection, head)
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def check_revision(url: str) -> None:
    """Refuse, before anything starts, a database that :func:`upgrade` would refuse: one a
    newer fedsilo made (reads its revision only; ``memory://`` has none).

    Raises
    ------
    ConfigError
        Naming the database's revision and this fedsilo's head.
    """
    if url.startswith("memory://"):
        return
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return  # a new database (not created here: the store creates it private)
    engine = create_engine(url)
    try:
        current = current_revision(engine)
        if current is not None and current not in known_revisions():
            raise _newer(engine, current)
    finally:
        engine.dispose()


def _newer(engine: Engine, current: str) -> ConfigError:
    return ConfigError(
        f"The database {engine.url.render_as_string(hide_password=True)} has schema revision "
        f"{current!r}, newer than this fedsilo's {head_revision()!r}: run the fedsilo that "
        "wrote it (or a newer one), or point this one at another database."
    )


def _has_our_tables(connection: Connection) -> bool:
    return bool(set(inspect(connection).get_table_names()) & set(Base.metadata.tables))


def _migrate(connection: Connection, head: str) -> Upgrade:
    """One transaction: what :func:`upgrade` does once it knows there is work."""
    if connection.dialect.name == "sqlite":
        # pysqlite opens no transaction before DDL by itself, so a failed step would leave the
        # ones before it applied; an explicit one makes the migration all or nothing (SQLite's
        # DDL is transactional) and IMMEDIATE takes the write lock before the revision is read.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    # Looked at again under the lock: another server may have just migrated it.
    context = MigrationContext.configure(connection)
    current = context.get_current_revision()
    if not _has_our_tables(connection):
        Base.metadata.create_all(connection)
        if current is not None:  # a stale stamp: the tables were dropped by hand
            connection.execute(text("DELETE FROM alembic_version"))
        context.stamp(_scripts(), head)  # without running env.py: the scripts are loaded
        return Upgrade(before=None, after=head, found="new")
    config = alembic_config(connection)
    if current is None:
        command.stamp(config, BASELINE)
        command.upgrade(config, "head")
        return Upgrade(before=None, after=head, found="unversioned")
    command.upgrade(config, "head")
    return Upgrade(before=current, after=head, found="versioned")
