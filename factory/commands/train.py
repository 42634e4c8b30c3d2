"""`factory train sft|kto|dpo`: a dataset view of the warehouse -> Arrow -> datasets.Dataset -> TRL -> a model folder.

The warehouse is only read while the data is loaded (read-only, so a harvest may keep writing); the `train`
run is recorded in one short write when training ends, with its status, so training never holds the
warehouse's writer lock. The output folder holds the model (or LoRA adapter), the tokenizer and
`factory.json`: the runs, view SQL, parameters, row counts and task splits that produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

import sql
from factory import __version__, runs, warehouse
from factory.errors import FactoryError, Interrupted, UserError, WarehouseBusy
from factory.options import json_option, warehouse_option
from factory.output import err, out, print_json

FACTORY_JSON = "factory.json"


def _options(f: Callable) -> Callable:
    """The options every `factory train` method shares."""
    options = [
        click.option("--view", default=None, help="Dataset view to read (default: the method's view)."),
        click.option("--run", "run_ids", multiple=True,
                     help="Only rows of this run (repeatable; a unique prefix works). Default: every harvest run."),
        click.option("--min-reward", type=float, default=None,
                     help="Keep rollouts with at least this reward (view default: 1.0)."),
        click.option("--model", default=None,
                     help="Model folder or Hub id to start from. Default: the tiny model in $FACTORY_HOME/models."),
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Folder for the trained model, tokenizer and factory.json."),
        click.option("--force", is_flag=True, help="Replace --out if an earlier `factory train` wrote it."),
        click.option("--recipe", "recipe_name", type=click.Choice(["cpu", "paper"]), default="cpu",
                     show_default=True,
                     help="Hyper-parameters: `cpu` (tiny model, minutes) or `paper` (the reference's 4-bit QLoRA; "
                          "needs CUDA). The options below override single values."),
        click.option("--lora/--no-lora", default=None, help="Train a LoRA adapter instead of every weight "
                                                            "(default: the recipe's; paper = on)."),
        click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Passes over the rows (default: the recipe's; cpu: sft 3, kto and dpo 1)."),
        click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after N optimizer steps."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Learning rate (default: the recipe's; cpu: sft 1e-3, kto and dpo 5e-5)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Rows per device per step (default: the recipe's; cpu 4)."),
        click.option("--grad-accum", type=click.IntRange(min=1), default=None,
                     help="Batches per optimizer step (default: the recipe's; cpu 1)."),
        click.option("--max-length", type=click.IntRange(min=16), default=None,
                     help="Tokens per sequence; longer ones are cut (default: the recipe's; cpu 2048)."),
        click.option("--allow-test-tasks", is_flag=True,
                     help="Train on rows from `test` tasks too (they are the benchmark: off by default)."),
        click.option("--seed", type=int, default=0, show_default=True),
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
                   "{% generation %} markers.")
def sft(drop_tool_errors: bool, chat_template: Path | None, **options: Any) -> None:
    """Supervised fine-tuning on whole successful conversations (view `sft`), loss on the assistant's tokens only.

    \b
    Example:
        factory train sft --out models/sft-1
        factory train sft --run harvest-1a2b3c --drop-tool-errors --epochs 5 --out models/sft-2
        factory train sft --model Qwen/Qwen3-0.6B --recipe paper --out models/qwen-sft   # on a GPU
    """
    template = chat_template.read_text() if chat_template else None
    _train("sft", options, {"drop_tool_errors": drop_tool_errors or None}, {}, {"chat_template": template})


@train.command()
@_options
@click.option("--beta", type=click.FloatRange(min=0, min_open=True), default=None, help="KL weight (default 0.1).")
@click.option("--desirable-weight", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--undesirable-weight", type=click.FloatRange(min=0, min_open=True), default=None)
def kto(beta: float | None, desirable_weight: float | None, undesirable_weight: float | None,
        **options: Any) -> None:
    """KTO on single assistant turns: golden-path turns desirable, failed siblings' turns undesirable (view `kto`).

    \b
    Example:
        factory train kto --model models/sft-1 --out models/kto-1 --min-reward 0
        factory train kto --model models/sft-1 --undesirable-weight 2.71 --batch-size 8 --out models/kto-2
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
        factory train dpo --model models/sft-1 --run harvest-1a2b3c --lora --out models/dpo-lora
    """
    _train("dpo", options, {}, {"beta": beta}, {})


# -- the shared body ----------------------------------------------------------------------------------------

def _train(method: str, o: dict[str, Any], view_params: dict[str, Any], overrides: dict[str, Any],
           trainer_kwargs: dict[str, Any]) -> None:
    from train import recipes
    from train.recipes import TrainInputError

    started = _now()
    try:
        recipe = _recipe(method, o, overrides)
        recipes.check(recipe)  # e.g. the paper recipe on a CPU machine: refused before reading anything
    except TrainInputError as e:
        raise UserError(str(e)) from None
    out_dir = _check_out(o["out_dir"], o["force"])
    model = _resolve_model(o["model"])
    view = o["view"] or method
    params = {"min_reward": o["min_reward"], **view_params}
    dataset, info, provenance = _load(method, view, params, o["run_ids"], o["warehouse_path"])
    if info.rows == 0:
        raise UserError(f"no rows in view {view}: harvest first or lower --min-reward")
    if info.test_rows and not o["allow_test_tasks"]:
        raise UserError(f"{info.test_rows} of {info.rows} rows in view {view} come from test tasks "
                        f"(run {', '.join(info.test_runs)}); the test split is the benchmark: train on harvest "
                        "runs of train/val tasks, or pass --allow-test-tasks")

    run_id = "train-" + hashlib.sha256(f"{method}|{out_dir}|{started.isoformat()}".encode()).hexdigest()[:10]
    config = {"method": method, "model": model, "out": str(out_dir), "seed": o["seed"],
              "recipe": dataclasses.asdict(recipe), "lora": recipe.lora is not None, **provenance,
              "data": dataclasses.asdict(info)}
    record = {"warehouse_path": o["warehouse_path"], "run_id": run_id, "started": started, "out_dir": out_dir,
              "seed": o["seed"]}
    if out_dir.exists():  # checked above: empty, or an earlier `factory train` output and --force
        shutil.rmtree(out_dir)  # stale files (an old adapter_config.json) would change how the folder loads
    try:
        result = _fit(method, dataset, model, out_dir, recipe, o["seed"], trainer_kwargs, run_id)
    except TrainInputError as e:  # refused before any training step: nothing to record
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        _record(**record, status="interrupted", config=config)
        raise Interrupted("training interrupted; nothing was saved to --out") from None
    except Exception:
        _record(**record, status="failed", config=config)
        raise
    manifest = {"run_id": run_id, "created_at": started.isoformat(" ", "seconds"),
                "finished_at": _now().isoformat(" ", "seconds"), **config, "result": result,
                "versions": _versions()}
    (out_dir / FACTORY_JSON).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    _record(**record, status="done", config={**config, "result": result})
    if result["rows_used"] < info.rows:
        err.print(f"[yellow]{info.rows - result['rows_used']} of {info.rows} rows were dropped by TRL (prompt "
                  f"longer than --max-length {recipe.max_length}, or no trainable token left)[/yellow]")
    keys = ("rows_used", "steps", "final_loss", "train_loss", "seconds", "steps_per_second")
    summary = {"run_id": run_id, "method": method, "out": str(out_dir), "view": view, "rows": info.rows,
               **{k: result[k] for k in keys}}
    if o["as_json"]:
        print_json(summary)
        return
    loss = f"{result['final_loss']:.4f}" if result["final_loss"] is not None else "n/a"
    out.print(f"run {run_id}: {method} on {info.rows} rows of view {view} -> {out_dir}  steps {result['steps']}  "
              f"final loss {loss}  ({result['seconds']:.0f} s, {result['steps_per_second'] or 0:.2f} steps/s)")


def _recipe(method: str, o: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """The chosen recipe with the command line's values on top."""
    from train import recipes

    recipe = recipes.get(o["recipe_name"], method)
    values = {"epochs": o["epochs"], "max_steps": o["max_steps"], "learning_rate": o["lr"],
              "batch_size": o["batch_size"], "grad_accum": o["grad_accum"], "max_length": o["max_length"],
              **overrides}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in values.items() if v is not None})
    if o["lora"] is True and recipe.lora is None:
        recipe = dataclasses.replace(recipe, lora=recipes.Lora())
    if o["lora"] is False:
        if recipe.load_in_4bit:
            raise UserError(f"--recipe {recipe.name} trains a 4-bit model, which needs LoRA; drop --no-lora")
        recipe = dataclasses.replace(recipe, lora=None)
    return recipe


