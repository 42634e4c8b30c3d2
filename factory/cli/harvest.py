"""`factory harvest`: JOSH beam search over many conversations, every branch into the warehouse."""

from __future__ import annotations

import dataclasses

import click

from factory.cli.options import check_user, rollout_options, search_option
from factory.jobs import launch, rollouts
from factory.jobs.launch import Paths, RunRequest
from factory.output import err, out, print_json
from search.josh import HARVEST, PARITY


def _apply_parity(ctx: click.Context, values: dict[str, str]) -> dict[str, str]:
    """Fill the preset; an explicitly given flag that contradicts it is a usage error."""
    conflicts = [f"--{k.replace('_', '-')} {values[k]}" for k, v in PARITY.items()
                 if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE and values[k] != v]
    if conflicts:
        raise click.UsageError(f"--parity sets {', '.join(f'{k}={v}' for k, v in PARITY.items())}; "
                               f"it conflicts with {', '.join(conflicts)}")
    return {**values, **PARITY}


@click.command()
@rollout_options(default_split="val_harvest", preset=HARVEST)
@search_option("beam", HARVEST)
@search_option("collapse", HARVEST)
@search_option("seed_policy", HARVEST)
@search_option("credit", HARVEST)
@search_option("unrewarded", HARVEST)
@search_option("finish_dialogue", HARVEST)
@click.option("--parity", is_flag=True, help="The reference's behaviour: " + ", ".join(
    f"--{k.replace('_', '-')} {v}" for k, v in PARITY.items()) + ".")
@search_option("serial", HARVEST)
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Shard the tasks over Ray workers (`pip install 'josh-factory[ray]'`); no ADDRESS = "
                   "$RAY_ADDRESS or a new local Ray. Same run id, seeds, resume and rows as without --ray (a model's "
                   "batch effects aside); --concurrency is per worker. A dead worker loses only its rollouts in "
                   "flight: exit 1, re-run to complete.")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None,
              help="Ray workers, each with its own backend [default: one per GPU of the cluster, else per CPU].")
@click.pass_context
def harvest(ctx: click.Context, agent, base_url, request_timeout, user, user_model, user_base_url, protocol, results,
            split, limit, task_ids, concurrency, temperature, seed, max_turns, max_new_tokens, semantics, run_name,
            env, multiwoz, taubench_path, warehouse_path, as_json, beam, collapse, seed_policy, credit, unrewarded,
            finish_dialogue, parity, serial, ray_address, ray_workers) -> None:
    """Harvest JOSH trees: sample every agent turn on several branches, collapse onto the branch that meets a
    goal, and store every branch, message, tool call and reward. The sft, kto and dpo views read them.

    Re-running the same command resumes the run; Ctrl-C stops after committing what finished.

    Exit codes: 0 every rollout done; 1 some rollouts failed on backend or user-simulator errors (all committed,
    said on stderr; the same command again retries them), Ray workers died, or another infrastructure failure;
    2 a user mistake; 130 interrupted (the same command again resumes).

    \b
    Example:
        factory harvest --agent teacher --user rule --split val_harvest --limit 20 --beam 8
        factory harvest --limit 60                      # the default tiny model
        factory harvest --agent vllm:Qwen/Qwen3-8B --limit 200 --ray   # vLLM on each GPU of a local Ray
        factory sql "select count(*) from sft"
    """
    check_user(user, user_model)
    values = {"semantics": semantics, "seed_policy": seed_policy, "credit": credit, "unrewarded": unrewarded}
    if parity:
        values = _apply_parity(ctx, values)
    if serial:
        concurrency = 1
    search = dataclasses.replace(HARVEST, beam=beam, max_turns=max_turns, temperature=temperature,
                                 max_new_tokens=max_new_tokens, collapse=collapse, protocol=protocol, seed=seed,
                                 finish_dialogue=finish_dialogue, serial=serial, **values)
    request = RunRequest("harvest", agent, search, results=results, split=split, env=env, base_url=base_url,
                         user=user, user_model=user_model, user_base_url=user_base_url, limit=limit,
                         task_ids=task_ids, concurrency=concurrency, run_name=run_name,
                         request_timeout_s=request_timeout, ray_address=ray_address, ray_workers=ray_workers)
    report, summary = launch.run(request, Paths(warehouse_path, multiwoz, taubench_path), err)
    split = summary["split"]
    if as_json:
        print_json(summary)
        if summary.get("failed"):
            err.print(f"[yellow]{rollouts.failed_message(summary['failed'])}[/yellow]")
            ctx.exit(rollouts.FAILED_EXIT)
        return
    out.print(f"run {report.run_id}: {summary['rollouts']} rollouts on {split}  "
              f"Average Reward {summary['average_reward']:.4f}  100% Success {summary['success_rate']:.4f}  "
              f"nodes {summary['nodes']} (pruned {summary['pruned']})  tool errors {summary['tool_error_rate']:.1%}  "
              f"({report.new_rollouts} new in {report.seconds:.0f} s)")
    if summary.get("failed"):
        err.print(f"[yellow]{rollouts.failed_message(summary['failed'])}[/yellow]")
    out.print(f'datasets: factory sql -p run_id {report.run_id} "select count(*) from sft" (also kto, dpo; '
              "-p min_reward 0.01 counts partly rewarded rollouts)")
    if summary.get("failed"):
        ctx.exit(rollouts.FAILED_EXIT)
