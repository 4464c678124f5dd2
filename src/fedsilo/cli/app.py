"""The ``fedsilo`` command: the root typer app and the ``main`` console-script entry point.

Command groups live in one module each (``client``, ``token``, ``user``, ``audit``, ``data``,
``server``, ``admin``, and the ``demo`` command) and are registered here. Errors become one
line on stderr and an exit code (see :mod:`fedsilo.cli.errors`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from fedsilo.cli import admin, audit, client, data, demo, package, server, token, user
from fedsilo.cli import config as config_cli
from fedsilo.cli.errors import FedsiloGroup

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedsilo",
    cls=FedsiloGroup,
    # Markdown reflows docstring paragraphs; "rich" would keep their source line breaks.
    rich_markup_mode="markdown",
    help="fedsilo: federated learning and analytics across data silos, without moving data.",
    no_args_is_help=True,
    add_completion=False,
    # Errors are reported by FedsiloGroup as one line; rich tracebacks would undo that.
    pretty_exceptions_enable=False,
)

app.add_typer(client.app, name="client")
app.add_typer(token.app, name="token")
app.add_typer(user.app, name="user")
app.add_typer(audit.app, name="audit")
app.add_typer(data.app, name="data")
app.add_typer(server.app, name="server")
app.add_typer(config_cli.app, name="config")
app.add_typer(admin.app, name="admin")
app.add_typer(package.app, name="package")

# `fedsilo demo`: the whole tutorial (server, sample data, two clients, a session) in one go.
app.command("demo")(demo.demo)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedsilo")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fedsilo {_version()}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """fedsilo: federated learning and analytics across data silos, without moving data."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"fedsilo {_version()}")


def main() -> None:
    """Console-script entry point (``fedsilo``)."""
    app()
