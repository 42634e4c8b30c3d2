"""`factory toolwoz`: build the ToolWOZ tables into the warehouse, inspect tasks, run tools by hand."""

from __future__ import annotations

import json
from typing import Any, Callable

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

import sql
from factory import __version__
from factory.cli.options import json_option, multiwoz_option, semantics_option, warehouse_option
from factory.errors import UserError
from factory.output import err as console
from factory.output import out, print_json, print_rows
from factory.store import warehouse
from factory.store.writer import Writer
from toolwoz import multiwoz, tables
from toolwoz.audit import audit_task
from toolwoz.tasks import SPLITS, Task, task_key
from toolwoz.tools import TOOL_NAMES, ToolEnv


def _load_multiwoz(path: str | None) -> multiwoz.MultiWOZ:
    with Progress(TextColumn("downloading MultiWOZ"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("download", total=None)
        def on_chunk(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)
        root = multiwoz.resolve(path, progress=on_chunk)
    with console.status(f"reading MultiWOZ from {root}"):
        return multiwoz.load(root)


def _rows(con, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql.load(query), params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _env(con, path: str) -> ToolEnv:
    warehouse.require_toolwoz(con, path)
    return ToolEnv.from_connection(con)


def _task(env: ToolEnv, task_id: str) -> Task:
    key = task_key(task_id)
    if key not in env.tasks:
        raise UserError(f"unknown task {task_id!r}; task ids look like MUL0003.json (counts: `factory toolwoz info`)")
    return env.tasks[key]


@click.group()
def toolwoz() -> None:
    """ToolWOZ: MultiWOZ tasks, their goal API calls and the 8 tools, as DuckDB tables.

    \b
    Example:
        factory toolwoz build --multiwoz ../shared/multiwoz
        factory toolwoz info --json
    """


@toolwoz.command()
@multiwoz_option
@warehouse_option
@json_option
def build(multiwoz: str | None, warehouse_path: str, as_json: bool) -> None:
    """Build the ToolWOZ tables (domains, tasks, hidden rows) into the warehouse; safe to re-run.

    \b
    Example:
        factory toolwoz build --multiwoz ../shared/multiwoz -w warehouse.duckdb
    """
    mw = _load_multiwoz(multiwoz)
    with Writer(warehouse_path) as writer, writer.session() as con:
        with console.status("building ToolWOZ tables"):
            tasks = tables.build(con, mw, code_version=__version__)
        splits = _rows(con, "queries/toolwoz_splits", {"split": None})
    if as_json:
        print_json({"warehouse": warehouse_path, "source": mw.source, "tasks": len(tasks), "splits": splits})
        return
    out.print(f"Built {len(tasks)} ToolWOZ tasks from {mw.source} into {warehouse_path}")
    print_rows(out, splits, "tasks per split")
    if not any(s["tasks"] for s in splits if s["split"] == "train"):
        out.print("The train split is empty (this MultiWOZ copy holds test and validation dialogues only); "
                  "harvest with --split val_harvest.")


@toolwoz.command()
@click.option("--split", type=click.Choice(SPLITS), default=None, help="One split; default all.")
@warehouse_option
@json_option
def info(split: str | None, warehouse_path: str, as_json: bool) -> None:
    """Tasks and goals per split, and goals per domain.

    \b
    Example:
        factory toolwoz info
        factory toolwoz info --split val_harvest --json
    """
    with warehouse.opened(warehouse_path, read_only=True) as con:
        warehouse.require_toolwoz(con, warehouse_path)
        splits = _rows(con, "queries/toolwoz_splits", {"split": split})
        goals = _rows(con, "queries/toolwoz_goals", {"split": split})
    if as_json:
        print_json({"splits": splits, "goals": goals})
        return
    print_rows(out, splits, "tasks per split")
    print_rows(out, goals, "goals per domain")


@toolwoz.command()
@click.option("--split", type=click.Choice(SPLITS), default="test_full", show_default=True,
              help="Which tasks to audit.")
@click.option("--check", "checks", multiple=True, type=click.Choice(["fixed_oracle", "parity_replay", "booked_entity"]),
              help="Only these checks (repeatable); default all.")
@warehouse_option
@json_option
def audit(split: str, checks: tuple[str, ...], warehouse_path: str, as_json: bool) -> None:
    """List ground truth that contradicts the DB, with the reason.

    fixed_oracle: searching with the goal's constraints and booking the first row misses a goal.
    parity_replay: the ground-truth calls fail the reference's own reward rules.
    booked_entity: the human wizard booked an entity that does not meet the goal.

    \b
    Example:
        factory toolwoz audit --split val --check fixed_oracle
    """
    with warehouse.opened(warehouse_path, read_only=True) as con:
        env = _env(con, warehouse_path)
        chosen = [t for t in env.tasks.values() if split in t.splits]
        findings = []
        with Progress(console=console, transient=True) as progress:
            for task in progress.track(chosen, description=f"auditing {split}"):
                findings += [f for f in audit_task(env, task) if not checks or f.check in checks]
    rows = [f.as_dict() for f in findings]
    counts = {c: sum(f.check == c for f in findings) for c in ("fixed_oracle", "parity_replay", "booked_entity")}
    if as_json:
        print_json({"split": split, "tasks": len(chosen), "counts": counts, "findings": rows})
        return
    if rows:
        print_rows(out, rows, f"findings in {split}")
    out.print(f"{len(chosen)} tasks audited: " + ", ".join(f"{c} {n}" for c, n in counts.items()))


@toolwoz.command()
@click.argument("name")
@click.argument("arguments", default="{}")
@click.option("--task", "task_id", default=None, help="Run in this task's context (hidden rows, bookings).")
@semantics_option
@warehouse_option
@click.option("--record", is_flag=True, help="Print the warehouse record (ok, error kind, rows, latency) too.")
def call(name: str, arguments: str, task_id: str | None, semantics: str, warehouse_path: str, record: bool) -> None:
    """Run one tool as an agent would and print what the agent sees (JSON).

    \b
    Example:
        factory toolwoz call search_train '{"departure": "cambridge", "destination": "ely", "day": "friday"}'
        factory toolwoz call book_hotel '{"name": "acorn guest house", "day": "monday", "people": "2", "stay": "3"}'
    """
    args = parse_arguments(arguments)
    if semantics == "fixed" and name not in TOOL_NAMES:
        raise UserError(f"unknown tool {name!r}; the tools are {', '.join(TOOL_NAMES)}")
    with warehouse.opened(warehouse_path, read_only=True) as con:
        env = _env(con, warehouse_path)
        task = _task(env, task_id).task_id if task_id else None
        result = env.call(name, args, task_id=task, semantics=semantics)
    if record:
        print_json({**result.record(), "result": result.result, "task_id": task})
    elif result.ok:
        print_json(result.result)
    if not result.ok:
        raise UserError(result.error or "the call failed")


@toolwoz.command()
@click.argument("task_id")
@click.option("--lines", type=click.IntRange(min=0), default=6, show_default=True,
              help="How many turns of the human dialogue to show.")
@multiwoz_option
@warehouse_option
@json_option
def show(task_id: str, lines: int, multiwoz: str | None, warehouse_path: str, as_json: bool) -> None:
    """Show a task: the user's goal, its ground truth and how the human dialogue began.

    \b
    Example:
        factory toolwoz show MUL0003
    """
    with warehouse.opened(warehouse_path, read_only=True) as con:
        task = _task(_env(con, warehouse_path), task_id)
    dialogue = _human_turns(multiwoz, task.task_id, lines, console.print)
    if as_json:
        print_json({"task_id": task.task_id, "splits": task.splits, "message": task.message,
                     "ground_truth": task.ground_truth, "dialogue": dialogue})
        return
    out.print(f"[bold]{task.task_id}[/bold]  splits: {', '.join(task.splits)}  goals: {task.n_goals}")
    out.print("\n[bold]Goal[/bold]")
    for sentence in task.message:
        out.print(f"  {sentence}")
    out.print("\n[bold]Ground truth[/bold]")
    for domain, entry in task.ground_truth.items():
        for api, goal in entry["success"].items():
            params = {k: v for k, v in goal["parameters"].items() if v}
            out.print(f"  {api} {json.dumps(params)}", highlight=False)
            if api.startswith("search_"):
                out.print(f"    {len(goal['returns'])} matching rows", highlight=False)
        for api, goal in entry["failure"].items():
            params = {k: v for k, v in goal["parameters"].items() if v}
            out.print(f"  [dim]failure {api} {json.dumps(params)}[/dim]", highlight=False)
    if dialogue:
        out.print("\n[bold]Human dialogue[/bold]")
        for turn in dialogue:
            out.print(f"  {turn['role']:>6}: {turn['text']}", highlight=False)


def parse_arguments(arguments: str) -> Any:
    """A tool call's ARGUMENTS as typed on the command line (JSON), or a one-line error."""
    try:
        return json.loads(arguments)
    except json.JSONDecodeError as e:
        raise UserError(f"ARGUMENTS is not JSON ({e.msg} at character {e.pos}); "
                        "quote it like '{\"area\": \"north\"}'") from e
    except (ValueError, RecursionError) as e:  # a number too long to read, or absurd nesting
        raise UserError(f"ARGUMENTS is not usable JSON ({str(e).split(';')[0] or type(e).__name__}); "
                        "pass a flat object like '{\"area\": \"north\"}'") from e


def _human_turns(path: str | None, task_id: str, n: int, warn: Callable[[str], None]) -> list[dict[str, str]]:
    """The first `n` turns of the MultiWOZ dialogue, or [] with a notice when MultiWOZ is not at hand."""
    try:
        root = multiwoz.resolve(path, allow_download=False)
        log = multiwoz.load(root).dialogues[task_id]["log"]
    except Exception as e:  # the dialogue is a nicety: the task itself came from the warehouse
        warn(f"[dim](human dialogue not shown: {e})[/dim]")
        return []
    return [{"role": "agent" if turn.get("metadata") else "user", "text": turn["text"]} for turn in log[:n]]
