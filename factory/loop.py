"""`factory loop`: one turn of JOSH self-training, measured against a control.

    M0 (the bootstrapped default model, or --model)
      -> eval M0 on the first N `test` tasks
      -> harvest with M0 on `val_harvest` (beam B)             -> M1  = M0 + SFT on the harvest's `sft` view
      -> M0's own beam-1 rollouts of the same tasks, unfiltered -> M0' = M0 + the same SFT steps on them
      -> eval M1 and M0' on the same `test` tasks
      -> paired bootstrap: M1 - M0 and M1 - M0'

Only M1 - M0' > 0 says that JOSH's selection, not extra training, helped. Every stage is an ordinary run in
the warehouse (eval and harvest runs resume when the loop is run again) and the models land in `out`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from factory import default_model, rollouts
from factory.errors import UserError
from factory.output import err
from factory.training import FACTORY_JSON, TrainJob, resolve_model, train_model
from search.josh import EVALUATION, HARVEST, SearchConfig

T = TypeVar("T")


@dataclass(frozen=True)
class LoopConfig:
    """The loop's sizes and settings (`factory loop` flags)."""

    out: Path  # models M1, M0' and loop.json
    model: str | None = None  # M0; None = the default model (bootstrapped on first use)
    eval_tasks: int | None = 100  # first N `test` tasks; None = all 450 (--full)
    harvest_tasks: int = 60  # first N `val_harvest` tasks
    beam: int = HARVEST.beam
    temperature: float = HARVEST.temperature  # harvest and control sampling
    max_steps: int = HARVEST.max_steps
    max_new_tokens: int = HARVEST.max_new_tokens
    sft_epochs: float = 3.0  # passes over M1's rows (the cpu recipe's); M0' gets as many steps as M1 took
    sft_steps: int | None = None  # a fixed step count for both instead
    kto_steps: int = 0  # > 0: M1 gets KTO on the harvest's `kto` view after its SFT (M0' does not)
    learning_rate: float = 1e-3  # a further SFT of an already trained model: below the bootstrap's rate
    min_reward: float = 0.01  # harvest rollouts whose golden path is kept: any goal met
    concurrency: int = 16
    seed: int = 0


@dataclass
class LoopResult:
    """What the loop produced: runs and models per stage, scores, comparisons and wall times."""

    config: dict[str, Any]
    runs: dict[str, str] = field(default_factory=dict)  # stage -> run id
    models: dict[str, str] = field(default_factory=dict)  # M0 / M1 / M0' -> folder
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> eval summary
    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> train summary
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)  # "M1 - M0" -> paired bootstrap
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds


