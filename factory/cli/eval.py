"""`factory eval`: single-branch conversations of an agent with a simulated user, stored as an eval run."""

from __future__ import annotations

import dataclasses

import click
from rich.table import Table

from factory.cli.options import check_user, deprecated_alias, json_option, rollout_options, warehouse_option
from factory.jobs import launch, rollouts
from factory.jobs.launch import Paths, RunRequest
from factory.output import err as console
from factory.output import out, print_json
from factory.store import runs
from search.josh import EVALUATION


@click.group(name="eval", invoke_without_command=True)
@rollout_options(default_split="test", preset=EVALUATION)
@click.pass_context
def eval_command(ctx: click.Context, agent, base_url, request_timeout, user, user_model, user_base_url, protocol,
                 results, split, limit, task_ids, concurrency, temperature, seed, max_turns, max_new_tokens,
                 semantics, run_name, env, multiwoz, taubench_path, warehouse_path, as_json) -> None:
    """Evaluate an agent: one conversation per task with a simulated user; prints Average Reward and 100% Success.

    The same engine as `factory harvest` at beam 1, run until the user ends the conversation. Interrupted
    runs resume when the same command runs again.

    Exit codes: 0 every rollout done; 1 some rollouts failed on backend or user-simulator errors (all committed,
    said on stderr; the same command again retries them) or an infrastructure failure; 2 a user mistake; 130
    interrupted (the same command again resumes).

    \b
    Example:
        factory eval --agent teacher --user rule --split val --limit 50
        factory eval --agent openai:my-model --base-url http://127.0.0.1:8000/v1 --split test
        factory eval compare eval-1a2b3c eval-4d5e6f
    """
    if ctx.invoked_subcommand is not None:
        return
    check_user(user, user_model)
    search = dataclasses.replace(EVALUATION, max_turns=max_turns, temperature=temperature,
                                 max_new_tokens=max_new_tokens, semantics=semantics, protocol=protocol, seed=seed)
    request = RunRequest("eval", agent, search, results=results, split=split, env=env, base_url=base_url, user=user,
                         user_model=user_model, user_base_url=user_base_url, limit=limit, task_ids=task_ids,
                         concurrency=concurrency, run_name=run_name, request_timeout_s=request_timeout)
    report, summary = launch.run(request, Paths(warehouse_path, multiwoz, taubench_path), console)
    split = summary["split"]
    if as_json:
        print_json(summary)
    else:
        out.print(f"run {report.run_id}: {summary['rollouts']} conversations on {split}  "
                  f"Average Reward {summary['average_reward']:.4f}  100% Success {summary['success_rate']:.4f}  "
                  f"({report.new_rollouts} new in {report.seconds:.0f} s, {summary['conversations_per_min']:.1f}/min)")
    if summary.get("failed"):
        console.print(f"[yellow]{rollouts.failed_message(summary['failed'])}[/yellow]")
        ctx.exit(rollouts.FAILED_EXIT)


@eval_command.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Bootstrap resamples.")
@deprecated_alias("--samples", "--resamples", "resamples", type=click.IntRange(min=100))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling.")
@warehouse_option
@json_option
def compare(run_a: str, run_b: str, resamples: int, seed: int, warehouse_path: str, as_json: bool) -> None:
    """Compare two runs on the tasks both finished: reward difference A - B with a paired-bootstrap interval.

    \b
    Example:
        factory eval compare eval-1a2b3c eval-4d5e6f --resamples 20000
    """
    result = runs.compare(warehouse_path, run_a, run_b, resamples=resamples, seed=seed)
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{result['run_a']} (A) vs {result['run_b']} (B) on {result['tasks']} shared tasks",
                  title_justify="left")
    for col in ("run", "Average Reward", "100% Success"):
        table.add_column(col, justify="left" if col == "run" else "right")
    table.add_row(f"A {result['run_a']}", f"{result['reward_a']:.4f}", f"{result['success_a']:.4f}")
    table.add_row(f"B {result['run_b']}", f"{result['reward_b']:.4f}", f"{result['success_b']:.4f}")
    out.print(table)
    out.print(f"A - B Average Reward {result['diff']:+.4f}, 95% CI [{result['low']:+.4f}, {result['high']:+.4f}], "
              f"P(A - B <= 0) = {result['p_not_better']:.4f} (paired bootstrap, {resamples} resamples)")
