"""Terminal output shared by the commands: consoles, JSON and row tables."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import click
from rich.console import Console
from rich.table import Table

out = Console(width=None if sys.stdout.isatty() else 200)  # wide when piped: tables are not squeezed
err = Console(stderr=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def rows_table(rows: Sequence[dict[str, Any]], title: str | None = None, columns: Sequence[str] = ()) -> Table:
    """A rich table of dict rows (numbers right-aligned, NULL for None)."""
    names = list(rows[0]) if rows else list(columns)
    table = Table(title=title, title_justify="left")
    for name in names:
        numeric = bool(rows) and isinstance(rows[0][name], (int, float)) and not isinstance(rows[0][name], bool)
        table.add_column(name, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*("NULL" if row[n] is None else str(row[n]) for n in names))
    return table
