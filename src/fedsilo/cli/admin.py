"""``fedsilo admin``: operating a server's state offline, on the machine that holds it.

``recover-token`` is for the admin who is locked out (the admin token revoked, or lost with
no other admin token): it writes a new admin token straight into the state store, so it runs
only while no server does -- it takes the state's lock (:mod:`fedsilo.server.lock`) and is
refused, naming the server, while one holds it. The token is printed once to stdout and
written to ``<data_dir>/admin_token`` (mode 0600); the next server start accepts it.
``db`` (:mod:`fedsilo.cli.admin_db`) shows and upgrades the state store's schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedsilo.cli import admin_db
from fedsilo.errors import ConfigError, FedsiloError

__all__ = ["app", "recover_token"]

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Operate a server's state offline (no server running on it).",
    no_args_is_help=True,
)
app.add_typer(admin_db.app, name="db")

#: the name of every token this command creates (``fedsilo token list`` shows it)
RECOVERED_TOKEN_NAME = "admin-recovered"


@app.command("recover-token")
def recover_token(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="The server's data folder (its database and admin_token file).",
            show_default="~/.fedsilo",
        ),
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db-url",
            help="SQLAlchemy URL of the state store, when not the embedded database.",
            show_default="sqlite:///<data-dir>/fedsilo.db",
        ),
    ] = None,
) -> None:
    """Create a new admin token for the `admin` user, with the server stopped.

    Prints the token once to stdout and writes it to <data-dir>/admin_token (mode 0600).
    Refused while a server runs on the same state (stop it first). Like `fedsilo server
    start`, options not given come from FEDSILO_DATA_DIR / FEDSILO_DB_URL.
    """
    from pydantic import ValidationError

    from fedsilo.scopes import Scope
    from fedsilo.server.auth import ADMIN_USER, issue_token
    from fedsilo.server.datadir import private_directory, write_private_file
    from fedsilo.server.lock import acquire_state_lock
    from fedsilo.server.settings import Settings
    from fedsilo.server.state import AuditRecord, open_store, utcnow
    from fedsilo.wire import format_validation_error

    given: dict[str, Any] = {"data_dir": data_dir, "db_url": db_url}
    try:
        settings = Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        raise ConfigError(f"Invalid server settings: {format_validation_error(exc)}") from None
    url = settings.resolved_db_url()
    if url.startswith("memory://"):
        raise ConfigError("db_url is memory://: an in-memory store has no token to recover.")
    folder = settings.resolved_data_dir()
    if settings.db_url is None and not (folder / "fedsilo.db").is_file():
        raise FedsiloError(
            f"No database at {folder / 'fedsilo.db'}; expected the --data-dir of a server "
            "that has started at least once."
        )
    lock = acquire_state_lock(url, role="recover-token")
    try:
        store = open_store(url)
        try:
            user = store.get_user_by_name(ADMIN_USER)
            if user is None or not user.active:
                raise FedsiloError(
                    f"No active {ADMIN_USER!r} user in this state store; expected the one "
                    "its first server start created."
                )
            created = issue_token(store, user, RECOVERED_TOKEN_NAME, [Scope.admin], None)
            store.append_audit(
                AuditRecord(
                    at=utcnow(),
                    action="token.recover",
                    target=created.id,
                    user_id=user.id,
                    token_id=created.id,
                    address="local",
                    detail="fedsilo admin recover-token (offline)",
                )
            )
        finally:
            store.close()
        path = private_directory(folder) / "admin_token"
        write_private_file(path, created.token + "\n")
    finally:
        if lock is not None:
            lock.release()
    typer.echo(created.token)
    typer.echo(
        f"fedsilo: new admin token {created.id} for user {ADMIN_USER!r} (shown once; also in "
        f"{path}, mode 0600). Earlier tokens are unchanged; revoke any you no longer trust.",
        err=True,
    )
