"""`factory runs`: list, inspect and delete runs."""

from __future__ import annotations

import json

import click

import sql
from factory.cli.options import json_option, warehouse_option
from factory.output import out, print_json, print_rows
from factory.store import runs as run_lib
from factory.store import warehouse
from factory.store.writer import Writer, shown_status, writer_alive


def _records(cur) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


@click.group(invoke_without_command=True)
@warehouse_option
@json_option
@click.pass_context
def runs(ctx: click.Context, warehouse_path: str, as_json: bool) -> None:
    """List runs (kind, agent, user, split, rollouts, mean reward, status); `show` and `delete` one.

    \b
    Example:
        factory runs
        factory runs show eval-1a2b3c
        factory runs delete eval-1a2b3c --yes
    """
    if ctx.invoked_subcommand is not None:
        return
    with warehouse.opened(warehouse_path, read_only=True) as con:
        rows = _records(con.execute(sql.load("queries/run_list"), {"run_id": None}))
    alive = writer_alive(warehouse_path)
    rows = [{**r, "status": shown_status(r["status"], alive)} for r in rows]
    if as_json:
        print_json(rows)
        return
    print_rows(out, rows, columns=["run_id"])


@runs.command()
@click.argument("run_id")
@warehouse_option
def show(run_id: str, warehouse_path: str) -> None:
    """Show one run as JSON: its results and its settings (`config`), named as the flags that set them.

    \b
    Example:
        factory runs show eval-1a2b3c
    """
    with warehouse.opened(warehouse_path, read_only=True) as con:
        run_id = run_lib.resolve_run(con, run_id)
        (row,) = _records(con.execute(sql.load("queries/run_list"), {"run_id": run_id}))
        config = json.loads(con.execute("SELECT config FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0])
    row["status"] = shown_status(row["status"], writer_alive(warehouse_path))
    print_json({**row, "config": run_lib.named_today(config)})


@runs.command()
@click.argument("run_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@warehouse_option
def delete(run_id: str, yes: bool, warehouse_path: str) -> None:
    """Delete a run and every row it produced, in one transaction.

    \b
    Example:
        factory runs delete eval-1a2b3c --yes
    """
    with Writer(warehouse_path) as writer:
        with writer.session() as con:
            run_id = run_lib.resolve_run(con, run_id)
            n = con.execute("SELECT count(*) FROM rollouts WHERE run_id = ?", [run_id]).fetchall()[0][0]
        if not yes:
            click.confirm(f"Delete run {run_id} and its {n} rollouts?", abort=True)
        run_lib.delete(writer, run_id)
    click.echo(f"Deleted run {run_id} ({n} rollouts)")
