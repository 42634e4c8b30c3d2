"""`factory sql`: ad-hoc SQL over the warehouse (read-only unless --write)."""

from __future__ import annotations

import io
import json
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from rich.console import Console

from factory.cli.options import warehouse_option
from factory.errors import UserError
from factory.output import out, rows_table
from factory.store import sandbox, warehouse
from factory.store.sandbox import sandbox_config
from factory.store.warehouse import run_query as _run_query
from factory.store.writer import Writer

FORMATS = ("table", "csv", "json", "jsonl", "parquet")


def write_result(table: pa.Table, fmt: str, output: Path | None, force: bool = False) -> None:
    """Print or save `table` in `fmt`; an existing `output` only with `force` (see `sandbox.check_output`)."""
    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet needs -o FILE")
    if output is None:
        if fmt == "table":
            out.print(rows_table(table.to_pylist(), columns=table.column_names, width=out.width))
            out.print(f"({table.num_rows} rows)", style="dim")
        elif fmt == "csv":
            pa_csv.write_csv(_flat_for_csv(table), pa.output_stream(sys.stdout.buffer))
        else:
            click.echo(_json_text(table, fmt))
        return
    try:  # exclusive creation without --force: a file that appeared since the check is not overwritten
        sink = output.open("wb" if force else "xb")
    except FileExistsError:
        raise UserError(f"-o {output} exists; pass --force to replace it") from None
    with sink:
        if fmt == "parquet":
            pq.write_table(table, sink)
        elif fmt == "csv":
            pa_csv.write_csv(_flat_for_csv(table), sink)
        elif fmt == "table":
            text = io.TextIOWrapper(sink, encoding="utf-8", write_through=True)
            console = Console(file=text, width=200)
            console.print(rows_table(table.to_pylist(), columns=table.column_names, width=console.width))
            console.print(f"({table.num_rows} rows)", style="dim")
            text.detach()
        else:
            sink.write((_json_text(table, fmt) + "\n").encode())


def _json_text(table: pa.Table, fmt: str) -> str:
    """The rows as one JSON array (json) or one JSON object a line (jsonl)."""
    rows = table.to_pylist()
    if fmt == "json":
        return json.dumps(rows, default=str, indent=2)
    return "\n".join(json.dumps(r, default=str) for r in rows)


def _flat_for_csv(table: pa.Table) -> pa.Table:
    """Nested columns (lists, structs) become their JSON text; CSV has no nested values."""
    columns = [pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())
               if pa.types.is_nested(col.type) else col for col in table.columns]
    return pa.table(columns, names=table.column_names)


def run_query(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, str], *, read_only: bool = True,
              allow_files: bool = False) -> pa.Table | None:
    """`warehouse.run_query` of a statement the sandbox allows (`sandbox.check_statements` when `read_only`), with
    the way out named when the sandbox refused a file."""
    if read_only:
        sandbox.check_statements(con, query, allow_files)
    try:
        return _run_query(con, query, params)
    except UserError as e:
        if "disabled by configuration" in str(e):
            raise UserError(f"{e} (factory sql sees only the warehouse; --allow-files lets SQL read and write "
                            "files, -o FILE saves a result)") from e
        raise


@click.command(name="sql")
@click.argument("query", required=False)
@click.option("-f", "--file", "sql_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the SQL from a file.")
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE",
              help="Set a view parameter (a DuckDB variable), e.g. -p min_reward 0.5; an unknown NAME is an error.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="How to print (or, with -o, write) the result.")
@click.option("--json", "as_json", is_flag=True, help="Short for --format json, as on the other commands.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to a file: never the warehouse or its .wal/.lock files; an existing file only with --force.")
@click.option("--force", is_flag=True, help="Let -o replace an existing file (never the warehouse's).")
@click.option("--write", is_flag=True,
              help="Open the warehouse read-write (default read-only); takes the writer lock like a harvest.")
@click.option("--allow-files", is_flag=True,
              help="Let SQL read and write files of this machine (read_csv, COPY ... TO); off by default.")
@warehouse_option
@click.pass_context
def sql_command(ctx: click.Context, query: str | None, sql_file: Path | None, params: tuple[tuple[str, str], ...],
                fmt: str, as_json: bool, output: Path | None, force: bool, write: bool, allow_files: bool,
                warehouse_path: str) -> None:
    """Run SQL on the warehouse: tables runs, tasks, rollouts, nodes, messages, tool_calls, rewards and the
    dataset views. QUERY `-` reads stdin; no QUERY opens a prompt (on a terminal).

    The SQL sees the warehouse only: no files, no network, no extensions, settings locked (`--allow-files` to join
    a CSV). Read-only (the default), it runs reading statements only: SELECT (WITH, VALUES, DESCRIBE, SHOW,
    SUMMARIZE), EXPLAIN, CALL of a table function, the PRAGMAs that report (table_info, database_size, ...) and
    SET VARIABLE; LOAD, INSTALL, CHECKPOINT, VACUUM, ATTACH, SET of a setting, writes and temporary tables are
    refused (with --allow-files COPY ... TO and EXPORT DATABASE too are allowed; --write lifts the rule).
    `-o FILE` writes the result, never onto the warehouse or its companion files, and onto an existing file only
    with --force. The prompt opens the warehouse for each statement only, so a harvest can write between them.

    \b
    Example:
        factory sql "select * from eval_summary"
        factory sql "select * from rollouts where reward < 1" --format csv -o misses.csv
        factory sql "select * from sft" --format parquet -o sft.parquet --force   # replace sft.parquet
        echo "select count(*) from tasks" | factory sql -
        factory sql --allow-files "select * from read_csv('extra.csv')"
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
    warehouse.check_parameters(query or "", dict(params))
    if output is not None:
        sandbox.check_output(output, warehouse_path, force)
    if not query and not sys.stdin.isatty():
        raise UserError("no QUERY given; pass one (`factory sql \"select 1\"`), `-` to read stdin, or -f FILE")
    config = sandbox_config(allow_files)
    with ExitStack() as stack:
        writer = stack.enter_context(Writer(warehouse_path)) if write else None

        @contextmanager
        def session() -> Iterator[duckdb.DuckDBPyConnection]:
            if writer is not None:
                with writer.session(config=config) as con:
                    yield con
            else:
                with warehouse.opened(warehouse_path, read_only=True, config=config) as con:
                    yield con

        if query:
            with session() as con:
                table = run_query(con, query, dict(params), read_only=not write, allow_files=allow_files)
            if table is not None:
                write_result(table, fmt, output, force)
            return
        _prompt(session, dict(params), fmt, read_only=not write, allow_files=allow_files)


def _prompt(session: Callable[[], Any], params: dict[str, str], fmt: str, *, read_only: bool,
            allow_files: bool) -> None:
    """A small interactive prompt: one statement per line, `.quit` or Ctrl-D to leave. Each statement opens the
    warehouse for its own duration, so a writer is never locked out while the prompt waits."""
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
            with session() as con:
                table = run_query(con, line, params, read_only=read_only, allow_files=allow_files)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            continue
        if table is not None:
            write_result(table, fmt, None)
