"""``fedsilo audit``: read the audit log (who did what, to what, when)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from fedsilo.cli import (
    CaCertOption,
    FormatOption,
    OutputFormat,
    TokenOption,
    UrlOption,
    open_api,
)
from fedsilo.cli.tables import Column, print_json, print_table, when
from fedsilo.errors import ConfigError

__all__ = ["app", "list_entries"]

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Read the audit log: who did what, to what, and when. Needs an admin token.",
    no_args_is_help=True,
)


@app.command("list")
def list_entries(
    user: Annotated[
        str | None,
        typer.Option("--user", help="Only this user's calls (name or id).", show_default=False),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            help="Only this action, exactly or by dotted prefix: 'session' matches "
            "'session.create', 'session.start', ...",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Only calls on this target: a session id, token id or user name.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only entries at or after this ISO 8601 time, e.g. 2026-12-01T09:00 (UTC "
            "when no offset is given).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=1,
            help="At most this many entries, the newest. Default: the server's.",
            show_default=False,
        ),
    ] = None,
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """List audit entries, oldest first."""
    from fedsilo.sdk.auth import AuthClient

    if since is not None:
        try:
            datetime.fromisoformat(since)
        except ValueError:
            raise ConfigError(
                f"The --since option must be an ISO 8601 time, e.g. 2026-12-01T09:00. "
                f"Got {since!r}."
            ) from None
    with AuthClient(open_api(url, token, ca_cert)) as auth:
        entries = auth.audit(user, action, since, limit, target=target)
    if output is OutputFormat.json:
        print_json(entries)
        return
    columns = [
        Column("seq", no_wrap=True),
        Column("time", min_width=10),
        Column("action", no_wrap=True),
        Column("target", no_wrap=True),
        Column("outcome", no_wrap=True),
        Column("user", no_wrap=True),
        Column("token", no_wrap=True),
        Column("address", no_wrap=True),
        Column("detail"),
    ]
    rows = [
        (
            str(entry["seq"]),
            when(entry["at"], seconds=True),
            entry["action"],
            entry["target"],
            entry["outcome"],
            entry["user_id"] or "-",
            entry["token_id"] or "-",
            entry["address"] or "-",
            entry["detail"] or "-",
        )
        for entry in entries
    ]
    print_table(columns, rows)
