"""`factory eval`: single-branch conversations of an agent with a simulated user, stored as an eval run."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

import sql
from factory import rollouts, runs, warehouse
from factory.errors import UserError
from factory.options import json_option, multiwoz_option, semantics_option, warehouse_option
from factory.output import err as console
from factory.output import out
from factory.runs import RunSettings
from search.backends import backend_kind
from search.josh import SearchConfig
from toolwoz.rewards import paired_bootstrap
from toolwoz.tasks import SPLITS



def default_agent() -> str:
    """The bootstrapped tiny model in $FACTORY_HOME/models (created on first use)."""
    from train.tiny_model import default_model_dir

    return str(default_model_dir())


def agent_options(f):
    """Options shared by `eval` and `harvest`: who talks to whom, on which tasks."""
    options = [
        click.option("--agent", default=None,
                     help="A model folder or Hub id, `openai:MODEL` (with --base-url), or `teacher`. "
                          "Default: the tiny model in $FACTORY_HOME/models, created on first use."),
        click.option("--base-url", default=None, help="OpenAI-compatible endpoint for `openai:` agents."),
        click.option("--user", type=click.Choice(["rule", "llm"]), default="rule", show_default=True,
                     help="User simulator: agenda-based `rule`, or an `llm` customer (see --user-model)."),
        click.option("--user-model", default=None, help="The llm user's model: folder, Hub id or `openai:MODEL`."),
        click.option("--user-base-url", default=None, help="Endpoint for an `openai:` user model."),
        click.option("--protocol", type=click.Choice(["tools", "react"]), default="tools", show_default=True,
                     help="Agent protocol: native tool calls, or the reference's PLAN/APICALL/SPEAK text."),
        click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N tasks."),
        click.option("--tasks", "task_ids", default=None, help="Comma-separated task ids (within the split)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Conversations in flight; a local model batches their turns together."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--max-steps", type=click.IntRange(min=1), default=15, show_default=True),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True),
        semantics_option,
        click.option("--run", "run_name", default=None, help="Name (or resume) this run; default: a settings hash."),
        multiwoz_option,
        warehouse_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def check_user(user: str, user_model: str | None) -> None:
    if user == "llm" and not user_model:
        raise click.UsageError("--user llm needs --user-model (a model folder, Hub id or openai:MODEL)")


def build_settings(kind: str, agent: str | None, search: SearchConfig, *, base_url, user, user_model,
                   user_base_url, split, limit, task_ids, concurrency) -> RunSettings:
    check_user(user, user_model)
    agent = agent or default_agent()
    if backend_kind(agent) == "transformers" and not Path(agent).exists() and Path(agent).is_absolute():
        raise UserError(f"no model folder at {agent}; run `factory model init` or pass --agent")
    return RunSettings(kind=kind, agent=agent, backend=backend_kind(agent), user=user, user_model=user_model,
                       split=split, search=search, base_url=base_url, limit=limit,
                       tasks=[t.strip() for t in task_ids.split(",") if t.strip()] if task_ids else None,
                       concurrency=concurrency, extra={"user_base_url": user_base_url} if user_base_url else {})


def ensure_default_agent(agent: str | None, multiwoz_path: str | None) -> None:
    """Create the default tiny model on first use, with a notice."""
    if agent is not None:
        return
    from train.tiny_model import default_model_dir

    if default_model_dir().exists():
        return
    from factory.commands.model import create_default_model

    console.print(f"[yellow]No default model yet: creating the tiny model in {default_model_dir()}[/yellow]")
    create_default_model(multiwoz_path)


@click.group(name="eval", invoke_without_command=True)
@agent_options
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Agent sampling temperature (0 = greedy).")
@json_option
@click.pass_context
def eval_command(ctx: click.Context, agent, base_url, user, user_model, user_base_url, protocol, split, limit, task_ids,
         concurrency, seed, max_steps, max_new_tokens, semantics, run_name, multiwoz, warehouse_path,
         temperature, as_json) -> None:
    """Evaluate an agent: one conversation per task with a simulated user; prints Average Reward and 100% Success.

    Interrupted runs resume when the same command runs again.

    \b
    Example:
        factory eval --agent teacher --user rule --split val --limit 50
        factory eval --agent openai:my-model --base-url http://127.0.0.1:8000/v1 --split test
        factory eval compare eval-1a2b3c eval-4d5e6f
    """
    if ctx.invoked_subcommand is not None:
        return
    search = SearchConfig(beam=1, max_steps=max_steps, temperature=temperature, max_new_tokens=max_new_tokens,
                          semantics=semantics, protocol=protocol, seed=seed, finish_dialogue=True)
    settings = build_settings("eval", agent, search, base_url=base_url, user=user, user_model=user_model,
                              user_base_url=user_base_url, split=split, limit=limit, task_ids=task_ids,
                              concurrency=concurrency)
    if protocol == "react" and settings.backend == "teacher":
        raise click.UsageError("the teacher speaks the `tools` protocol only")
    ensure_default_agent(agent, multiwoz)
    report = rollouts.execute(settings, warehouse_path, run_name=run_name, multiwoz_path=multiwoz, console=console)
    with warehouse.opened(warehouse_path, read_only=True) as con:
        cur = con.execute("SELECT * FROM eval_summary WHERE run_id = ?", [report.run_id])
        summary = dict(zip([d[0] for d in cur.description], cur.fetchall()[0]))
    rate = report.new_rollouts / report.seconds * 60 if report.seconds else 0.0
    summary |= {"new_rollouts": report.new_rollouts, "resumed_skipped": report.skipped,
                "seconds": round(report.seconds, 1), "conversations_per_min": round(rate, 2)}
    if as_json:
        click.echo(json.dumps(summary, default=str, indent=2))
        return
    out.print(f"run {report.run_id}: {summary['rollouts']} conversations on {split}  "
              f"Average Reward {summary['average_reward']:.4f}  100% Success {summary['success_rate']:.4f}  "
              f"({report.new_rollouts} new in {report.seconds:.0f} s, {rate:.1f}/min)")


@eval_command.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--samples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True)
@warehouse_option
@json_option
def compare(run_a: str, run_b: str, samples: int, seed: int, warehouse_path: str, as_json: bool) -> None:
    """Compare two runs on the tasks both finished: reward difference A - B with a paired-bootstrap interval.

    \b
    Example:
        factory eval compare eval-1a2b3c eval-4d5e6f --samples 20000
    """
    with warehouse.opened(warehouse_path, read_only=True) as con:
        a, b = runs.resolve_run(con, run_a), runs.resolve_run(con, run_b)
        rows = con.execute(sql.load("queries/paired_rewards"), {"run_a": a, "run_b": b}).fetchall()
    if not rows:
        raise UserError(f"runs {a} and {b} share no finished task; evaluate both on the same split")
    reward_a, reward_b = [r[1] for r in rows], [r[2] for r in rows]
    stats = paired_bootstrap(reward_a, reward_b, samples=samples, seed=seed)
    result = {"run_a": a, "run_b": b, "reward_a": round(sum(reward_a) / len(rows), 4),
              "reward_b": round(sum(reward_b) / len(rows), 4),
              "success_a": round(sum(r >= 1 - 1e-6 for r in reward_a) / len(rows), 4),
              "success_b": round(sum(r >= 1 - 1e-6 for r in reward_b) / len(rows), 4), **stats}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{a} vs {b} on {stats['tasks']} shared tasks", title_justify="left")
    for col in ("", "Average Reward", "100% Success"):
        table.add_column(col)
    table.add_row("A", f"{result['reward_a']:.4f}", f"{result['success_a']:.4f}")
    table.add_row("B", f"{result['reward_b']:.4f}", f"{result['success_b']:.4f}")
    table.add_row("A - B", f"{stats['diff']:+.4f}  95% CI [{stats['low']:+.4f}, {stats['high']:+.4f}]",
                  f"P(A - B <= 0) = {stats['p_not_better']:.4f}")
    out.print(table)