def run_loop(cfg: LoopConfig, warehouse_path: str, multiwoz_path: str | None, console: Console) -> LoopResult:
    """Run (or resume) every stage; returns the result and writes it to `cfg.out / loop.json`."""
    from train.recipes import get

    result = LoopResult(config={k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()})

    def stage(name: str, fn: Callable[[], T]) -> T:
        console.rule(f"[bold]{name}")
        start = time.monotonic()
        value = fn()
        result.seconds[name] = round(time.monotonic() - start, 1)
        return value

    def rollout_run(kind: str, agent: str, search: SearchConfig, split: str, limit: int | None,
                    name: str | None = None) -> str:
        settings = rollouts.build_settings(kind, agent, search, split=split, limit=limit,
                                           concurrency=cfg.concurrency)
        report = rollouts.execute(settings, warehouse_path, run_name=name, multiwoz_path=multiwoz_path,
                                  console=console)
        return report.run_id

    # The same settings as `factory eval` / `factory harvest` with these flags, so the runs are shared with them.
    evaluate = dataclasses.replace(EVALUATION, max_steps=cfg.max_steps, max_new_tokens=cfg.max_new_tokens,
                                   seed=cfg.seed)
    harvest = dataclasses.replace(HARVEST, beam=cfg.beam, max_steps=cfg.max_steps, temperature=cfg.temperature,
                                  max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    control = dataclasses.replace(harvest, beam=1)

    m0 = stage("bootstrap M0", lambda: _ensure_m0(cfg.model, warehouse_path, multiwoz_path))
    result.models["M0"] = m0
    result.runs["eval M0"] = stage("eval M0", lambda: rollout_run("eval", m0, evaluate, "test", cfg.eval_tasks))
    result.runs["harvest M0"] = stage("harvest M0", lambda: rollout_run("harvest", m0, harvest, "val_harvest",
                                                                        cfg.harvest_tasks))
    result.runs["control M0"] = stage("control rollouts M0 (beam 1)",
                                      lambda: rollout_run("harvest", m0, control, "val_harvest", cfg.harvest_tasks))

    # M1 trains for `sft_epochs` over its golden paths (however many the harvest gave); M0' then gets exactly
    # as many optimizer steps, so the two differ only in which rollouts they learn from.
    recipe = dataclasses.replace(get("cpu", "sft"), learning_rate=cfg.learning_rate, epochs=cfg.sft_epochs,
                                 max_steps=cfg.sft_steps or -1)
    trainings = {"M1": ("sft", "m1", result.runs["harvest M0"], cfg.min_reward),
                 "M0'": ("sft_unfiltered", "m0-control", result.runs["control M0"], 0.0)}
    for name, (view, folder, run_id, min_reward) in trainings.items():
        job = TrainJob(method="sft", recipe=recipe, out_dir=cfg.out / folder, warehouse_path=warehouse_path,
                       model=m0, view=view, run_ids=(run_id,), view_params={"min_reward": min_reward},
                       seed=cfg.seed, force=True)
        result.training[name] = stage(f"train {name}", lambda job=job, name=name: _train(job, name))
        result.models[name] = str(job.out_dir)
        recipe = dataclasses.replace(recipe, max_steps=result.training["M1"]["steps"])
    if cfg.kto_steps:
        kto = dataclasses.replace(get("cpu", "kto"), max_steps=cfg.kto_steps)
        job = TrainJob(method="kto", recipe=kto, out_dir=cfg.out / "m1-kto", warehouse_path=warehouse_path,
                       model=result.models["M1"], run_ids=(result.runs["harvest M0"],),
                       view_params={"min_reward": cfg.min_reward}, seed=cfg.seed, force=True)
        result.training["M1 (kto)"] = stage("train M1 (kto)", lambda: _train(job, "M1 (kto)"))
        result.models["M1"] = str(job.out_dir)
    # A trained model's folder is reused by the next loop, so its eval run is named after the training run:
    # a retrained model never resumes the evaluation of the one it replaced.
    final = {"M1": result.training.get("M1 (kto)", result.training["M1"]), "M0'": result.training["M0'"]}
    for name in ("M1", "M0'"):
        result.runs[f"eval {name}"] = stage(f"eval {name}", lambda name=name: rollout_run(
            "eval", result.models[name], evaluate, "test", cfg.eval_tasks, name=f"eval-{final[name]['run_id']}"))

    for name in ("M0", "M0'", "M1"):
        result.scores[name] = rollouts.run_summary("eval_summary", warehouse_path, result.runs[f"eval {name}"])
    for other in ("M0", "M0'"):
        result.comparisons[f"M1 - {other}"] = rollouts.compare(warehouse_path, result.runs["eval M1"],
                                                               result.runs[f"eval {other}"], seed=cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "loop.json").write_text(json.dumps(dataclasses.asdict(result), indent=2, default=str) + "\n")
    return result


def _train(job: TrainJob, name: str) -> dict[str, Any]:
    """Train `job`, or reuse its output folder when an earlier loop trained it the same way."""
    if (done := _same_training(job)) is not None:
        return done
    try:
        return train_model(job)
    except UserError as e:
        if not str(e).startswith("no rows"):
            raise
        run = job.run_ids[0]
        raise UserError(f"{name} has no training rows: no rollout of run {run} reached reward "
                        f"{job.view_params['min_reward']} (`factory sql \"select * from harvest_summary\"`); use a "
                        "stronger M0, a larger --beam or more --harvest-tasks (finished runs are kept: the loop "
                        "resumes)") from None


def _same_training(job: TrainJob) -> dict[str, Any] | None:
    """The summary of `job.out_dir` if its factory.json shows the same start model, data and recipe."""
    manifest_file = job.out_dir / FACTORY_JSON
    if not manifest_file.exists():
        return None
    m = json.loads(manifest_file.read_text())
    wanted = {"method": job.method, "model": resolve_model(job.model),
              "view": job.view, "seed": job.seed, "recipe": json.loads(json.dumps(dataclasses.asdict(job.recipe))),
              "runs": list(job.run_ids), "params": {k: v for k, v in job.view_params.items() if v is not None},
              "warehouse": str(Path(job.warehouse_path).resolve())}
    found = {"method": m.get("method"), "model": m.get("model"), "view": m.get("view"), "seed": m.get("seed"),
             "recipe": m.get("recipe"), "runs": (m.get("data") or {}).get("params", {}).get("run_id"),
             "params": {k: v for k, v in (m.get("data") or {}).get("params", {}).items() if k != "run_id"},
             "warehouse": m.get("warehouse")}
    if found != wanted:
        return None
    r = m["result"]
    return {"run_id": m["run_id"], "method": job.method, "out": str(job.out_dir), "view": job.view,
            "rows": m["data"]["rows"], "reused": True,
            **{k: r[k] for k in ("rows_used", "steps", "final_loss", "train_loss", "seconds", "steps_per_second")}}


def _ensure_m0(model: str | None, warehouse_path: str, multiwoz_path: str | None) -> str:
    if model is not None:
        return resolve_model(model)
    return default_model.ensure(multiwoz_path, warehouse_path, err)
