"""How list and info commands print their answers: a rich table for people, JSON for scripts.

The ``token``, ``user`` and ``audit`` groups share one look (``box.SIMPLE_HEAD``, times in
UTC to the minute) so their columns line up the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import typer

__all__ = ["Column", "parse_time", "print_json", "print_table", "when"]


class Column:
    """One table column: its header and how rich may lay it out.

    ``no_wrap`` keeps values people copy into another command (ids, names) whole.
    """

    def __init__(self, header: str, *, no_wrap: bool = False, min_width: int | None = None):
        self.header = header
        self.no_wrap = no_wrap
        self.min_width = min_width


def parse_time(value: str | datetime | None) -> datetime | None:
    """An ISO 8601 time as the server sends it, aware (naive values are UTC)."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def when(value: str | datetime | None, empty: str = "-", *, seconds: bool = False) -> str:
    """A time for a table cell: ``YYYY-MM-DD HH:MM`` (``:SS`` with ``seconds``) in UTC, or
    ``empty``."""
    moment = parse_time(value)
    if moment is None:
        return empty
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``columns``, never cutting a ``no_wrap`` value short.

    rich fits a table to the console by cropping cells, which would turn an id into
    ``a1b2c3…``; so a ``no_wrap`` column is as wide as its longest value, and a table that
    cannot fit even then is printed wider than the terminal (the terminal wraps the line).
    Off a terminal (a pipe, a file) no cell wraps at all, so each row stays one line.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD)
    for index, column in enumerate(columns):
        min_width = column.min_width
        if column.no_wrap:
            longest = max((len(row[index]) for row in rows), default=0)
            min_width = max(min_width or 0, len(column.header), longest)
        table.add_column(column.header, no_wrap=column.no_wrap, min_width=min_width)
    for row in rows:
        table.add_row(*row)
    # highlight=False: rich would colour numbers and dates inside ids otherwise
    console = Console(highlight=False)
    needed = console.measure(table, options=console.options.update_width(1_000_000))
    width = needed.minimum if console.is_terminal else needed.maximum
    if width > console.width:
        console = Console(highlight=False, width=width)
    console.print(table)
