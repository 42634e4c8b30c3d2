"""`factory harvest`: JOSH beam search over many conversations, every branch into the warehouse."""

from __future__ import annotations

import click

from factory import rollouts
from factory.options import check_user, rollout_options
from factory.output import err, out, print_json
from search.josh import COLLAPSE_POLICIES, SearchConfig

# `--parity` = the reference's behaviour, as explicit settings (each can also be set on its own).
PARITY = {"semantics": "parity", "seed_policy": "shared", "credit": "first", "unrewarded": "drop"}


def _apply_parity(ctx: click.Context, values: dict[str, str]) -> dict[str, str]:
    """Fill the preset; an explicitly given flag that contradicts it is a usage error."""
    conflicts = [f"--{k.replace('_', '-')} {values[k]}" for k, v in PARITY.items()
                 if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE and values[k] != v]
    if conflicts:
        raise click.UsageError(f"--parity sets {', '.join(f'{k}={v}' for k, v in PARITY.items())}; "
                               f"it conflicts with {', '.join(conflicts)}")
    return {**values, **PARITY}


@click.command()
@rollout_options(default_split="val_harvest", default_temperature=1.0)
@click.option("--beam", type=click.IntRange(min=1), default=8, show_default=True,
              help="Live branches per task (1 -> 2 -> 4 -> ... up to BEAM).")
@click.option("--collapse", type=click.Choice(COLLAPSE_POLICIES), default="first", show_default=True,
              help="Which rewarded branch the tree collapses onto (`first` = the reference).")
@click.option("--seed-policy", type=click.Choice(["distinct", "shared"]), default="distinct", show_default=True,
              help="`distinct`: a recorded seed per branch; `shared`: every sibling the same (the reference).")
@click.option("--credit", type=click.Choice(["all", "first"]), default="all", show_default=True,
              help="Credit every goal the target's turn met, or only the first (the reference).")
@click.option("--unrewarded", type=click.Choice(["keep", "drop"]), default="keep", show_default=True,
              help="Store the branches grown after the last collapse (negative evidence) or drop them.")
@click.option("--finish-dialogue", is_flag=True, help="After the last goal, let the user close the conversation.")
@click.option("--parity", is_flag=True, help="The reference's behaviour: " + ", ".join(
    f"--{k.replace('_', '-')} {v}" for k, v in PARITY.items()) + ".")
@click.option("--serial", is_flag=True, help="Step one branch at a time, one task at a time (benchmarks).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Shard the tasks over Ray workers (`pip install 'josh-factory[ray]'`); no ADDRESS = "
                   "$RAY_ADDRESS or a new local Ray. Same run id, seeds, resume and rows as without --ray (a model's "
                   "batch effects aside); --concurrency is per worker. A dead worker loses only its rollouts in "
                   "flight: exit 1, re-run to complete.")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None,
              help="Ray workers, each with its own backend [default: one per GPU of the cluster, else per CPU].")
@click.pass_context
def harvest(ctx: click.Context, agent, base_url, user, user_model, user_base_url, protocol, split, limit, task_ids,
            concurrency, temperature, seed, max_steps, max_new_tokens, semantics, run_name, multiwoz, warehouse_path,
            as_json, beam, collapse, seed_policy, credit, unrewarded, finish_dialogue, parity, serial, ray_address,
            ray_workers) -> None:
    """Harvest JOSH trees: sample every agent turn on several branches, collapse onto the branch that meets a
    goal, and store every branch, message, tool call and reward. The sft, kto and dpo views read them.

    Re-running the same command resumes the run; Ctrl-C stops after committing what finished.

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
    search = SearchConfig(beam=beam, max_steps=max_steps, temperature=temperature, max_new_tokens=max_new_tokens,
                          collapse=collapse, semantics=values["semantics"], protocol=protocol, seed=seed,
                          distinct_seeds=values["seed_policy"] == "distinct", credit_all=values["credit"] == "all",
                          finish_dialogue=finish_dialogue, keep_unrewarded=values["unrewarded"] == "keep",
                          serial=serial)
    settings = rollouts.build_settings("harvest", agent, search, base_url=base_url, user=user, user_model=user_model,
                                       user_base_url=user_base_url, split=split, limit=limit, task_ids=task_ids,
                                       concurrency=concurrency, multiwoz_path=multiwoz,
                                       warehouse_path=warehouse_path)
    if temperature == 0 and beam > 1 and settings.backend != "teacher":
        err.print("[yellow]warning: temperature 0 makes every branch alike; JOSH needs sampling[/yellow]")
    if ray_address is not None:
        from factory.ray_harvest import execute_on_ray

        report = execute_on_ray(settings, warehouse_path, run_name=run_name, multiwoz_path=multiwoz, console=err,
                                address=ray_address or None, workers=ray_workers)
    else:
        report = rollouts.execute(settings, warehouse_path, run_name=run_name, multiwoz_path=multiwoz, console=err)
    summary = rollouts.summary("harvest_summary", warehouse_path, report)
    if as_json:
        print_json(summary)
        return
    out.print(f"run {report.run_id}: {summary['rollouts']} rollouts on {split}  "
              f"Average Reward {summary['average_reward']:.4f}  100% Success {summary['success_rate']:.4f}  "
              f"nodes {summary['nodes']} (pruned {summary['pruned']})  tool errors {summary['tool_error_rate']:.1%}  "
              f"({report.new_rollouts} new in {report.seconds:.0f} s)")
    out.print('datasets: factory sql "select count(*) from sft" (also kto, dpo; -p run_id ' + report.run_id + ")")