def _check_out(out_dir: Path, force: bool) -> Path:
    """The output folder, absolute; it must be new or empty, or (with --force) an earlier `factory train` output.
    Nothing is deleted here: an old model survives until the new data has been checked."""
    out_dir = out_dir.expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise UserError(f"--out {out_dir} exists and is not empty; pass --force to replace it or choose "
                            "another folder")
        if not (out_dir / FACTORY_JSON).exists():
            raise UserError(f"--out {out_dir} is not empty and was not written by `factory train` (no "
                            f"{FACTORY_JSON}); --force will not delete it, choose another folder")
    return out_dir


def _resolve_model(model: str | None) -> str:
    """A local model folder (absolute path) or a Hub id; exit 2 for a folder that does not exist."""
    if model is None:
        from factory.models import default_agent

        path = Path(default_agent())
        if not path.exists():
            raise UserError(f"no default model at {path}; run `factory model init` or pass --model")
        return str(path)
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        raise UserError(f"no model folder at {model}; pass an existing folder or a Hub id (org/name)")
    return model


def _load(method: str, view: str, params: dict[str, Any], run_ids: tuple[str, ...],
          warehouse_path: str) -> tuple[Any, Any, dict[str, Any]]:
    """The Dataset, what `train.data` says about it, and the view SQL / source runs for factory.json."""
    from train.data import load_view
    from train.recipes import TrainInputError

    with warehouse.opened(warehouse_path, read_only=True) as con:
        resolved = [runs.resolve_run(con, r) for r in dict.fromkeys(run_ids)]
        try:
            dataset, info = load_view(con, view, method, params, resolved or None)
        except TrainInputError as e:
            raise UserError(str(e)) from None
        ids = sorted(info.runs)
        source = con.execute("SELECT run_id, kind, split, agent_model FROM runs WHERE list_contains($ids, run_id) "
                             "ORDER BY run_id", {"ids": ids}).fetchall()
        view_sql = _view_sql(con, view)
    provenance = {"warehouse": str(Path(warehouse_path).resolve()), "view": view, "view_sql": view_sql,
                  "source_runs": [dict(zip(("run_id", "kind", "split", "agent_model"), r)) for r in source]}
    return dataset, info, provenance


