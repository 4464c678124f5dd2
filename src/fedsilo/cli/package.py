"""``fedsilo package``: the model packages a server runs, and uploading custom ones."""

from __future__ import annotations

from typing import Annotated

import typer

from fedsilo.cli import CaCertOption, FormatOption, OutputFormat, TokenOption, UrlOption, open_api
from fedsilo.cli.tables import Column, print_json, print_table, when

__all__ = ["app", "list_packages", "upload"]

app = typer.Typer(
    rich_markup_mode="markdown",
    help="The model packages a server runs: the built-in ones and uploaded custom packages "
    "(with the SHA-256 digest a client operator approves).",
    no_args_is_help=True,
)


@app.command("list")
def list_packages(
    output: FormatOption = OutputFormat.table,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """List the packages: name, built-in or custom, digest, uploader, upload time."""
    with open_api(url, token, ca_cert) as api:
        packages = api.get_json("/packages")
    if output is OutputFormat.json:
        print_json(packages)
        return
    columns = [
        Column("name", no_wrap=True),
        Column("kind", no_wrap=True),
        Column("sha256", no_wrap=True),
        Column("uploaded by", no_wrap=True),
        Column("created", min_width=10),
        Column("description"),
    ]
    rows = [
        (
            p["name"],
            f"custom {p.get('task') or ''}".strip() if p.get("custom") else "built-in",
            p.get("digest") or "-",
            p.get("uploaded_by") or "-",
            when(p.get("created_at")),
            p.get("description") or "",
        )
        for p in packages
    ]
    print_table(columns, rows)


@app.command()
def upload(
    package_path: Annotated[str, typer.Argument(help="The package folder (model.py ...).")],
    dataset_path: Annotated[
        str, typer.Option("--dataset-path", help="Data for the one-epoch test.")
    ],
    package_name: Annotated[str, typer.Option("--name", help="The unique package name.")],
    model_config: Annotated[
        str, typer.Option("--model-config", help="A sample model_config JSON file.")
    ],
    data_config: Annotated[
        str, typer.Option("--data-config", help="A sample data_config JSON file.")
    ],
    task: Annotated[str, typer.Option("--task", help="classification or regression.")],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    description: Annotated[str, typer.Option("--description")] = "",
    test_only: Annotated[
        bool, typer.Option("--test-only", help="Only run the one-epoch test.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Test a custom package one epoch locally (in a child process), then upload it
    (needs the custom_model scope); prints its digest."""
    from fedsilo.packages.custom.upload import upload_model

    with open_api(url, token, ca_cert) as api:
        done = upload_model(
            api,
            package_path,
            dataset_path,
            package_name,
            model_config,
            data_config,
            batch_size,
            task,
            test_only,
            description,
        )
    shown = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in done.metrics.items()
    )
    typer.echo(f"one-epoch test passed: {shown}")
    if done.package is not None:
        typer.echo(f"uploaded {done.package.name} sha256 {done.package.digest}")
