"""``fedsilo server``: run the coordination server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedsilo.errors import ConfigError

__all__ = ["app", "start"]

app = typer.Typer(rich_markup_mode="markdown", help="Run the fedsilo server.", no_args_is_help=True)


@app.command()
def start(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Interface to listen on.", show_default="127.0.0.1"),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="Port to listen on.", show_default="8765"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Folder for the embedded database and artifacts.",
            show_default="~/.fedsilo",
        ),
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db-url",
            help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db.",
            show_default="sqlite:///<data-dir>/fedsilo.db",
        ),
    ] = None,
    artifacts_url: Annotated[
        str | None,
        typer.Option(
            "--artifacts-url",
            help="fsspec URL of the artifact store, e.g. s3://bucket/prefix.",
            show_default="<data-dir>/artifacts",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="Server log level.", show_default="warning"),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="Log lines as text, or json (one object a line: time, level, logger, "
            "message, session_id).",
            show_default="text",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            help="PEM certificate (chain) to serve https with; needs --tls-key.",
            show_default="plain http",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key",
            help="Unencrypted PEM private key of --tls-cert.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the server in the foreground (Ctrl-C stops it).

    Options not given here come from FEDSILO_* environment variables (FEDSILO_PORT,
    FEDSILO_DATA_DIR, FEDSILO_DB_URL, FEDSILO_ADMIN_TOKEN, FEDSILO_TLS_CERT, FEDSILO_TLS_KEY,
    ...), then the defaults shown. With --tls-cert and --tls-key the server speaks https
    itself; clients then trust its CA with --ca-cert or FEDSILO_CA_BUNDLE.
    """
    from pydantic import ValidationError

    from fedsilo.server.app import serve
    from fedsilo.server.settings import Settings
    from fedsilo.wire import format_validation_error

    given: dict[str, Any] = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "db_url": db_url,
        "artifacts_url": artifacts_url,
        "log_level": log_level,
        "log_format": log_format,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
    }
    # Only options the user set, so FEDSILO_* variables still apply to the others.
    overrides = {key: value for key, value in given.items() if value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"Invalid server settings: {format_validation_error(exc)}") from None
    serve(settings)
