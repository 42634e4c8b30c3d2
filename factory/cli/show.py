"""`factory show`: one JOSH tree in the terminal, one node's conversation, or a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from factory.cli.options import warehouse_option
from factory.output import out
from factory.present import show as show_lib
from factory.store import warehouse


@click.command("show")
@click.argument("rollout_id", required=False)
@click.option("--run", "run_id", default=None, help="With --task: the run whose rollout of TASK to show.")
@click.option("--task", "task_id", default=None, help="With --run: the task (MUL0016 or MUL0016.json).")
@click.option("--node", "node_id", type=int, default=None, help="Print this node's whole conversation instead.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the tree as a self-contained HTML page (no network; click a node for its messages).")
@warehouse_option
def show_command(rollout_id: str | None, run_id: str | None, task_id: str | None, node_id: int | None,
                 html_file: Path | None, warehouse_path: str) -> None:
    """Show one rollout's JOSH tree: one line per node with its step, tool calls (ok / error kind), what the
    agent and the user said, the goals it matched, its labels (golden, successful, pruned, end reason) and
    seed; the golden path in yellow. Reads the warehouse only. A unique prefix of the rollout id works.

    \b
    Example:
        factory show -w warehouse.duckdb.example harvest-fc4f2568d1/MUL0016.json/0
        factory show -w warehouse.duckdb.example --run harvest-fc4f2568d1 --task MUL0016 --node 11
        factory show -w warehouse.duckdb.example harvest-fc4f2568d1/MUL0016 --html tree.html
    """
    if bool(rollout_id) == bool(run_id):
        raise click.UsageError("pass a ROLLOUT_ID or --run RUN --task TASK (not both)")
    if task_id and not run_id:
        raise click.UsageError("--task needs --run")
    with warehouse.opened(warehouse_path, read_only=True) as con:
        rollout_id = show_lib.resolve_rollout(con, rollout_id, run_id, task_id)
        tree = show_lib.load_tree(con, rollout_id)
    if html_file is not None:
        if not html_file.parent.is_dir():
            raise click.UsageError(f"folder {html_file.parent} does not exist; create it or pass another --html")
        html_file.write_text(show_lib.html_page(tree), encoding="utf-8")
        click.echo(f"Wrote {html_file} ({len(tree.nodes)} nodes; open it in a browser)")
        return
    if node_id is not None:
        tree.node(node_id)
        out.print(show_lib.conversation(tree, node_id))
        return
    out.print(show_lib.terminal_tree(tree))