def _view_sql(con: Any, view: str) -> dict[str, str]:
    """SQL of `view` and of every view it reads, by name (from sql/views/, else from the warehouse)."""
    import sqlglot
    from sqlglot import exp

    files = {p.stem for p in (sql.ROOT / "views").glob("*.sql")}
    found: dict[str, str] = {}
    todo = [view]
    while todo:
        name = todo.pop()
        if name in files:
            text = sql.load(f"views/{name}")
        else:
            rows = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ?", [name]).fetchall()
            text = rows[0][0] if rows else ""
        found[name] = text
        read = {t.name for t in sqlglot.parse_one(text, read="duckdb").find_all(exp.Table)} if text else set()
        todo += sorted((read & files) - set(found) - set(todo))
    return found


def _fit(method: str, dataset: Any, model: str, out_dir: Path, recipe: Any, seed: int,
         trainer_kwargs: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Run the method's trainer under a rich progress bar."""
    import datasets
    import transformers
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=err, transient=False)
    task = progress.add_task(f"{method} {run_id}", total=None, loss="-")
    callbacks = [_progress_callback(progress, task)]
    with progress:
        if method == "sft":
            from train.sft import train_sft

            return train_sft(dataset, model, out_dir, recipe, seed=seed, callbacks=callbacks, **trainer_kwargs)
        if method == "kto":
            from train.kto import train_kto

            return train_kto(dataset, model, out_dir, recipe, seed=seed, callbacks=callbacks)
        from train.dpo import train_dpo

        return train_dpo(dataset, model, out_dir, recipe, seed=seed, callbacks=callbacks)


def _progress_callback(progress: Any, task: Any) -> Any:
    """A TrainerCallback that moves the rich bar one optimizer step at a time and shows the last loss."""
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            progress.update(task, total=state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            progress.update(task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                progress.update(task, loss=f"{logs['loss']:.4f}")

    return RichProgress()


def _record(warehouse_path: str, run_id: str, started: datetime, status: str, out_dir: Path, config: dict[str, Any],
            seed: int, wait_s: float = 600.0) -> None:
    """Append the `train` row to `runs`; waits (up to `wait_s`) while another command holds the writer lock."""
    splits = sorted({r["split"] for r in config["source_runs"] if r["split"]})
    row = {"run_id": run_id, "kind": "train", "created_at": started, "finished_at": _now(), "status": status,
           "config": json.dumps(config, default=str), "agent_model": str(out_dir), "user_model": None,
           "backend": "transformers", "protocol": None, "split": ",".join(splits) or None, "semantics": None,
           "beam_size": None, "seed": seed, "code_version": __version__, "tools": None}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with warehouse.Writer(warehouse_path) as writer:
                writer.append({"runs": [row]})
            return
        except WarehouseBusy as e:
            if time.monotonic() >= deadline:
                err.print(f"[yellow]train run {run_id} not recorded ({e}); {out_dir / FACTORY_JSON} has it all"
                          "[/yellow]")
                return
            err.print(f"[dim]{e}; retrying in 10 s[/dim]")
            time.sleep(10)
        except FactoryError as e:  # the model is saved already: say so rather than fail the command
            err.print(f"[yellow]train run {run_id} not recorded ({e}); {out_dir / FACTORY_JSON} has it all"
                      "[/yellow]")
            return


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"josh-factory": __version__}
    for name in ("torch", "transformers", "trl", "peft", "datasets", "duckdb", "pyarrow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
