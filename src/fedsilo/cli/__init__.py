"""The ``fedsilo`` command line: a typer app with one module per command group.

This module holds what several command groups share: the ``--url`` / ``--token`` /
``--ca-cert`` options and the way a command opens its :class:`~fedsilo.http.ApiClient`. Heavy
imports (httpx, pandas, torch) happen inside commands, so ``fedsilo --help`` stays fast.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from fedsilo.http import ApiClient

__all__ = [
    "CaCertOption",
    "FormatOption",
    "OutputFormat",
    "TokenOption",
    "UrlOption",
    "open_api",
]

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Server URL. Default: $FEDSILO_URL, else http://127.0.0.1:8765.",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="API token. Default: $FEDSILO_TOKEN.",
        show_default=False,
    ),
]

CaCertOption = Annotated[
    str | None,
    typer.Option(
        "--ca-cert",
        help="CA bundle (PEM) to verify an https server with. Default: $FEDSILO_CA_BUNDLE, "
        "else the public CAs httpx trusts.",
        show_default=False,
    ),
]


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", help="'table' for people, 'json' for scripts.", case_sensitive=False),
]


def open_api(url: str | None, token: str | None, ca_cert: str | None = None) -> ApiClient:
    """An :class:`ApiClient` for ``--url`` / ``--token`` / ``--ca-cert``, falling back to the
    environment."""
    from fedsilo.http import ApiClient, resolve_token, resolve_url

    return ApiClient(resolve_url(url), resolve_token(token), ca_cert=ca_cert)
