"""``fedsilo user``: create, list and delete users (each token belongs to one)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from fedsilo.sdk.auth import AuthClient

__all__ = ["app", "create", "delete", "list_users"]

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Manage users: tokens belong to one, sessions are owned by one. Needs an admin token.",
    no_args_is_help=True,
)


class UserType(StrEnum):
    generated = "generated"
    human = "human"


def _auth(url: str | None, token: str | None, ca_cert: str | None) -> AuthClient:
    from fedsilo.sdk.auth import AuthClient

    return AuthClient(open_api(url, token, ca_cert))


@app.command()
def create(
    name: Annotated[
        str, typer.Argument(help="The user's name, e.g. 'demo-user' or 'user1@mycompany.com'.")
    ],
    user_type: Annotated[
        UserType,
        typer.Option(
            "--type",
            help="'generated' for a machine user (a notebook, a pipeline), 'human' for a person.",
            case_sensitive=False,
        ),
    ] = UserType.generated,
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Create a user; the server gives it a unique, email-like id.

    Then give it a token with `fedsilo token create --user NAME --scope SCOPE`.
    """
    with _auth(url, token, ca_cert) as auth:
        user = auth.create_user(name, user_type.value)
    if output is OutputFormat.json:
        print_json(user)
        return
    typer.echo(f"Created {user['user_type']} user {user['name']!r} (id {user['id']}).")


@app.command("list")
def list_users(
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """List users, oldest first."""
    with _auth(url, token, ca_cert) as auth:
        users = auth.list_users()
    if output is OutputFormat.json:
        print_json(users)
        return
    columns = [
        Column("name", no_wrap=True),
        Column("id", no_wrap=True),
        Column("type", no_wrap=True),
        Column("active", no_wrap=True),
        Column("created by", no_wrap=True),
        Column("created", min_width=10),
    ]
    rows = [
        (
            user["name"],
            user["id"],
            user["user_type"],
            "yes" if user["active"] else "no",
            user["created_by"] or "-",
            when(user["created_at"]),
        )
        for user in users
    ]
    print_table(columns, rows)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="The user's name (see `fedsilo user list`).")],
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Delete a user and revoke all its tokens.

    The sessions it owns stay; a new user of the same name does not own them. The caller's
    own user and the last admin user cannot be deleted.
    """
    with _auth(url, token, ca_cert) as auth:
        user = auth.delete_user(name)
    if output is OutputFormat.json:
        print_json(user)
        return
    typer.echo(f"Deleted user {user['name']!r} (id {user['id']}); its tokens are revoked.")
