"""`factory env`: build, inspect and call any environment's tools, and replay an action sequence on a task.

`--env toolwoz` runs the same code as `factory toolwoz build|info|call` (which stay, with ToolWOZ's own extras:
`audit`, `show`); `--env retail|airline` are τ-bench's domains.
"""

from __future__ import annotations

import json
from typing import Any

import click

from factory.cli import toolwoz as toolwoz_commands
from factory.cli.options import env_option, json_option, multiwoz_option, taubench_option, warehouse_option
from factory.errors import UserError
from factory.output import err as console
from factory.output import out, print_json, print_rows
from factory.store import warehouse
from factory.store.writer import Writer


def _tau(con: Any, name: str, path: str) -> Any:
    """The τ-bench domain `name` of a warehouse, or a one-line error saying how to build it."""
    from taubench import data
    from taubench.environment import TauBench

    if not data.has_tables(con, name):
        raise UserError(f"{path} has no τ-bench {name} tables; run `factory env build --env {name}` first")
    return TauBench.from_warehouse(con, name)


def _task(tau: Any, split: str | None, task: str) -> Any:
    """A task by id (`retail/test/3`) or by index within `--split`."""
    if task in tau.tasks:
        return tau.tasks[task].task
    if task.isdigit():
        split = split or tau.splits[-1]
        chosen = [t for t in tau.tasks_in(split) if t.task.index == int(task)]
        if chosen:
            return chosen[0].task
    raise UserError(f"unknown task {task!r} in τ-bench {tau.name}: give an index within --split or an id such as "
                    f"{tau.name}/test/0")


@click.group(name="env")
def env_command() -> None:
    """Environments: ToolWOZ (read-only travel tools) and τ-bench retail and airline (tools that write).

    \b
    Example:
        factory env build --env retail
        factory env info --env retail
        factory env call --env retail get_order_details '{"order_id": "#W2378156"}'
        factory env replay --env retail --split test --task 0 actions.json --json
    """


@env_command.command()
@env_option
@multiwoz_option
@taubench_option
@warehouse_option
@json_option
@click.pass_context
def build(ctx: click.Context, env: str, multiwoz: str | None, taubench_path: str | None, warehouse_path: str,
          as_json: bool) -> None:
    """Build an environment's tables (database, tasks, policy) into the warehouse; safe to re-run.

    \b
    Example:
        factory env build --env retail --taubench ../shared/taubench
        factory env build --env toolwoz --multiwoz ../shared/multiwoz
    """
    if env == "toolwoz":
        ctx.invoke(toolwoz_commands.build, multiwoz=multiwoz, warehouse_path=warehouse_path, as_json=as_json)
        return
    from taubench import data

    folder = data.locate(taubench_path)
    with Writer(warehouse_path) as writer, writer.session() as con:
        with console.status(f"building τ-bench {env} tables"):
            tasks = data.build(con, env, folder)
    counts = {s: sum(t.split == s for t in tasks) for s in data.SPLITS[env]}
    if as_json:
        print_json({"warehouse": warehouse_path, "env": env, "source": str(folder), "tasks": counts})
        return
    out.print(f"Built τ-bench {env} ({len(tasks)} tasks: "
              f"{', '.join(f'{s} {n}' for s, n in counts.items())}) from {folder} into {warehouse_path}")


@env_command.command()
@env_option
@warehouse_option
@json_option
@click.pass_context
def info(ctx: click.Context, env: str, warehouse_path: str, as_json: bool) -> None:
    """Tasks per split, gold actions and the tools of an environment.

    \b
    Example:
        factory env info --env airline --json
    """
    if env == "toolwoz":
        ctx.invoke(toolwoz_commands.info, split=None, warehouse_path=warehouse_path, as_json=as_json)
        return
    with warehouse.opened(warehouse_path, read_only=True) as con:
        tau = _tau(con, env, warehouse_path)
    splits = [{"split": s, "tasks": len(ts := tau.tasks_in(s)), "gold_actions": sum(t.n_goals for t in ts),
               "with_outputs": sum(bool(t.task.outputs) for t in ts)} for s in tau.splits]
    tools = [s["function"]["name"] for s in tau.tool_schemas()]
    if as_json:
        print_json({"env": env, "splits": splits, "tools": tools})
        return
    print_rows(out, splits, f"τ-bench {env}: tasks per split")
    out.print(f"{len(tools)} tools: {', '.join(tools)}")


