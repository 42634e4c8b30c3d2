"""`factory model bootstrap`: the default agent M0 = the tiny model after a short SFT on teacher conversations.

The budget is fixed here and recorded in the model's `factory_model.json`; it was chosen on a dev set (the last
100 `val_harvest` tasks), never on `test`, and it leaves M0 imperfect (JOSH needs failures to learn from). The
teacher run lands in the warehouse like any other run and the SFT reads it through the `sft` view: the same
path as every dataset. On 2 cores it takes about 20 minutes, so the package ships the M0 it made (factory/m0,
`make m0` rebuilds it) and `factory model bootstrap --force` makes your own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from factory.jobs import rollouts
from factory.jobs.training import TrainJob, train_model
from factory.output import err
from factory.store.folders import staged
from search.josh import EVALUATION
from toolwoz import multiwoz, tables
from toolwoz.corpus import build_corpus
from toolwoz.tools import ToolEnv
from train.tiny_model import DEFAULT_RESULTS


@dataclass(frozen=True)
class BootstrapBudget:
    """What M0 is trained on and for how long. Changing a value makes another M0: say so in the notes."""

    split: str = "val_boot"  # teacher conversations on these tasks (397 with the shared MultiWOZ)
    tasks: int | None = None  # None = every task of the split
    results: str = DEFAULT_RESULTS  # what the teacher's searches show: the tiny model's own preference (compact)
    # Measured on the dev set (Average Reward, CPU-s of training on 1 thread), vocab 4096 unless said:
    # 600 steps assistant-only loss 0.020 (1721 s); 600 all tokens 0.113 (1712 s); + 2000 synthetic goals 0.115
    # (1571 s); 1200 all tokens 0.244 (3128 s); 1200 all tokens at vocab 2048 0.438 (1728 s).
    steps: int = 1200  # optimizer steps (~12 epochs of val_boot; ~20 min on 2 cores)
    learning_rate: float = 5e-3  # a 0.7M-parameter model from scratch: far above fine-tuning rates
    batch_size: int = 4
    loss: str = "all"  # every token: user turns and tool results teach the values that calls must copy
    max_length: int = 2048  # the tiny model's context: whole conversations, never cut
    warmup: float = 0.05
    seed: int = 0


BUDGET = BootstrapBudget()


def create_untrained(multiwoz_path: str | None, out: Path) -> Path:
    """Train the tokenizer on ToolWOZ text and write an untrained tiny Llama to `out` (`factory model init`).
    The folder appears complete or not at all (`folders.staged`), so a killed init is never taken for a model."""
    from train.tiny_model import init_model

    with err.status("reading MultiWOZ"):
        env = ToolEnv.from_connection(tables.in_memory(multiwoz.load(multiwoz_path)))
    with err.status(f"creating the tiny model in {out}"), staged(out) as stage:
        init_model(stage, build_corpus(env.rows, env.tasks.values()))
    return out.expanduser().resolve()


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
    # the settings of `factory eval --agent teacher --results ...`
    search = dataclasses.replace(EVALUATION, seed=budget.seed, results=budget.results)
    settings = rollouts.build_settings("eval", "teacher", search, split=budget.split, limit=budget.tasks)
    report = rollouts.execute(settings, warehouse_path, run_name=None, multiwoz_path=multiwoz_path, console=console)
    teacher = rollouts.summary("eval_summary", warehouse_path, report)
    # The budget keeps its own field names: the shipped M0's factory_model.json records them (default_model.shipped).
    recipe = dataclasses.replace(get("cpu", "sft"), max_steps=budget.steps, learning_rate=budget.learning_rate,
                                 per_device_train_batch_size=budget.batch_size, max_length=budget.max_length,
                                 warmup_steps=budget.warmup, loss=budget.loss,
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
                           "seconds": trained["seconds"], "ran_on": _machine()}}
    (staging / "factory_model.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return {"model": str(out), "teacher_run": report.run_id, "teacher_seconds": round(report.seconds, 1),
            **{k: trained[k] for k in ("run_id", "rows", "steps", "final_loss", "seconds")}}


def _machine() -> dict[str, Any]:
    """Where a bootstrap ran (its record says so: a GPU run is another budget in practice)."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"device": device, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__}
