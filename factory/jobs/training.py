"""Train a model on a dataset view: warehouse -> Arrow -> datasets.Dataset -> TRL -> a model folder.

Used by `factory train` and `factory loop`. The warehouse is only read while the data is loaded (read-only,
so a harvest may keep writing); the `train` run is recorded in one short write when training ends, with its
status, so training never holds the warehouse's writer lock. The output folder holds the model (or LoRA
adapter), the tokenizer and `factory.json`: the runs, view SQL, parameters, row counts and task splits that
produced it. Training writes into a staging folder that is renamed to `--out` once `factory.json` is in it
(`folders.staged`), so a killed run never leaves a folder that loads as a model; the old `--out` stays until then.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sql
from common.errors import first_line
from factory import __version__
from factory.errors import FactoryError, Interrupted, UserError, WarehouseBusy
from factory.jobs import models
from factory.output import LogProgress, err
from factory.store import runs, warehouse
from factory.store.folders import staged
from factory.store.writer import Writer
from toolwoz.clock import utc_now

FACTORY_JSON = "factory.json"


@dataclass
class TrainJob:
    """One `factory train`: what to read, what to start from, where to write, and how."""

    method: str  # sft | kto | dpo
    recipe: Any  # train.recipes.Recipe, command-line overrides applied
    out_dir: Path
    warehouse_path: str
    model: str  # folder or Hub id to start from (commands resolve the default model first)
    view: str | None = None  # None = the method's view
    run_ids: tuple[str, ...] = ()  # () = every harvest run
    view_params: dict[str, Any] = field(default_factory=dict)  # min_reward, drop_tool_errors
    seed: int = 0
    allow_test_tasks: bool = False
    force: bool = False
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)  # chat_template (None: the model's, or ChatML+tools)


def train_model(job: TrainJob) -> dict[str, Any]:
    """Check, load, train, save and record `job`; returns its summary (run id, rows, steps, losses, speed).
    Raises UserError or TrainInputError for data or settings that cannot work (before anything is written)."""
    from train import recipes
    from train.errors import NoRowsLeft
    from train.recipes import TrainInputError

    started = utc_now()
    recipes.check(job.recipe)  # e.g. the paper recipe on a CPU machine: refused before reading anything
    method, recipe = job.method, job.recipe
    out_dir = _check_out(job.out_dir, job.force)
    model = resolve_model(job.model)
    trainer_kwargs = dict(job.trainer_kwargs)
    if trainer_kwargs.get("chat_template") is None and (template := models.tools_template(model)):
        trainer_kwargs["chat_template"] = template  # ChatML that ignored tools: trained (and saved) with them
    view = job.view or method
    dataset, info, provenance = _load(method, view, job.view_params, job.run_ids, job.warehouse_path)
    if info.rows == 0:
        raise UserError(f"no rows in view {view}: harvest first or lower --min-reward")
    if info.test_rows and not job.allow_test_tasks:
        raise UserError(f"{info.test_rows} of {info.rows} rows in view {view} come from test tasks "
                        f"(run {', '.join(info.test_runs)}); the test split is the benchmark: train on harvest "
                        "runs of train/val tasks, or pass --allow-test-tasks")

    run_id = "train-" + hashlib.sha256(f"{method}|{out_dir}|{started.isoformat()}".encode()).hexdigest()[:10]
    config = {"method": method, "model": model, "out": str(out_dir), "seed": job.seed,
              "chat_template": _template_source(job.trainer_kwargs, trainer_kwargs),
              "recipe": dataclasses.asdict(recipe), "lora": recipe.lora is not None, **provenance,
              "data": dataclasses.asdict(info)}
    record = {"warehouse_path": job.warehouse_path, "run_id": run_id, "started": started, "out_dir": out_dir,
              "seed": job.seed}
    try:
        # A fresh folder: stale files (an old adapter_config.json) would change how it loads.
        with staged(out_dir) as stage:
            try:
                result = _fit(method, dataset, model, stage, recipe, job.seed, trainer_kwargs, run_id)
            except NoRowsLeft:  # checked once TRL has prepared the rows, before its first step
                raise UserError(f"every one of the {info.rows} rows of view {view} was dropped before training: "
                                f"each is longer than --max-length {recipe.max_length} tokens, or keeps no "
                                "trainable token once cut; raise --max-length") from None
            manifest = {"run_id": run_id, "created_at": started.isoformat(" ", "seconds"),
                        "finished_at": utc_now().isoformat(" ", "seconds"), **config, "result": result,
                        "versions": _versions()}
            (stage / FACTORY_JSON).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    except (TrainInputError, UserError):  # refused before any training step: nothing to record
        raise
    except KeyboardInterrupt:
        _record(**record, status="interrupted", config=config)
        raise Interrupted("training interrupted; nothing was saved to --out") from None
    except Exception:
        _record(**record, status="failed", config=config)
        raise
    _record(**record, status="done", config={**config, "result": result})
    if result["rows_used"] < info.rows:
        err.print(f"[yellow]{info.rows - result['rows_used']} of {info.rows} rows were dropped by TRL (prompt "
                  f"longer than --max-length {recipe.max_length}, or no trainable token left)[/yellow]")
    keys = ("rows_used", "steps", "final_loss", "train_loss", "seconds", "steps_per_second")
    return {"run_id": run_id, "method": method, "out": str(out_dir), "view": view, "rows": info.rows,
            **{k: result[k] for k in keys}}


def _template_source(given: dict[str, Any], used: dict[str, Any]) -> str:
    """Where the chat template trained with came from, for factory.json."""
    if given.get("chat_template") is not None:
        return "--chat-template"
    return "train/chatml_tools.jinja" if used.get("chat_template") is not None else "the model's own"


def _check_out(out_dir: Path, force: bool) -> Path:
    """The output folder, absolute; it must be new or empty, or (with --force) an earlier `factory train` output.
    Nothing is deleted here: an old model survives until the new one is complete (a killed run's staging
    folder is ours and goes at the next run, --force or not)."""
    out_dir = out_dir.expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise UserError(f"--out {out_dir} exists and is not empty; pass --force to replace it or choose "
                            "another folder")
        if not (out_dir / FACTORY_JSON).exists():
            raise UserError(f"--out {out_dir} is not empty and was not written by `factory train` (no "
                            f"{FACTORY_JSON}); --force will not delete it, choose another folder")
    return out_dir


def resolve_model(model: str) -> str:
    """A local model folder or GGUF file (absolute path) or a Hub id; see `check_model`."""
    check_model(model)
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def check_model(model: str) -> None:
    """UserError unless `model` is an existing folder, a GGUF file transformers can load (`models.check_gguf`), or
    a Hub id that is cached or that the Hub knows.

    Asked before anything loads it: transformers would otherwise spend ~50 s retrying the Hub for a mistyped
    folder name. One quick request (5 s timeout, no retries) unless HF_HUB_OFFLINE is set."""
    if models.is_gguf(model):
        models.check_gguf(model)
        return
    path = Path(model).expanduser()
    if path.exists():
        return
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        raise UserError(f"no model folder at {model}; pass an existing folder or a Hub id (org/name)")
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    try:
        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return
    except HFValidationError:
        raise UserError(f"no model folder at {model} and it is not a Hub id (org/name)") from None
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"no model folder at {model}, and HF_HUB_OFFLINE is set with no cached copy of it")
    try:
        HfApi().model_info(model, timeout=5)
    except RepositoryNotFoundError:
        raise UserError(f"no model folder at {model}, and the Hub has no model {model}") from None
    except Exception as e:  # gated or private repos answer 401/403: let from_pretrained use the token
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status not in (401, 403):
            raise UserError(f"no model folder at {model}, no cached copy, and the Hub cannot be reached "
                            f"({first_line(e)}); pass an existing folder") from None


def _load(method: str, view: str, params: dict[str, Any], run_ids: tuple[str, ...],
          warehouse_path: str) -> tuple[Any, Any, dict[str, Any]]:
    """The Dataset, what `train.data` says about it, and the view SQL / source runs for factory.json."""
    from train.data import load_view

    with warehouse.opened(warehouse_path, read_only=True) as con:
        resolved = [runs.resolve_run(con, r) for r in dict.fromkeys(run_ids)]
        dataset, info = load_view(con, view, method, params, resolved or None)
        ids = sorted(info.runs)
        source = con.execute("SELECT run_id, kind, split, agent_model FROM runs WHERE list_contains($ids, run_id) "
                             "ORDER BY run_id", {"ids": ids}).fetchall()
        view_sql = _view_sql(con, view)
    provenance = {"warehouse": str(Path(warehouse_path).resolve()), "view": view, "view_sql": view_sql,
                  "source_runs": [dict(zip(("run_id", "kind", "split", "agent_model"), r)) for r in source]}
    return dataset, info, provenance


def _view_sql(con: Any, view: str) -> dict[str, str]:
    """SQL of `view` and of every view it reads, by name (from sql/views/, else from the warehouse)."""
    files = sql.view_reads()
    found: dict[str, str] = {}
    todo = [view]
    while todo:
        name = todo.pop()
        if name in files:
            found[name], reads = sql.load(f"views/{name}"), set(files[name])
        else:  # a view the user created in the warehouse
            rows = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ?", [name]).fetchall()
            found[name] = rows[0][0] if rows else ""
            reads = sql.tables_read(found[name]) & set(files) if found[name] else set()
        todo += sorted(reads - set(found) - set(todo))
    return found


def _fit(method: str, dataset: Any, model: str, out_dir: Path, recipe: Any, seed: int,
         trainer_kwargs: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Run the method's trainer under a rich progress bar."""
    import datasets
    import torch
    import transformers
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from search.backends import allocator
    from train.cpu import heap_sized_tiles

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    if not torch.cuda.is_available():  # as decoding: a step's freed tensors reused, not unmapped and faulted in again
        allocator.tune()
        heap_sized_tiles()  # TRL's LM-head tiles small enough for the heap (train/cpu.py)
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
    progress = LogProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
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

            return train_kto(dataset, model, out_dir, recipe, seed=seed, callbacks=callbacks, **trainer_kwargs)
        from train.dpo import train_dpo

        return train_dpo(dataset, model, out_dir, recipe, seed=seed, callbacks=callbacks, **trainer_kwargs)


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
    row = {"run_id": run_id, "kind": "train", "created_at": started, "finished_at": utc_now(), "status": status,
           "config": json.dumps(config, default=str), "agent_model": str(out_dir), "user_model": None,
           "backend": "transformers", "protocol": None, "split": ",".join(splits) or None, "semantics": None,
           "beam": None, "seed": seed, "code_version": __version__, "tools": None}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with Writer(warehouse_path) as writer:
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
