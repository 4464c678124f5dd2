"""``fedsilo admin db``: the state store's schema, offline (the server upgrades it on start too).

``upgrade`` brings a database to this fedsilo's schema -- the step a server start takes, run
ahead of it (to see it succeed, or time it, before starting the new version), under the state's
lock like a server; ``current`` prints the database's revision and this fedsilo's head without
changing anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedsilo.errors import ConfigError

__all__ = ["app"]

app = typer.Typer(
    rich_markup_mode="markdown",
    help="The state store's schema: its revision, and upgrading it to this fedsilo's.",
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The server's data folder (its embedded database, fedsilo.db).",
        show_default="~/.fedsilo",
    ),
]
DbUrlOption = Annotated[
    str | None,
    typer.Option(
        "--db-url",
        help="SQLAlchemy URL of the state store, e.g. postgresql+psycopg://user@host/db.",
        show_default="sqlite:///<data-dir>/fedsilo.db",
    ),
]


def _url(data_dir: Path | None, db_url: str | None) -> str:
    """The state store's URL as ``fedsilo server start`` resolves it (options, then
    ``FEDSILO_DATA_DIR`` / ``FEDSILO_DB_URL``, then the defaults)."""
    from pydantic import ValidationError

    from fedsilo.server.settings import Settings
    from fedsilo.wire import format_validation_error

    given: dict[str, Any] = {"data_dir": data_dir, "db_url": db_url}
    try:
        settings = Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        raise ConfigError(f"Invalid server settings: {format_validation_error(exc)}") from None
    url = settings.resolved_db_url()
    if url == "memory://":
        raise ConfigError("db_url is memory://: an in-memory store has no schema to migrate.")
    if settings.db_url is None:
        database = settings.resolved_data_dir() / "fedsilo.db"
        if not database.is_file():
            # Not created here: a mistyped --data-dir must not leave an empty database behind.
            raise ConfigError(
                f"--data-dir {settings.resolved_data_dir()}: no database there "
                f"(expected {database}; a server start creates one)."
            )
    return url


@app.command()
def upgrade(data_dir: DataDirOption = None, db_url: DbUrlOption = None) -> None:
    """Upgrade the database to this fedsilo's schema (what a server start does first).

    Refused while a server runs on the same state (stop it first): a server must not see its
    tables change under it.
    """
    from fedsilo.server.lock import acquire_state_lock
    from fedsilo.server.state import SqlStore

    url = _url(data_dir, db_url)
    lock = acquire_state_lock(url, role="db upgrade")
    try:
        store = SqlStore(url)
        done = store.schema
        store.close()
    finally:
        if lock is not None:
            lock.release()
    if not done.changed:
        typer.echo(f"already at {done.after}")
    elif done.found == "new":
        typer.echo(f"created at {done.after}")
    elif done.found == "unversioned":
        typer.echo(f"made before migrations: taken as its first release, upgraded to {done.after}")
    else:
        typer.echo(f"upgraded {done.before} -> {done.after}")


@app.command()
def current(data_dir: DataDirOption = None, db_url: DbUrlOption = None) -> None:
    """Print the database's schema revision and this fedsilo's (changes nothing)."""
    from sqlalchemy import create_engine

    from fedsilo.server.state.migrations import current_revision, head_revision, known_revisions

    engine = create_engine(_url(data_dir, db_url))
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    if revision is None:
        state = "none (new, or made before migrations)"
    elif revision == head:
        state = f"{revision} (up to date)"
    elif revision not in known_revisions():
        state = f"{revision} (newer than this fedsilo: a server start refuses it)"
    else:
        state = f"{revision} (the server upgrades it to {head} on start)"
    typer.echo(f"database: {state}\nfedsilo:  {head}")