@env_command.command()
@click.argument("name")
@click.argument("arguments", default="{}")
@env_option
@warehouse_option
@click.pass_context
def call(ctx: click.Context, name: str, arguments: str, env: str, warehouse_path: str) -> None:
    """Run one tool as an agent would, on a fresh branch (nothing is kept), and print what the agent sees.

    \b
    Example:
        factory env call --env retail find_user_id_by_email '{"email": "mei.davis8935@example.com"}'
        factory env call search_train '{"departure": "cambridge", "day": "monday"}'
    """
    if env == "toolwoz":
        ctx.invoke(toolwoz_commands.call, name=name, arguments=arguments, task_id=None, semantics="fixed",
                   warehouse_path=warehouse_path, record=False)
        return
    from taubench.state import Branch

    args = toolwoz_commands.parse_arguments(arguments)
    with warehouse.opened(warehouse_path, read_only=True) as con:
        tau = _tau(con, env, warehouse_path)
    result = tau.env.call(name, args, branch=Branch("factory-env-call", (0,)), pos=0)
    out.print(result.content, highlight=False, markup=False)
    if not result.ok:
        raise UserError(result.content.removeprefix("Error: "))


@env_command.command()
@click.argument("actions_file", type=click.Path(dir_okay=False))
@click.option("--task", "task", required=True, help="The task: its index within --split, or its id (retail/test/0).")
@click.option("--split", default=None, help="The split the index counts in [default: test].")
@env_option
@warehouse_option
@json_option
def replay(actions_file: str, task: str, split: str | None, env: str, warehouse_path: str, as_json: bool) -> None:
    """Replay an action sequence on one τ-bench task: each observation, JOSH's turn rewards and τ-bench's reward.

    ACTIONS_FILE is a JSON list of {"name": ..., "kwargs": {...}}; `respond` with `content` is an agent message.

    \b
    Example:
        factory env replay --env retail --split test --task 0 gold.json --json
    """
    from taubench.replay import load_actions
    from taubench.replay import replay as run_replay

    if env == "toolwoz":
        raise UserError("replay is for τ-bench's environments; pass --env retail or --env airline")
    actions = load_actions(actions_file)
    with warehouse.opened(warehouse_path, read_only=True) as con:
        tau = _tau(con, env, warehouse_path)
    chosen = _task(tau, split, task)
    result = run_replay(tau.env, chosen, actions)
    steps = [{"action": a["name"], "observation": o, "goals": [g[1] for g in goals]}
             for a, o, goals in zip(actions, result.observations, result.turn_goals)]
    summary = {"task_id": chosen.task_id, "reward": result.reward.reward, "db_match": result.reward.db_match,
               "outputs": result.reward.outputs, "goals_met": sum(len(s["goals"]) for s in steps),
               "goals_total": len(chosen.tool_actions), "steps": steps}
    if as_json:
        print_json(summary)
        return
    for i, step in enumerate(steps):
        out.print(f"[bold]{i} {step['action']}[/bold]" + (f"  goals {', '.join(step['goals'])}" if step["goals"]
                                                           else ""))
        if step["observation"]:
            out.print(f"  {step['observation'][:500]}", highlight=False, markup=False)
    out.print(f"{chosen.task_id}: τ-bench reward {summary['reward']:.1f} (database "
              f"{'matches' if summary['db_match'] else 'differs'}; outputs {json.dumps(summary['outputs'])}), "
              f"JOSH goals {summary['goals_met']}/{summary['goals_total']}")
