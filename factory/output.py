"""Terminal output shared by the commands: consoles, JSON and row tables."""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal
from typing import Any, Sequence

import click
from rich.console import Console
from rich.table import Table

# Wide when piped, so tables are not squeezed; a terminal (or $COLUMNS) gives its own width.
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
err = Console(stderr=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _cell(value: Any) -> str:
    return "NULL" if value is None else str(value)


def _is_id(name: str) -> bool:
    return name.endswith("_id")  # run_id, task_id, ...: other commands take them, so never cut


def column_widths(names: Sequence[str], rows: Sequence[dict[str, Any]], width: int) -> list[int] | None:
    """Content width per column so the table fits `width`: headers and ids whole, other values folded;
    None when even that does not fit."""
    natural = [max([len(n), *(len(_cell(r[n])) for r in rows)]) for n in names]
    floor = [nat if _is_id(n) else len(n) for n, nat in zip(names, natural)]
    overhead = 3 * len(names) + 1  # a border and two spaces of padding per column, and the last border
    if sum(floor) + overhead > width:
        return None
    widths = list(natural)
    while sum(widths) + overhead > width:
        widest = max((i for i in range(len(names)) if widths[i] > floor[i]), key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def rows_table(rows: Sequence[dict[str, Any]], title: str | None = None, columns: Sequence[str] = (),
               width: int = 200) -> Table:
    """A rich table of dict rows (numbers right-aligned, NULL for None) that fits `width` without cutting a
    header or an id; too many columns for that, and each row becomes a block of `column  value` lines."""
    names = list(rows[0]) if rows else list(columns)
    widths = column_widths(names, rows, width)
    if widths is None:
        return _expanded(rows, names, title)
    table = Table(title=title, title_justify="left")
    for name, w in zip(names, widths):
        first = rows[0][name] if rows else None
        numeric = isinstance(first, (int, float, Decimal)) and not isinstance(first, bool)
        table.add_column(name, justify="right" if numeric else "left", width=w, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row[n]) for n in names))
    return table


def _expanded(rows: Sequence[dict[str, Any]], names: Sequence[str], title: str | None) -> Table:
    """One block per row: every column name beside its value (psql's expanded display)."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("column", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            table.add_row(name, _cell(row[name]), end_section=j == len(names) - 1 and i < len(rows) - 1)
    return table


def print_rows(console: Console, rows: Sequence[dict[str, Any]], title: str | None = None,
               columns: Sequence[str] = ()) -> None:
    """`rows_table` sized for `console`."""
    console.print(rows_table(rows, title, columns, width=console.width))
