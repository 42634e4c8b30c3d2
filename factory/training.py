"""Train a model on a dataset view: warehouse -> Arrow -> datasets.Dataset -> TRL -> a model folder.

Used by `factory train` and `factory loop`. The warehouse is only read while the data is loaded (read-only,
so a harvest may keep writing); the `train` run is recorded in one short write when training ends, with its
status, so training never holds the warehouse's writer lock. The output folder holds the model (or LoRA
adapter), the tokenizer and `factory.json`: the runs, view SQL, parameters, row counts and task splits that
produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sql
from factory import __version__, runs, warehouse
from factory.errors import FactoryError, Interrupted, UserError, WarehouseBusy
from factory.output import err

FACTORY_JSON = "factory.json"


@dataclass
class TrainJob:
    """One `factory train`: what to read, what to start from, where to write, and how."""

    method: str  # sft | kto | dpo
    recipe: Any  # train.recipes.Recipe, command-line overrides applied
    out_dir: Path
    warehouse_path: str
    model: str | None = None  # folder or Hub id; None = the default tiny model
    view: str | None = None  # None = the method's view
    run_ids: tuple[str, ...] = ()  # () = every harvest run
    view_params: dict[str, Any] = field(default_factory=dict)  # min_reward, drop_tool_errors
    seed: int = 0
    allow_test_tasks: bool = False
    force: bool = False
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)  # sft: chat_template


def train_model(job: TrainJob) -> dict[str, Any]:
    """Check, load, train, save and record `job`; returns its summary (run id, rows, steps, losses, speed).
    Raises UserError for data or settings that cannot work (before anything is written)."""
    from train import recipes
    from train.recipes import TrainInputError

    started = _now()
    try:
        recipes.check(job.recipe)  # e.g. the paper recipe on a CPU machine: refused before reading anything
    except TrainInputError as e:
        raise UserError(str(e)) from None
    method, recipe = job.method, job.recipe
    out_dir = _check_out(job.out_dir, job.force)
    model = resolve_model(job.model)
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
              "recipe": dataclasses.asdict(recipe), "lora": recipe.lora is not None, **provenance,
              "data": dataclasses.asdict(info)}
    record = {"warehouse_path": job.warehouse_path, "run_id": run_id, "started": started, "out_dir": out_dir,
              "seed": job.seed}
    if out_dir.exists():  # checked above: empty, or an earlier `factory train` output and --force
        shutil.rmtree(out_dir)  # stale files (an old adapter_config.json) would change how the folder loads
    try:
        result = _fit(method, dataset, model, out_dir, recipe, job.seed, job.trainer_kwargs, run_id)
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
    return {"run_id": run_id, "method": method, "out": str(out_dir), "view": view, "rows": info.rows,
            **{k: result[k] for k in keys}}


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


def resolve_model(model: str | None) -> str:
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
        raise UserError(f"no model folder at {model}; pass an existing folder or a Hub id (org/name) to --model")
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
