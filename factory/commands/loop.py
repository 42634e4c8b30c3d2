"""`factory loop`: M0 -> harvest -> M1, against the control M0', on the same test tasks (factory/loop.py)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from factory.loop import LoopConfig, LoopResult, run_loop
from factory.options import json_option, multiwoz_option, warehouse_option
from factory.output import err, out, print_json

DEFAULTS = LoopConfig(out=Path("models/loop"))


@click.command()
@click.option("--model", default=None,
              help="M0: a model folder or Hub id. Default: the tiny model in $FACTORY_HOME/models, bootstrapped "
                   "on first use (`factory model bootstrap`).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULTS.out,
              show_default=True, help="Folder for M1, M0' (m0-control) and loop.json; replaced models are the loop's.")
@click.option("--eval-tasks", type=click.IntRange(min=1), default=DEFAULTS.eval_tasks, show_default=True,
              help="Evaluate on the first N `test` tasks.")
@click.option("--full", is_flag=True, help="Evaluate on all 450 `test` tasks (overrides --eval-tasks).")
@click.option("--harvest-tasks", type=click.IntRange(min=1), default=DEFAULTS.harvest_tasks, show_default=True,
              help="Harvest the first N `val_harvest` tasks.")
@click.option("--beam", type=click.IntRange(min=2), default=DEFAULTS.beam, show_default=True,
              help="JOSH beam of the harvest.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.temperature,
              show_default=True, help="Sampling temperature of the harvest and the control rollouts.")
@click.option("--max-steps", type=click.IntRange(min=1), default=DEFAULTS.max_steps, show_default=True,
              help="Agent turns per conversation branch.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=DEFAULTS.max_new_tokens, show_default=True)
@click.option("--sft-epochs", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.sft_epochs,
              show_default=True, help="Passes over M1's golden paths; M0' gets the same number of SFT steps.")
@click.option("--sft-steps", type=click.IntRange(min=1), default=None,
              help="A fixed number of SFT steps for M1 and M0' instead of --sft-epochs.")
@click.option("--kto-steps", type=click.IntRange(min=0), default=DEFAULTS.kto_steps, show_default=True,
              help="KTO steps for M1 after its SFT, on the harvest's `kto` view (0 = SFT only; M0' gets none).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.learning_rate,
              show_default=True, help="SFT learning rate for M1 and M0'.")
@click.option("--min-reward", type=click.FloatRange(min=0), default=DEFAULTS.min_reward, show_default=True,
              help="Harvest rollouts whose golden path trains M1 (0.01: any goal met).")
@click.option("--concurrency", type=click.IntRange(min=1), default=DEFAULTS.concurrency, show_default=True)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@multiwoz_option
@warehouse_option
@json_option
def loop(model, out_dir, eval_tasks, full, harvest_tasks, beam, temperature, max_steps, max_new_tokens, sft_epochs,
         sft_steps, kto_steps, lr, min_reward, concurrency, seed, multiwoz, warehouse_path, as_json) -> None:
    """Close the self-training loop and measure it: M0 is evaluated on `test`, harvests `val_harvest` with JOSH,
    and is fine-tuned on its golden paths (M1); the control M0' gets the same SFT steps on M0's own unfiltered
    beam-1 rollouts of the same tasks. Prints Average Reward and 100% Success of M0, M0', M1 on the same test
    tasks with paired-bootstrap intervals for M1 - M0 and M1 - M0', and each stage's wall time.
    Every rollout stage is a warehouse run: running the loop again resumes them.

    \b
    Example:
        factory loop
        factory loop --full --harvest-tasks 200 --out models/loop-full
        factory loop --model Qwen/Qwen3-0.6B --max-new-tokens 512   # on a GPU
    """
    cfg = LoopConfig(out=out_dir.expanduser().resolve(), model=model, eval_tasks=None if full else eval_tasks,
                     harvest_tasks=harvest_tasks, beam=beam, temperature=temperature, max_steps=max_steps,
                     max_new_tokens=max_new_tokens, sft_epochs=sft_epochs, sft_steps=sft_steps, kto_steps=kto_steps,
                     learning_rate=lr, min_reward=min_reward,
                     concurrency=concurrency, seed=seed)
    result = run_loop(cfg, warehouse_path, multiwoz, err)
    if as_json:
        print_json(result.__dict__)
        return
    print_result(result)


def print_result(result: LoopResult) -> None:
    """The loop's table: scores per model, the two paired differences, and stage times."""
    tasks = result.comparisons["M1 - M0"]["tasks"]
    table = Table(title=f"JOSH loop on {tasks} test tasks", title_justify="left")
    for col in ("model", "Average Reward", "100% Success", "eval run", "folder"):
        table.add_column(col)
    for name in ("M0", "M0'", "M1"):
        s = result.scores[name]
        table.add_row(name, f"{s['average_reward']:.4f}", f"{s['success_rate']:.4f}", result.runs[f"eval {name}"],
                      result.models[name])
    for label, c in result.comparisons.items():
        table.add_row(label, f"{c['diff']:+.4f}  95% CI [{c['low']:+.4f}, {c['high']:+.4f}]",
                      f"P(<= 0) = {c['p_not_better']:.3f}", "", "")
    out.print(table)
    times = Table(title="wall time per stage", title_justify="left")
    times.add_column("stage")
    times.add_column("seconds", justify="right")
    for stage, seconds in result.seconds.items():
        times.add_row(stage, f"{seconds:.1f}")
    times.add_row("total", f"{sum(result.seconds.values()):.1f}")
    out.print(times)
    for name, t in result.training.items():
        out.print(f"{name}: SFT on {t['rows']} rows of view {t['view']}, {t['steps']} steps, final loss "
                  f"{t['final_loss']:.4f}")
