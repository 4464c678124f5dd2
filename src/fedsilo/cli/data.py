"""``fedsilo data``: sample data to try the platform with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fedsilo.cli import FormatOption, OutputFormat

__all__ = ["app", "synth"]

app = typer.Typer(
    rich_markup_mode="markdown", help="Work with local data files.", no_args_is_help=True
)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write into (created if missing).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same files.")] = 0,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Write a synthetic sample dataset split into silos (train files per silo and a test file)."""
    from fedsilo.data.synth import write_sample_data

    files = write_sample_data(out.expanduser(), seed=seed)
    if output is OutputFormat.json:
        typer.echo(json.dumps({name: str(path) for name, path in files.items()}, indent=2))
        return
    typer.echo(f"Wrote {len(files)} file(s) to {out}:")
    for name, path in files.items():
        typer.echo(f"  {name}: {path}")
