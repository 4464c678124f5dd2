"""Alembic's environment for the state store's migrations.

fedsilo runs it through :mod:`fedsilo.server.state.migrations` on the connection the store
hands over (``config.attributes["connection"]``), so no ``alembic.ini`` is needed; a developer
writing a revision may instead set ``sqlalchemy.url`` on the config. Batch mode is on because
SQLite can alter a column only by copying its table.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from fedsilo.server.state.tables import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given in config.attributes and no sqlalchemy.url set")
    engine = create_engine(url)
    try:
        with engine.begin() as opened:
            _run(opened)
    finally:
        engine.dispose()


_main()
