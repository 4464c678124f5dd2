"""``fedsilo token``: create, inspect, list and revoke API tokens."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedsilo.cli import (
    CaCertOption,
    FormatOption,
    OutputFormat,
    TokenOption,
    UrlOption,
    open_api,
)
from fedsilo.cli.tables import Column, parse_time, print_json, print_table, when
from fedsilo.errors import ConfigError
from fedsilo.scopes import MAX_SCOPED_TOKEN_DAYS, SCOPE_HELP, Scope, parse_scopes
from fedsilo.wire import TokenCreate

if TYPE_CHECKING:
    from fedsilo.sdk.auth import AuthClient

__all__ = ["app", "create", "info", "list_tokens", "revoke"]

#: what a token gets when no --scope is given (the server applies TokenCreate's default)
DEFAULT_SCOPES: tuple[str, ...] = tuple(
    TokenCreate.model_fields["scopes"].get_default(call_default_factory=True)
)

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Manage API tokens: scoped, expiring, revocable; each belongs to a user.",
    no_args_is_help=True,
)

_SCOPE_LIST = "\n".join(f"- **{scope}**: {SCOPE_HELP[scope]}" for scope in Scope)


def _auth(url: str | None, token: str | None, ca_cert: str | None) -> AuthClient:
    from fedsilo.sdk.auth import AuthClient

    return AuthClient(open_api(url, token, ca_cert))


@app.command(
    help=f"""Create a token for a user and print its secret, once: it is stored only as a hash.

The secret alone goes to stdout (so `export FEDSILO_TOKEN=$(fedsilo token create ...)` works);
the description goes to stderr. Needs an admin token.

Scopes (repeat `--scope`; without one the token gets {", ".join(DEFAULT_SCOPES)}, never admin):

{_SCOPE_LIST}

A token with any scope but admin lives at most {MAX_SCOPED_TOKEN_DAYS} days.
"""
)
def create(
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="The user (name or id) the token belongs to. Default: the caller's own user.",
            show_default=False,
        ),
    ] = None,
    scopes: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="A scope the token carries (listed above); repeat for several. "
            f"Default: {', '.join(DEFAULT_SCOPES)}.",
            show_default=False,
        ),
    ] = None,
    expires_in_days: Annotated[
        float | None,
        typer.Option(
            "--expires-in-days",
            help=f"Days until the token expires: at most {MAX_SCOPED_TOKEN_DAYS} unless the "
            f"token's only scope is admin. Default: {MAX_SCOPED_TOKEN_DAYS}.",
            show_default=False,
        ),
    ] = None,
    no_expiry: Annotated[
        bool,
        typer.Option("--no-expiry", help="The token never expires (an admin token only)."),
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="A label: what the token is for, e.g. 'silo-a'. Default: the server's.",
            show_default=False,
        ),
    ] = None,
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    if no_expiry and expires_in_days is not None:
        raise ConfigError("Give either --expires-in-days or --no-expiry, not both.")
    days: float | None = MAX_SCOPED_TOKEN_DAYS
    if no_expiry:
        days = None
    elif expires_in_days is not None:
        if expires_in_days <= 0:
            raise ConfigError(f"The --expires-in-days option must be > 0. Got {expires_in_days:g}.")
        days = expires_in_days
    chosen = None
    if scopes:
        try:
            chosen = parse_scopes(scopes)
        except ValueError as exc:
            raise ConfigError(f"The --scope option: {exc}.") from None

    with _auth(url, token, ca_cert) as auth:
        created = auth.create_token(user, chosen, days, name)
    if output is OutputFormat.json:
        print_json(created)
        return
    typer.echo(
        f"Created token {created['name']!r} (id {created['id']}) for user "
        f"{created['user_name'] or created['user_id']}, scopes {', '.join(created['scopes'])}, "
        f"expires {when(created['expires_at'], 'never')}. Store the secret now; it is not "
        "shown again:",
        err=True,
    )
    typer.echo(created["token"])


@app.command()
def info(
    secret: Annotated[
        str | None,
        typer.Argument(
            metavar="TOKEN",
            help="The secret of the token to inspect; '-' reads it from stdin (keeps it out "
            "of the shell history). Default: the token in use (--token / $FEDSILO_TOKEN).",
            show_default=False,
        ),
    ] = None,
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Show what a token is: its user, scopes, role and lifetime.

    Any token may inspect itself; inspecting another needs an admin token.
    """
    from fedsilo.http import resolve_token

    if secret == "-":
        secret = sys.stdin.readline().strip()
        if not secret:
            raise ConfigError("TOKEN is '-' but stdin held no token.")
    with _auth(url, token, ca_cert) as auth:
        answer = auth.token_info(secret or resolve_token(token))
    if output is OutputFormat.json:
        print_json(answer)
        return
    shown = dict(answer)
    for field in ("iat", "expires"):
        moment = answer.get(field)
        shown[field] = "never" if moment is None else when(datetime.fromtimestamp(moment, tz=UTC))
    print_table(
        [Column("field", no_wrap=True), Column("value")],
        [(field, _cell(value)) for field, value in shown.items()],
    )


@app.command("list")
def list_tokens(
    user: Annotated[
        str | None,
        typer.Option("--user", help="Only this user's tokens (name or id).", show_default=False),
    ] = None,
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """List tokens (never their secrets). Needs an admin token."""
    with _auth(url, token, ca_cert) as auth:
        tokens = auth.list_tokens(user)
    if output is OutputFormat.json:
        print_json(tokens)
        return
    # Ids are copied into `fedsilo token revoke`, so they must never be cut short; dates may
    # wrap between day and time but never inside the day.
    columns = [
        Column("id", no_wrap=True, min_width=12),
        Column("name"),
        Column("user", no_wrap=True),
        Column("scopes"),
        Column("status", no_wrap=True),
        *(Column(header, min_width=10) for header in ("created", "expires", "last used")),
    ]
    rows = [
        (
            item["id"],
            item["name"],
            item["user_name"] or item["user_id"] or "-",
            ", ".join(item["scopes"]),
            _status(item),
            when(item["created_at"]),
            when(item["expires_at"], "never"),
            when(item["last_used_at"], "never"),
        )
        for item in tokens
    ]
    print_table(columns, rows)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="Id of the token (see `fedsilo token list`).")],
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Revoke a token: calls made with it are refused from now on.

    Needs an admin token, or the token being revoked.
    """
    with _auth(url, token, ca_cert) as auth:
        revoked = auth.revoke_token(token_id)
    if output is OutputFormat.json:
        print_json(revoked)
        return
    typer.echo(f"Revoked token {revoked['name']!r} (id {revoked['id']}).")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _status(item: dict[str, Any]) -> str:
    if item["revoked_at"] is not None:
        return "revoked"
    expires = parse_time(item["expires_at"])
    if expires is not None and expires <= datetime.now(UTC):
        return "expired"
    return "active"
