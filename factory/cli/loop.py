"""`factory loop`: M0 -> harvest -> M1 (-> M2 ...), each against its control, on the same test tasks."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from factory.cli.options import (
    agent_option,
    deprecated_alias,
    env_option,
    json_option,
    max_steps_alias,
    multiwoz_option,
    results_option,
    search_option,
    taubench_option,
    warehouse_option,
)
from factory.jobs.loop import BASELINES, LOOP_HARVEST, LoopConfig, LoopResult, run_loop, total_cpu
from factory.output import err, out, print_json
from train.recipes import LOSSES

DEFAULTS = LoopConfig(out=Path("models/loop"))
HARVEST_SPLITS = {"toolwoz": DEFAULTS.harvest_split, "retail": "train"}  # splits the test tasks are not in


@click.command()
@agent_option("M0: a model folder, Hub id or GGUF file (as `factory eval --agent`). Default: the tiny model in "
              "$FACTORY_HOME/models, bootstrapped on first use (`factory model bootstrap`).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULTS.out,
              show_default=True, help="Folder for M1, M0' (m0-control), M2, M1' ..., loop.json and loop.png; "
                                      "replaced models are the loop's.")
@click.option("--iterations", type=click.IntRange(min=1), default=DEFAULTS.iterations, show_default=True,
              help="Self-training iterations: M_k+1 = M_k + SFT on M_k's own harvest of fresh tasks.")
@click.option("--eval-tasks", type=click.IntRange(min=1), default=DEFAULTS.eval_tasks,
              help="Evaluate on the first N `test` tasks (default: all 450).")
@click.option("--full", is_flag=True, help="Evaluate on all 450 `test` tasks (the default; overrides --eval-tasks).")
@click.option("--harvest-tasks", type=click.IntRange(min=1), default=DEFAULTS.harvest_tasks, show_default=True,
              help="Harvest tasks per iteration: the first N, then the next N, ...")
@click.option("--harvest-split", default=None,
              help="Where the harvest tasks come from: ToolWOZ's `synth` (2000 goals sampled from the databases; "
                   "the default) or MultiWOZ's `val_harvest` dialogues (396); τ-bench retail's `train` (500).")
@search_option("beam", LOOP_HARVEST)
@search_option("temperature", LOOP_HARVEST, type=click.FloatRange(min=0, min_open=True))
@search_option("max_turns", LOOP_HARVEST)
@max_steps_alias
@search_option("max_new_tokens", LOOP_HARVEST)
@results_option
@click.option("--sft-epochs", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.sft_epochs,
              show_default=True, help="Passes over M1's golden paths; M0' gets the same number of SFT steps.")
@click.option("--sft-steps", type=click.IntRange(min=1), default=None,
              help="A fixed number of SFT steps for M1 and M0' instead of --sft-epochs.")
@click.option("--sft-loss", type=click.Choice(LOSSES), default=DEFAULTS.sft_loss, show_default=True,
              help="Tokens the SFT of M1 and M0' trains on (as `factory train sft --loss`): `calls` leaves out the "
                   "assistant's free text, which the reward never checks.")
@click.option("--wise-ft", type=click.FloatRange(min=0, max=1, min_open=True), default=DEFAULTS.wise_ft,
              show_default=True, help="M1 and M0' keep (1 - W) x M_k's weights + W x their trained ones (as `factory "
                                      "train --wise-ft`; 1 = the trained weights).")
@click.option("--kto-steps", type=click.IntRange(min=0), default=DEFAULTS.kto_steps, show_default=True,
              help="KTO steps for M1 after its SFT, on the harvest's `kto` view (0 = SFT only; M0' gets none).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.learning_rate,
              show_default=True, help="SFT learning rate for M1 and M0' (as `factory train --learning-rate`).")
@deprecated_alias("--lr", "--learning-rate", "learning_rate", type=click.FloatRange(min=0, min_open=True))
@click.option("--min-reward", type=click.FloatRange(min=0), default=DEFAULTS.min_reward, show_default=True,
              help="Harvest rollouts whose golden path trains M1 (0.01: any goal met).")
@click.option("--concurrency", type=click.IntRange(min=1), default=DEFAULTS.concurrency, show_default=True,
              help="Conversations in flight in every rollout stage.")
@click.option("--workers", type=click.IntRange(min=1), default=DEFAULTS.workers, show_default=True,
              help="Processes the harvest and eval stages run in: 1 = this one; N > 1 = N local Ray workers of one "
                   "CPU each, sharing --concurrency (ToolWOZ; the same runs and rows either way).")
@click.option("--baseline", type=click.Choice(BASELINES), default=None,
              help="Also train each iteration's rival at JOSH's compute: `rft` (rejection sampling) samples K "
                   "independent beam-1 conversations per harvest task (K = JOSH's generated tokens / one sample's), "
                   "trains M_k^rft on the successful ones (same SFT steps, averaging and KTO, the failed samples as "
                   "negatives) and reports M_k+1 - M_k^rft.")
@search_option("seed", LOOP_HARVEST, type=int)
@env_option
@multiwoz_option
@taubench_option
@warehouse_option
@json_option
def loop(agent, out_dir, iterations, eval_tasks, full, harvest_tasks, harvest_split, beam, temperature, max_turns,
         max_new_tokens, results, sft_epochs, sft_steps, sft_loss, wise_ft, kto_steps, learning_rate, min_reward,
         concurrency, workers, baseline, seed, env, multiwoz, taubench_path, warehouse_path, as_json) -> None:
    """Close the self-training loop and measure it: M0 is evaluated on `test`, harvests (--harvest-split) with JOSH,
    and is fine-tuned on its golden paths, then given --kto-steps of KTO on golden vs failed siblings (M1); the
    control M0' gets the same SFT steps on M0's own unfiltered beam-1 rollouts of the same tasks. With --iterations
    K, M1 then harvests the next tasks and becomes M2 (against M1'), and so on. With --baseline rft every iteration
    also trains M_k^rft on rejection sampling at JOSH's generated tokens (independent samples, the successful ones
    kept) and reports M_k+1 - M_k^rft. Prints Average Reward and 100% Success of every model on the same test
    tasks with paired-bootstrap intervals for M_k+1 - M_k and M_k+1 - M_k', and each stage's wall time; writes
    loop.json and loop.png. Every rollout stage is a warehouse run: running the loop again resumes them.

    Exit codes: 0 done; 1 a rollout stage had rollouts fail on backend or user-simulator errors (the loop stops
    there, everything committed; running it again retries them and goes on) or an infrastructure failure; 2 a user
    mistake; 130 interrupted (running it again resumes).

    \b
    Example:
        factory loop                                          # ~28 min on 2 cores
        factory loop --eval-tasks 100 --harvest-tasks 200 --out models/loop-small
        factory loop --iterations 2                           # M1 harvests the next 600 synth tasks -> M2
        factory loop --workers 2                              # both cores: rollouts in two processes
        factory loop --iterations 3 --baseline rft            # M1..M3, each against rejection sampling
        factory loop --agent Qwen/Qwen3-0.6B --max-new-tokens 512   # on a GPU
        factory loop --env retail --agent Qwen/Qwen3-0.6B --harvest-tasks 500   # τ-bench retail, on a GPU
    """
    if beam < 2:
        raise click.BadParameter("the loop compares a JOSH harvest (beam >= 2) with beam-1 control rollouts; at "
                                 "beam 1 both are the same run", param_hint="--beam")
    if env == "airline":
        raise click.BadParameter("τ-bench airline has only a test split: a loop would train on the tasks it "
                                 "evaluates; use --env retail (harvests train, evaluates test)", param_hint="--env")
    if workers > 1 and env != "toolwoz":
        raise click.BadParameter("Ray workers run ToolWOZ only for now; drop --workers", param_hint="--workers")
    if harvest_split in ("test", "test_full"):
        raise click.BadParameter("the loop evaluates on `test`: harvest another split", param_hint="--harvest-split")
    cfg = LoopConfig(out=out_dir.expanduser().resolve(), model=agent, iterations=iterations,
                     eval_tasks=None if full else eval_tasks, harvest_tasks=harvest_tasks,
                     harvest_split=harvest_split or HARVEST_SPLITS[env], env=env, beam=beam,
                     temperature=temperature, max_turns=max_turns, max_new_tokens=max_new_tokens, results=results,
                     sft_epochs=sft_epochs, sft_steps=sft_steps, sft_loss=sft_loss, wise_ft=wise_ft,
                     kto_steps=kto_steps,
                     learning_rate=learning_rate, min_reward=min_reward, concurrency=concurrency, workers=workers,
                     seed=seed, baseline=baseline)
    result = run_loop(cfg, warehouse_path, multiwoz, err, taubench_path)
    if as_json:
        print_json(result.__dict__)
        return
    print_result(result, cfg.out / "loop.json")


def print_result(result: LoopResult, loop_json: Path) -> None:
    """The loop's tables (scores per model; the paired differences; stage times), then where to look next."""
    tasks = result.comparisons["M1 - M0"]["tasks"]
    iterations = len(result.iterations)
    scores = Table(title=f"JOSH loop on {tasks} test tasks" + (f", {iterations} iterations" if iterations > 1 else ""),
                   title_justify="left")
    for col in ("model", "Average Reward", "100% Success", "eval run", "folder"):
        scores.add_column(col, justify="right" if col in ("Average Reward", "100% Success") else "left",
                          no_wrap=col == "eval run", overflow="fold")
    for name in result.scores:
        s = result.scores[name]
        scores.add_row(name, f"{s['average_reward']:.4f}", f"{s['success_rate']:.4f}", result.runs[f"eval {name}"],
                       result.models[name])
    out.print(scores)
    diffs = Table(title="paired bootstrap of Average Reward over the same tasks", title_justify="left")
    for col in ("difference", "mean", "95% CI", "P(<= 0)"):
        diffs.add_column(col, justify="left" if col == "difference" else "right")
    for label, c in result.comparisons.items():
        diffs.add_row(label, f"{c['diff']:+.4f}", f"[{c['low']:+.4f}, {c['high']:+.4f}]", f"{c['p_not_better']:.3f}")
    out.print(diffs)
    times = Table(title="wall time per stage (CPU: this process and every process under it, Ray's workers too)",
                  title_justify="left")
    for col in ("stage", "seconds", "CPU %", "system % of user", "peak RSS so far (MB)"):
        times.add_column(col, justify="left" if col == "stage" else "right")
    for stage, seconds in result.seconds.items():
        cpu = result.cpu.get(stage)
        times.add_row(stage, f"{seconds:.1f}", f"{cpu['cpu_percent']}" if cpu else "",
                      f"{cpu['system_percent_of_user']:.1f}" if cpu else "", str(result.peak_rss_mb.get(stage, "")))
    total = total_cpu(result)
    times.add_row("total", f"{sum(result.seconds.values()):.1f}", f"{total['cpu_percent']}",
                  f"{total['system_percent_of_user']:.1f}", str(max(result.peak_rss_mb.values(), default="")))
    out.print(times)
    data = Table(title="training data per generated token (SFT rows: golden paths / successful samples)",
                 title_justify="left")
    for col in ("iteration", "method", "generated tokens", "SFT rows", "per 1000 tokens", "tasks", "full successes",
                "KTO rows"):
        data.add_column(col, justify="left" if col in ("iteration", "method") else "right")
    for it in result.iterations:
        for method, d in it["data"].items():
            per = d["sft_rows_per_1000_tokens"]
            label = method if method == "JOSH" else f"{method} ({d['samples_per_task']} per task)"
            data.add_row(it["label"], label, f"{d['generated_tokens']:,}", str(d["sft_rows"]),
                         "-" if per is None else f"{per:.3f}", str(d["tasks_kept"]), str(d["full_successes"]),
                         "-" if d["kto_rows"] is None else str(d["kto_rows"]))
    out.print(data)
    for name, t in result.training.items():
        out.print(f"{name}: {t['method'].upper()} on {t['rows']} rows of view {t['view']}, {t['steps']} steps, "
                  f"final loss {t['final_loss']:.4f}")
    harvest, min_reward = result.runs["harvest M0"], result.config["min_reward"]
    out.print(f"\nEverything above is in {loop_json} (plotted in {loop_json.with_suffix('.png')}). Next:")
    out.print(f'  factory sql -p run_id {harvest} -p min_reward {min_reward} "select count(*) from sft"'
              f"   # M1's training rows (the view's default min_reward is 1.0)", highlight=False)
    out.print(f'  factory sql "select * from harvest_summary where run_id = \'{harvest}\'"   # the harvest',
              highlight=False)
    out.print(f"  factory eval compare {result.runs['eval M1']} {result.runs['eval M0']} --resamples 20000",
              highlight=False)
    out.print("  factory loop --iterations 2   # M1 harvests the next tasks -> M2 (re-running resumes)",
              highlight=False)
