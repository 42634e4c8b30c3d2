"""`factory model bootstrap`: the default agent M0 = the tiny model after a short SFT on teacher conversations.

The budget is fixed here and recorded in the model's `factory_model.json`; it is deliberately short so M0 is
imperfect (JOSH needs failures to learn from) and is never tuned per result. The teacher run lands in the
warehouse like any other run and the SFT reads it through the `sft` view: the same path as every dataset.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from factory import rollouts
from factory.output import err
from factory.training import TrainJob, train_model
from search.josh import EVALUATION
from toolwoz import multiwoz, tables
from toolwoz.corpus import build_corpus
from toolwoz.tools import ToolEnv


@dataclass(frozen=True)
class BootstrapBudget:
    """What M0 is trained on and for how long. Changing a value makes another M0: say so in the notes."""

    split: str = "val_boot"  # teacher conversations on these tasks (397 with the shared MultiWOZ)
    tasks: int | None = None  # None = every task of the split
    steps: int = 600  # optimizer steps (~6 epochs of val_boot; ~13 min on 2 cores)
    learning_rate: float = 5e-3  # a 0.9M-parameter model from scratch: far above fine-tuning rates
    batch_size: int = 4
    max_length: int = 2048  # the tiny model's context: whole conversations, never cut
    warmup: float = 0.05
    seed: int = 0


BUDGET = BootstrapBudget()


def create_untrained(multiwoz_path: str | None, out: Path) -> Path:
    """Train the tokenizer on ToolWOZ text and write an untrained tiny Llama to `out` (`factory model init`)."""
    from train.tiny_model import init_model

    with err.status("reading MultiWOZ"):
        env = ToolEnv.from_connection(tables.in_memory(multiwoz.load(multiwoz_path)))
    with err.status(f"creating the tiny model in {out}"):
        return init_model(out, build_corpus(env.rows, env.tasks.values()))


def init_dir(out: Path) -> Path:
    """Where the untrained model behind `out` lives (`<out>-init`)."""
    return out.with_name(out.name + "-init")


def bootstrap(out: Path, warehouse_path: str, multiwoz_path: str | None, console: Console,
              budget: BootstrapBudget = BUDGET) -> dict[str, Any]:
    """Create the untrained tiny model (once), run the teacher on `budget.split` into the warehouse (resumed
    if it exists), SFT the model on that run's `sft` view and write M0 to `out`. Returns what it did."""
    from train.recipes import get

    start = init_dir(out)
    if not (start / "config.json").exists():
        create_untrained(multiwoz_path, start)
    search = dataclasses.replace(EVALUATION, seed=budget.seed)  # the settings of `factory eval --agent teacher`
    settings = rollouts.build_settings("eval", "teacher", search, split=budget.split, limit=budget.tasks)
    report = rollouts.execute(settings, warehouse_path, run_name=None, multiwoz_path=multiwoz_path, console=console)
    teacher = rollouts.summary("eval_summary", warehouse_path, report)
    recipe = dataclasses.replace(get("cpu", "sft"), max_steps=budget.steps, learning_rate=budget.learning_rate,
                                 batch_size=budget.batch_size, max_length=budget.max_length, warmup=budget.warmup,
                                 extra={"bootstrap": dataclasses.asdict(budget)})
    staging = out.with_name(out.name + "-staging")  # the old M0 stays until the new one is complete
    shutil.rmtree(staging, ignore_errors=True)
    trained = train_model(TrainJob(method="sft", recipe=recipe, out_dir=staging, warehouse_path=warehouse_path,
                                   model=str(start), run_ids=(report.run_id,), seed=budget.seed, force=True))
    info = json.loads((start / "factory_model.json").read_text())
    info |= {"what": "the tiny model after the bootstrap SFT on teacher conversations (factory model bootstrap)",
             "bootstrap": {"budget": dataclasses.asdict(budget), "teacher_run": report.run_id,
                           "teacher_average_reward": teacher["average_reward"],
                           "teacher_success_rate": teacher["success_rate"], "train_run": trained["run_id"],
                           "rows": trained["rows"], "steps": trained["steps"], "final_loss": trained["final_loss"],
                           "seconds": trained["seconds"]}}
    (staging / "factory_model.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return {"model": str(out), "teacher_run": report.run_id, "teacher_seconds": round(report.seconds, 1),
            **{k: trained[k] for k in ("run_id", "rows", "steps", "final_loss", "seconds")}}
