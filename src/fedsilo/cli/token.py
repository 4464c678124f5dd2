"""``fedsilo token``: create, list and revoke API tokens."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from fedsilo.cli import FormatOption, OutputFormat, TokenOption, UrlOption, open_api
from fedsilo.errors import ConfigError

if TYPE_CHECKING:
    from fedsilo.wire import TokenPublic

__all__ = ["app", "create", "list_tokens", "revoke"]

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Manage API tokens (scoped, expiring, revocable).",
    no_args_is_help=True,
)


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="What the token is for, e.g. 'silo-a'.")],
    expires_in_days: Annotated[
        float | None,
        typer.Option(
            "--expires-in-days",
            help="Days until the token expires. Default: the server's (90).",
            show_default=False,
        ),
    ] = None,
    no_expiry: Annotated[
        bool, typer.Option("--no-expiry", help="The token never expires.")
    ] = False,
    scopes: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="A scope the token carries; repeat for several. Default: the server's (admin).",
            show_default=False,
        ),
    ] = None,
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a token and print its secret, once: it is stored only as a hash.

    The secret alone goes to stdout (so ``export FEDSILO_TOKEN=$(fedsilo token create ...)``
    works); the description goes to stderr.
    """
    from pydantic import ValidationError

    from fedsilo.wire import TokenCreate, TokenCreated, format_validation_error

    if no_expiry and expires_in_days is not None:
        raise ConfigError("Give either --expires-in-days or --no-expiry, not both.")
    fields: dict[str, object] = {"name": name}
    if no_expiry:
        fields["expires_in_days"] = None
    elif expires_in_days is not None:
        if expires_in_days <= 0:
            raise ConfigError(f"The --expires-in-days option must be > 0. Got {expires_in_days:g}.")
        fields["expires_in_days"] = expires_in_days
    if scopes:
        fields["scopes"] = scopes
    try:
        body = TokenCreate.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"Cannot create the token: {format_validation_error(exc)}") from None

    with open_api(url, token) as api:
        answer = api.post_json("/tokens", body.model_dump(mode="json", exclude_unset=True))
    created = TokenCreated.model_validate(answer)
    if output is OutputFormat.json:
        typer.echo(created.model_dump_json(indent=2))
        return
    typer.echo(
        f"Created token {created.name!r} (id {created.id}), scopes {', '.join(created.scopes)}, "
        f"expires {_when(created.expires_at, 'never')}. Store the secret now; it is not shown "
        "again:",
        err=True,
    )
    typer.echo(created.token)


@app.command("list")
def list_tokens(
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List tokens (never their secrets)."""
    from fedsilo.wire import TokenPublic

    with open_api(url, token) as api:
        answer = api.get_json("/tokens")
    tokens = [TokenPublic.model_validate(item) for item in answer]
    if output is OutputFormat.json:
        typer.echo(json.dumps([t.model_dump(mode="json") for t in tokens], indent=2))
        return

    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD)
    # Ids are copied into `fedsilo token revoke`, so they must never be cut short; dates may
    # wrap between day and time but never inside the day.
    table.add_column("id", no_wrap=True, min_width=12)
    table.add_column("name")
    table.add_column("scopes")
    table.add_column("status", no_wrap=True)
    for header in ("created", "expires", "last used"):
        table.add_column(header, min_width=10)
    for item in tokens:
        table.add_row(
            item.id,
            item.name,
            ", ".join(item.scopes),
            _status(item),
            _when(item.created_at),
            _when(item.expires_at, "never"),
            _when(item.last_used_at, "never"),
        )
    Console().print(table)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="Id of the token (see `fedsilo token list`).")],
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a token: calls made with it are refused from now on."""
    from fedsilo.wire import TokenPublic

    with open_api(url, token) as api:
        answer = api.request("DELETE", f"/tokens/{token_id}").json()
    revoked = TokenPublic.model_validate(answer)
    if output is OutputFormat.json:
        typer.echo(revoked.model_dump_json(indent=2))
        return
    typer.echo(f"Revoked token {revoked.name!r} (id {revoked.id}).")


def _when(moment: datetime | None, empty: str = "-") -> str:
    if moment is None:
        return empty
    return moment.strftime("%Y-%m-%d %H:%M")


def _status(item: TokenPublic) -> str:
    if item.revoked_at is not None:
        return "revoked"
    if item.expires_at is not None:
        expires = item.expires_at
        if expires.tzinfo is None:  # the server stores UTC; naive values are UTC too
            expires = expires.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            return "expired"
    return "active"
