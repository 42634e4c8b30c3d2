"""`factory sql`: ad-hoc SQL over the warehouse (read-only unless --write)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from rich.console import Console

from factory import warehouse
from factory.errors import UserError
from factory.options import warehouse_option
from factory.output import out, rows_table
from factory.warehouse import run_query

FORMATS = ("table", "csv", "json", "jsonl", "parquet")


def _jsonable(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def write_result(table: pa.Table, fmt: str, output: Path | None) -> None:
    """Print or save `table` in `fmt`."""
    if fmt == "parquet":
        if output is None:
            raise click.UsageError("--format parquet needs -o FILE")
        pq.write_table(table, output)
        return
    if fmt == "table":
        console = Console(file=output.open("w"), width=200) if output else out
        console.print(rows_table(table.to_pylist(), columns=table.column_names, width=console.width))
        console.print(f"({table.num_rows} rows)", style="dim")
        return
    if fmt == "csv":
        sink = str(output) if output else pa.output_stream(sys.stdout.buffer)
        pa_csv.write_csv(_flat_for_csv(table), sink)
        return
    rows = _jsonable(table)
    text = json.dumps(rows, default=str, indent=2) if fmt == "json" else "\n".join(json.dumps(r, default=str) for r in rows)
    if output:
        output.write_text(text + "\n")
    else:
        click.echo(text)


def _flat_for_csv(table: pa.Table) -> pa.Table:
    """Nested columns (lists, structs) become their JSON text; CSV has no nested values."""
    columns = [pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())
               if pa.types.is_nested(col.type) else col for col in table.columns]
    return pa.table(columns, names=table.column_names)


@click.command(name="sql")
@click.argument("query", required=False)
@click.option("-f", "--file", "sql_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the SQL from a file.")
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE",
              help="Set a view parameter (a DuckDB variable), e.g. -p min_reward 0.5; an unknown NAME is an error.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="How to print (or, with -o, write) the result.")
@click.option("--json", "as_json", is_flag=True, help="Short for --format json, as on the other commands.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.option("--write", is_flag=True, help="Open the warehouse read-write (default read-only).")
@warehouse_option
@click.pass_context
def sql_command(ctx: click.Context, query: str | None, sql_file: Path | None, params: tuple[tuple[str, str], ...],
                fmt: str, as_json: bool, output: Path | None, write: bool, warehouse_path: str) -> None:
    """Run SQL on the warehouse: tables runs, tasks, rollouts, nodes, messages, tool_calls, rewards and the
    dataset views. QUERY `-` reads stdin; no QUERY opens a prompt.

    \b
    Example:
        factory sql "select * from eval_summary"
        factory sql "select * from rollouts where reward < 1" --format csv -o misses.csv
        echo "select count(*) from tasks" | factory sql -
    """
    if query and sql_file:
        raise click.UsageError("give QUERY or -f FILE, not both")
    if as_json:
        if ctx.get_parameter_source("fmt") == click.core.ParameterSource.COMMANDLINE and fmt != "json":
            raise click.UsageError(f"--json and --format {fmt} contradict each other; pass one")
        fmt = "json"
    if sql_file:
        query = sql_file.read_text()
    elif query == "-":
        query = sys.stdin.read()
    with warehouse.opened(warehouse_path, read_only=not write) as con:
        if query:
            table = run_query(con, query, dict(params))
            if table is not None:
                write_result(table, fmt, output)
            return
        _prompt(con, dict(params), fmt)


def _prompt(con: duckdb.DuckDBPyConnection, params: dict[str, str], fmt: str) -> None:
    """A small interactive prompt: one statement per line, `.quit` or Ctrl-D to leave."""
    click.echo("factory sql: one statement per line; .quit to leave", err=True)
    while True:
        try:
            line = click.prompt("sql", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.Abort):
            return
        if line.strip() in (".quit", ".exit", "\\q"):
            return
        if not line.strip():
            continue
        try:
            table = run_query(con, line, params)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            continue
        if table is not None:
            write_result(table, fmt, None)
