"""`factory train sft|kto|dpo`: the command-line face of factory/jobs/training.py (view -> TRL -> model folder)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from factory.cli.options import deprecated_alias, json_option, warehouse_option
from factory.errors import UserError
from factory.jobs import default_model
from factory.jobs.training import TrainJob, train_model
from factory.output import out, print_json
from train.recipes import LOSSES


POSITIVE = click.FloatRange(min=0, min_open=True)


def _options(f: Callable) -> Callable:
    """The options every `factory train` method shares."""
    options = [
        click.option("--view", default=None, help="Dataset view to read (default: the method's view)."),
        click.option("--from-run", "run_ids", multiple=True,
                     help="Only rows of this run (repeatable; a unique prefix works). Default: every harvest run."),
        deprecated_alias("--run", "--from-run", "run_ids", multiple=True),
        click.option("--min-reward", type=float, default=None,
                     help="Keep rollouts with at least this reward (view default: 1.0)."),
        click.option("--model", "--agent", "model", default=None,
                     help="Model folder, Hub id or GGUF file (`model.gguf`, needs the `gguf` extra; loaded "
                          "dequantised, saved as a plain folder) to start from. A ChatML template that ignores tools "
                          "is replaced by train/chatml_tools.jinja. Default: the tiny model in $FACTORY_HOME/models."),
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Folder for the trained model, tokenizer and factory.json."),
        click.option("--force", is_flag=True, help="Replace --out if an earlier `factory train` wrote it."),
        click.option("--recipe", "recipe_name", type=click.Choice(["cpu", "paper"]), default="cpu",
                     show_default=True,
                     help="Hyper-parameters: `cpu` (tiny model, minutes) or `paper` (the reference's 4-bit QLoRA; "
                          "needs CUDA). The options below override single values."),
        click.option("--lora/--no-lora", default=None, help="Train a LoRA adapter instead of every weight "
                                                            "(default: the recipe's; paper = on)."),
        # Training flags are TRL's TrainingArguments names; each sets the Recipe field of that name.
        click.option("--num-train-epochs", type=POSITIVE, default=None,
                     help="Passes over the rows (default: the recipe's; cpu: sft 3, kto and dpo 1)."),
        click.option("--max-steps", type=click.IntRange(min=1), default=None,
                     help="Stop after N optimizer steps (overrides --num-train-epochs)."),
        click.option("--learning-rate", type=POSITIVE, default=None,
                     help="Learning rate (default: the recipe's; cpu: sft 1e-3, kto and dpo 5e-5)."),
        click.option("--per-device-train-batch-size", type=click.IntRange(min=1), default=None,
                     help="Rows per device per step (default: the recipe's; cpu 4)."),
        click.option("--gradient-accumulation-steps", type=click.IntRange(min=1), default=None,
                     help="Batches per optimizer step (default: the recipe's; cpu 1)."),
        deprecated_alias("--epochs", "--num-train-epochs", "num_train_epochs", type=POSITIVE),
        deprecated_alias("--lr", "--learning-rate", "learning_rate", type=POSITIVE),
        deprecated_alias("--batch-size", "--per-device-train-batch-size", "per_device_train_batch_size",
                         type=click.IntRange(min=1)),
        deprecated_alias("--grad-accum", "--gradient-accumulation-steps", "gradient_accumulation_steps",
                         type=click.IntRange(min=1)),
        click.option("--max-length", type=click.IntRange(min=16), default=None,
                     help="Tokens per sequence; longer ones are cut (default: the recipe's; cpu 2048)."),
        click.option("--wise-ft", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                     help="Save (1 - W) x the start model's weights + W x the trained ones (WiSE-FT: keeps what "
                          "training learnt, undoes most of its drift; default 1 = the trained weights as they are)."),
        click.option("--allow-test-tasks", is_flag=True,
                     help="Train on rows from `test` tasks too (they are the benchmark: off by default)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Training seed (data order, init)."),
        warehouse_option,
        json_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group()
def train() -> None:
    """Train a model on a dataset view: `sft` on golden conversations, `kto` on labelled turns, `dpo` on
    golden-vs-failed turn pairs.

    \b
    Example:
        factory harvest --agent teacher --split val_harvest --limit 50
        factory train sft --out models/sft-1
        factory train kto --model models/sft-1 --out models/kto-1 --min-reward 0
    """


@train.command()
@_options
@click.option("--drop-tool-errors", is_flag=True, help="Skip conversations with any failed tool call (the reference).")
@click.option("--chat-template", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A Jinja chat template to train with (and save), for models whose own template has no "
                   "{% generation %} markers (needed by --loss assistant); it wins over the automatic ChatML + "
                   "tools one (train/chatml_tools.jinja).")
@click.option("--loss", type=click.Choice(LOSSES), default=None,
              help="Tokens the loss covers: `all` of the conversation (the reference; the recipes' default), the "
                   "`assistant`'s only, or `calls`: the assistant's tool-call turns, user turns and tool results, "
                   "not its free text (which JOSH's reward never checks).")
def sft(drop_tool_errors: bool, chat_template: Path | None, loss: str | None, **options: Any) -> None:
    """Supervised fine-tuning on whole successful conversations (view `sft`), loss on every token by default.

    \b
    Example:
        factory train sft --out models/sft-1
        factory train sft --from-run harvest-1a2b3c --drop-tool-errors --loss assistant --out models/sft-2
        factory train sft --from-run harvest-1a2b3c --loss calls --wise-ft 0.5 --learning-rate 3e-4 --out models/sft-3
        factory train sft --model Qwen/Qwen3-0.6B --recipe paper --out models/qwen-sft   # on a GPU
        factory train sft --model ~/.cache/josh-factory/models/SmolLM2-135M-Instruct.Q4_1.gguf --out models/smol-sft
    """
    template = chat_template.read_text() if chat_template else None
    _train("sft", options, {"drop_tool_errors": drop_tool_errors or None}, {"loss": loss},
           {"chat_template": template})


@train.command()
@_options
@click.option("--beta", type=click.FloatRange(min=0, min_open=True), default=None, help="KL weight (default 0.1).")
@click.option("--desirable-weight", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Loss weight of desirable (golden-path) turns (default 1.0).")
@click.option("--undesirable-weight", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Loss weight of undesirable (failed-sibling) turns (default 1.0; the paper recipe 2.71).")
def kto(beta: float | None, desirable_weight: float | None, undesirable_weight: float | None,
        **options: Any) -> None:
    """KTO on single assistant turns: golden-path turns desirable, failed siblings' turns undesirable (view `kto`).

    \b
    Example:
        factory train kto --model models/sft-1 --out models/kto-1 --min-reward 0 --undesirable-weight 2.71
        factory train kto --model models/sft-1 --per-device-train-batch-size 8 --out models/kto-2
    """
    overrides = {"beta": beta, "desirable_weight": desirable_weight, "undesirable_weight": undesirable_weight}
    _train("kto", options, {}, overrides, {})


@train.command()
@_options
@click.option("--beta", type=click.FloatRange(min=0, min_open=True), default=None, help="KL weight (default 0.1).")
def dpo(beta: float | None, **options: Any) -> None:
    """DPO on (golden turn, failed sibling's turn) pairs at each divergence point (view `dpo`).

    \b
    Example:
        factory train dpo --model models/sft-1 --out models/dpo-1
        factory train dpo --model models/sft-1 --from-run harvest-1a2b3c --lora --out models/dpo-lora
    """
    _train("dpo", options, {}, {"beta": beta}, {})


# -- the shared body ----------------------------------------------------------------------------------------

def _train(method: str, o: dict[str, Any], view_params: dict[str, Any], overrides: dict[str, Any],
           trainer_kwargs: dict[str, Any]) -> None:
    recipe = _recipe(method, o, overrides)
    job = TrainJob(method=method, recipe=recipe, out_dir=o["out_dir"], warehouse_path=o["warehouse_path"],
                   model=o["model"] or default_model.require(), view=o["view"], run_ids=o["run_ids"],
                   view_params={"min_reward": o["min_reward"], **view_params}, seed=o["seed"],
                   allow_test_tasks=o["allow_test_tasks"], force=o["force"], trainer_kwargs=trainer_kwargs)
    summary = train_model(job)
    if o["as_json"]:
        print_json(summary)
        return
    loss = f"{summary['final_loss']:.4f}" if summary["final_loss"] is not None else "n/a"
    out.print(f"run {summary['run_id']}: {method} on {summary['rows']} rows of view {summary['view']} -> "
              f"{summary['out']}  steps {summary['steps']}  final loss {loss}  ({summary['seconds']:.0f} s, "
              f"{summary['steps_per_second'] or 0:.2f} steps/s)")


def _recipe(method: str, o: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """The chosen recipe with the command line's values on top."""
    from train import recipes

    recipe = recipes.get(o["recipe_name"], method)
    trl_named = ("num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "max_length")  # options named after the Recipe fields they set
    values = {**{k: o[k] for k in trl_named}, "wise_ft": o["wise_ft"], **overrides}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in values.items() if v is not None})
    if o["lora"] is True and recipe.lora is None:
        recipe = dataclasses.replace(recipe, lora=recipes.Lora())
    if o["lora"] is False:
        if recipe.load_in_4bit:
            raise UserError(f"--recipe {recipe.name} trains a 4-bit model, which needs LoRA; drop --no-lora")
        recipe = dataclasses.replace(recipe, lora=None)
    return recipe
