"""`factory loop`: iterated JOSH self-training, each iteration measured against its own control.

    M0 (the bootstrapped default model, or --model); for k = 0 .. K-1 (`--iterations K`):
      -> eval M_k on the first N `test` tasks (k = 0; later M_k was evaluated as the previous iteration's result)
      -> harvest with M_k on `synth` (or `val_harvest`) tasks k*H .. (k+1)*H-1 (beam B) -> M_k+1 = M_k + SFT on its
         golden paths, averaged with M_k (WiSE-FT)
      -> M_k's own beam-1 rollouts of the same tasks, unfiltered          -> M_k'   = M_k + the same SFT steps
                                                                             (and the same averaging)
      -> eval M_k+1 and M_k' on the same `test` tasks
      -> paired bootstrap: M_k+1 - M_k and M_k+1 - M_k'
    With `--baseline rft`, each iteration also trains rejection sampling's model at JOSH's compute:
      -> K independent beam-1 samples per harvest task (the control's run is the first; K = JOSH's generated
         tokens / the control's, measured in the warehouse)      -> M_k^rft = M_k + the same SFT steps on the
         samples that reached min_reward (`sft`), then KTO with the failed samples as negatives (`kto_samples`)
      -> eval M_k^rft; paired bootstrap M_k+1 - M_k^rft; training rows per 1000 generated tokens of both

Only M_k+1 - M_k' > 0 says that JOSH's selection, not extra training, helped. Each iteration harvests *fresh*
tasks: M_k+1 has already imitated its golden paths on the earlier ones, so harvesting them again
mostly re-finds what it learnt (and rewards memorising those goals), while new tasks give new golden paths and
keep each harvest an honest sample of M_k on unseen goals. The `test` tasks stay the same, so every model's
score is comparable. Every stage is an ordinary run in the warehouse (rollout runs resume when the loop is run
again) and the models land in `out` (m1, m0-control, m2, m1-control, ...).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from factory.errors import FactoryError, UserError
from factory.jobs import default_model, launch, rollouts
from factory.jobs.cpu import TreeCPU, Usage
from factory.jobs.launch import Paths, RunRequest
from factory.jobs.training import FACTORY_JSON, TrainJob, resolve_model, train_model
from factory.output import err
from factory.store import runs
from search.josh import EVALUATION, HARVEST, SearchConfig
from toolwoz import synthetic

T = TypeVar("T")


# The loop's harvest: JOSH's defaults at temperature 0.7, which finds better golden paths for the tiny M0 than 1.0
# (first 60 val_harvest tasks: golden reward 0.497 against 0.414; greedy 0.307).
LOOP_HARVEST = dataclasses.replace(HARVEST, temperature=0.7)


@dataclass(frozen=True)
class LoopConfig:
    """The loop's sizes and settings (`factory loop` flags). The defaults were chosen on a dev set, never on `test`:
    the val_harvest tasks 200-395, which the default (synth) harvest never touches (docs/loop.md)."""

    out: Path  # models M1, M0', ... and loop.json
    model: str | None = None  # M0; None = the default model (bootstrapped on first use)
    iterations: int = 1  # K: M0 -> M1 -> ... -> MK
    eval_tasks: int | None = None  # first N `test` tasks; None = all 450
    harvest_tasks: int = 600  # harvest tasks per iteration (iteration k: tasks k*H .. (k+1)*H-1)
    # synth (2000 goals sampled from the databases) has room for 3 iterations of 600; val_harvest has 396 tasks.
    harvest_split: str = "synth"
    env: str = "toolwoz"  # `--env`: ToolWOZ, or τ-bench's retail (harvests its `train` split)
    beam: int = LOOP_HARVEST.beam
    temperature: float = LOOP_HARVEST.temperature  # harvest and control sampling
    max_turns: int = LOOP_HARVEST.max_turns
    max_new_tokens: int = LOOP_HARVEST.max_new_tokens
    results: str | None = None  # what searches show; None = M0's preference (`factory_results`)
    sft_epochs: float = 3.0  # passes over M_k+1's rows (the cpu recipe's); M_k' gets as many steps
    sft_steps: int | None = None  # a fixed step count for both instead
    # The tokens M1's and M0''s SFT trains on (train/sft.py): `calls` leaves out the free text the reward never checks.
    sft_loss: str = "calls"
    # M1 and M0' keep (1 - w) x M_k's weights + w x the trained ones (train/wise_ft.py). Dev set, 600 synth tasks:
    # M1 / M0' 0.264 / 0.233 at 1 (M0 0.416), 0.453 / 0.399 at 0.5, 0.457 / 0.428 at 0.3.
    wise_ft: float = 0.5
    # M_k+1 then gets KTO on the harvest's `kto` view (golden vs failed siblings; M_k' has no siblings to contrast,
    # so it gets none). Dev set, 600 synth tasks, seed 0: M1 0.445 SFT alone, 0.468 with 100 KTO steps (+70 s);
    # M0' 0.416, M0 0.416. 0 = SFT only.
    kto_steps: int = 100
    # A further SFT of an already trained model, 17x below the bootstrap's rate. Chosen on the dev set (then the last
    # 100 val_harvest tasks; M0 0.433): M1 / M0' Average Reward 0.382 / 0.343 at 1e-3, 0.458 / 0.438 at 3e-4,
    # 0.413 / 0.435 at 1e-4 (shipped M0, seed 0, 39 steps, loss on every token, no averaging).
    learning_rate: float = 3e-4
    min_reward: float = 0.01  # harvest rollouts whose golden path is kept: any goal met
    # Conversations in flight. 32 vs 16, same rows (2 cores): 64 synth tasks harvested in 63 s vs 72 s, 100 test
    # tasks evaluated in 30 s vs 41 s; the loop's 600-task harvest 637 s (895 s at 16, another day).
    concurrency: int = 32
    # Processes for the harvest and eval stages: 1 = this one; N > 1 = N local Ray workers (one CPU each, sharing
    # `concurrency`). Not part of any run's identity: the same runs and rows either way (seeds decide the trees).
    workers: int = 1
    seed: int = 0
    # "rft": each iteration also trains M_k^rft on rejection sampling at JOSH's compute (module docstring). None: no
    # baseline but the control.
    baseline: str | None = None


BASELINES = ("rft",)


class NoTrainingRows(UserError):
    """A model of the loop has no rows to train on (no rollout reached min_reward)."""


@dataclass
class LoopResult:
    """What the loop produced, by unique stage / model names (M0, M0', M1, M1', M2, ...), and per iteration."""

    config: dict[str, Any]
    runs: dict[str, str] = field(default_factory=dict)  # stage ("eval M1", "harvest M0", ...) -> run id
    models: dict[str, str] = field(default_factory=dict)  # M0 / M1 / M0' / ... -> folder
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> eval summary
    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> train summary
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)  # "M1 - M0" -> paired bootstrap
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    # stage -> CPU seconds (user, system) of this process and every process under it (Ray's workers), CPU %
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    # stage -> peak resident memory so far (MB) of this process and its finished children (a Ray worker is not ours)
    peak_rss_mb: dict[str, int] = field(default_factory=dict)
    # {label, harvest_tasks, scores, comparisons, data}; data: per method (JOSH, RFT) the generated tokens, the SFT
    # and KTO rows and SFT rows per 1000 generated tokens
    iterations: list[dict[str, Any]] = field(default_factory=list)


def _names(k: int) -> tuple[str, str, str]:
    """Iteration k's models: the start M_k, its control M_k' and the result M_k+1."""
    return f"M{k}", f"M{k}'", f"M{k + 1}"


def _rft_name(k: int) -> str:
    """Iteration k's rejection-sampling model, trained from M_k."""
    return f"M{k}^rft"


def _folder(name: str) -> str:
    """M1 -> m1, M0' -> m0-control (the names of a one-iteration loop since the start), M0^rft -> m0-rft."""
    return name.lower().replace("'", "-control").replace("^", "-")


def run_loop(cfg: LoopConfig, warehouse_path: str, multiwoz_path: str | None, console: Console,
             taubench_path: str | None = None) -> LoopResult:
    """Run (or resume) every stage; returns the result and writes `cfg.out / loop.json` and `loop.png`."""
    result = LoopResult(config={k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()})
    if cfg.env == "toolwoz" and cfg.harvest_split == synthetic.SPLIT:  # the harvest tasks' generator
        result.config["synth"] = {"goals": synthetic.DEFAULT_COUNT, "seed": synthetic.DEFAULT_SEED}

    def stage(name: str, fn: Callable[[], T]) -> T:
        console.rule(f"[bold]{name}")
        start = time.monotonic()
        with TreeCPU() as meter:
            value = fn()
        result.seconds[name] = round(time.monotonic() - start, 1)
        result.cpu[name] = meter.usage().as_dict()
        result.peak_rss_mb[name] = _peak_rss_mb()
        return value

    paths = Paths(warehouse_path, multiwoz_path, taubench_path)
    with ExitStack() as stack:
        if cfg.workers > 1:  # one local Ray that every rollout stage's workers run in
            from search.ray_runner import local_ray
            from toolwoz.multiwoz import factory_home

            try:
                stack.enter_context(local_ray(factory_home() / "ray"))
            except RuntimeError as e:  # a local Ray that did not start (exit 1)
                raise FactoryError(str(e)) from e
        _stages(cfg, result, paths, stage, console)
    _write(cfg.out, result)
    return result


def _stages(cfg: LoopConfig, result: LoopResult, paths: Paths, stage: Callable[[str, Callable[[], Any]], Any],
            console: Console) -> None:
    """Every stage of every iteration, in order (`run_loop`)."""
    warehouse_path, multiwoz_path = paths.warehouse, paths.multiwoz

    def rollout_run(kind: str, agent: str, search: SearchConfig, split: str, limit: int | None,
                    task_ids: list[str] | None = None, name: str | None = None) -> str:
        spread = cfg.workers > 1
        request = RunRequest(kind, agent, search, results=search.results, split=split, env=cfg.env, limit=limit,
                             task_ids=task_ids, concurrency=-(-cfg.concurrency // cfg.workers), run_name=name,
                             ray_address="" if spread else None, ray_workers=cfg.workers if spread else None)
        report, summary = launch.run(request, paths, console)
        # A stage with failed rollouts would train on or score an incomplete run: stop (exit 1); the loop run
        # again retries them and goes on.
        if summary["failed"]:
            raise FactoryError(f"run {report.run_id}: {rollouts.failed_message(summary['failed'])}")
        return report.run_id

    m0 = stage("bootstrap M0", lambda: _ensure_m0(cfg.model, warehouse_path, multiwoz_path))
    result.models["M0"] = m0
    results = default_model.resolve_results(m0, cfg.results, "fixed")
    # The same settings as `factory eval` / `factory harvest` with these flags, so the runs are shared with them.
    evaluate = dataclasses.replace(EVALUATION, max_turns=cfg.max_turns, max_new_tokens=cfg.max_new_tokens,
                                   seed=cfg.seed, results=results)
    harvest = dataclasses.replace(HARVEST, beam=cfg.beam, max_turns=cfg.max_turns, temperature=cfg.temperature,
                                  max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, results=results)
    control = dataclasses.replace(harvest, beam=1)
    result.runs["eval M0"] = stage("eval M0", lambda: rollout_run("eval", m0, evaluate, "test", cfg.eval_tasks))
    slices = _harvest_slices(cfg, warehouse_path)

    for k, tasks in enumerate(slices):
        start, ctrl, nxt = _names(k)
        agent = result.models[start]
        # Iteration 0 is `factory harvest --limit H` (shared with it); later ones name their runs after the
        # training run that made M_k, so a retrained M_k never resumes the harvest of the model it replaced.
        tag = None if k == 0 else _made(result, start)
        result.runs[f"harvest {start}"] = stage(f"harvest {start}", lambda: rollout_run(
            "harvest", agent, harvest, cfg.harvest_split, None if tag else cfg.harvest_tasks, tasks,
            name=tag and f"harvest-{tag}"))
        result.runs[f"control {start}"] = stage(f"control rollouts {start} (beam 1)", lambda: rollout_run(
            "harvest", agent, control, cfg.harvest_split, None if tag else cfg.harvest_tasks, tasks,
            name=tag and f"control-{tag}"))
        _train_iteration(cfg, result, k, agent, warehouse_path, stage)
        data = {"JOSH": _data(warehouse_path, [result.runs[f"harvest {start}"]], cfg.min_reward,
                              result.training[nxt], result.training.get(f"{nxt} (kto)"))}
        rivals = [ctrl]  # of M_k+1, on the same test tasks
        if cfg.baseline == "rft":
            def sample(j: int) -> str:
                return rollout_run("harvest", agent, dataclasses.replace(control, seed=cfg.seed + j),
                                   cfg.harvest_split, None if tag else cfg.harvest_tasks, tasks,
                                   name=tag and f"rft{j}-{tag}")
            data["RFT"] = _rft_baseline(cfg, result, k, agent, sample, data["JOSH"]["generated_tokens"],
                                        warehouse_path, stage)
            rivals += [_rft_name(k)] if _rft_name(k) in result.models else []
        # A trained model's folder is reused by the next loop, so its eval run is named after the training run:
        # a retrained model never resumes the evaluation of the one it replaced.
        for name in (nxt, *rivals):
            run_name = f"eval-{_made(result, name)}"
            result.runs[f"eval {name}"] = stage(f"eval {name}", lambda name=name, run_name=run_name: rollout_run(
                "eval", result.models[name], evaluate, "test", cfg.eval_tasks, name=run_name))
        for name in (start, *rivals, nxt):
            result.scores[name] = runs.scored(warehouse_path, result.runs[f"eval {name}"], seed=cfg.seed)
        # M_k+1 against where it started and its rivals; the loop's last model against M0 too
        compared = [start, *rivals, *(["M0"] if 0 < k == cfg.iterations - 1 else [])]
        for other in compared:
            result.comparisons[f"{nxt} - {other}"] = runs.compare(
                warehouse_path, result.runs[f"eval {nxt}"], result.runs[f"eval {other}"], seed=cfg.seed)
        first = k * cfg.harvest_tasks
        result.iterations.append({
            "label": f"iteration {k + 1}", "harvest_tasks": [first, first + cfg.harvest_tasks - 1],
            "scores": {n: result.scores[n] for n in (start, *rivals, nxt)},
            "comparisons": {f"{nxt} - {o}": result.comparisons[f"{nxt} - {o}"] for o in compared},
            "data": data})


def _harvest_slices(cfg: LoopConfig, warehouse_path: str) -> list[list[str] | None]:
    """The harvest split's task ids of each iteration (None for iteration 0: the first H tasks, as --limit H)."""
    if cfg.iterations == 1:
        return [None]
    ids = runs.split_task_ids(warehouse_path, cfg.harvest_split, cfg.env)
    if len(ids) < cfg.iterations * cfg.harvest_tasks:
        raise UserError(f"--iterations {cfg.iterations} x --harvest-tasks {cfg.harvest_tasks} needs "
                        f"{cfg.iterations * cfg.harvest_tasks} {cfg.harvest_split} tasks and there are {len(ids)}; "
                        "use fewer iterations or harvest tasks")
    n = cfg.harvest_tasks
    return [None, *(ids[k * n:(k + 1) * n] for k in range(1, cfg.iterations))]


def _train_iteration(cfg: LoopConfig, result: LoopResult, k: int, agent: str, warehouse_path: str,
                     stage: Callable[[str, Callable[[], Any]], Any]) -> None:
    """M_k+1 = M_k + SFT (and KTO) on the harvest; M_k' = M_k + as many SFT steps on the unfiltered control."""
    start, ctrl, nxt = _names(k)
    # M_k+1 trains for `sft_epochs` over its golden paths (however many the harvest gave); M_k' then gets exactly
    # as many optimizer steps, so the two differ only in which rollouts they learn from.
    recipe = _sft_recipe(cfg)
    trainings = {nxt: ("sft", _folder(nxt), result.runs[f"harvest {start}"], cfg.min_reward),
                 ctrl: ("sft_unfiltered", _folder(ctrl), result.runs[f"control {start}"], 0.0)}
    for name, (view, folder, run_id, min_reward) in trainings.items():
        job = TrainJob(method="sft", recipe=recipe, out_dir=cfg.out / folder, warehouse_path=warehouse_path,
                       model=agent, view=view, run_ids=(run_id,), view_params={"min_reward": min_reward},
                       seed=cfg.seed, force=True)
        result.training[name] = stage(f"train {name}", lambda job=job, name=name: _train(job, name))
        result.models[name] = str(job.out_dir)
        recipe = dataclasses.replace(recipe, max_steps=result.training[nxt]["steps"])
    if cfg.kto_steps:
        _train_kto(cfg, result, nxt, "kto", (result.runs[f"harvest {start}"],), warehouse_path, stage)


def _sft_recipe(cfg: LoopConfig) -> Any:
    """The SFT recipe of M_k+1 (its step count: `sft_epochs` over its rows, or `sft_steps`)."""
    from train.recipes import get

    return dataclasses.replace(get("cpu", "sft"), learning_rate=cfg.learning_rate, num_train_epochs=cfg.sft_epochs,
                               max_steps=cfg.sft_steps or -1, loss=cfg.sft_loss, wise_ft=cfg.wise_ft)


def _train_kto(cfg: LoopConfig, result: LoopResult, name: str, view: str, run_ids: tuple[str, ...],
               warehouse_path: str, stage: Callable[[str, Callable[[], Any]], Any]) -> None:
    """`kto_steps` of KTO for model `name` (after its SFT) on `view` of `run_ids`; the KTO model replaces it."""
    from train.recipes import get

    kto = dataclasses.replace(get("cpu", "kto"), max_steps=cfg.kto_steps)
    job = TrainJob(method="kto", recipe=kto, out_dir=cfg.out / f"{_folder(name)}-kto", warehouse_path=warehouse_path,
                   model=result.models[name], view=view, run_ids=run_ids,
                   view_params={"min_reward": cfg.min_reward}, seed=cfg.seed, force=True)
    result.training[f"{name} (kto)"] = stage(f"train {name} (kto)", lambda: _train(job, f"{name} (kto)"))
    result.models[name] = str(job.out_dir)


def _rft_baseline(cfg: LoopConfig, result: LoopResult, k: int, agent: str, sample: Callable[[int], str], josh: int,
                  warehouse_path: str, stage: Callable[[str, Callable[[], Any]], Any]) -> dict[str, Any]:
    """Rejection sampling at JOSH's compute: M_k samples K conversations per harvest task (beam 1, the harvest's
    temperature, seeds seed .. seed + K - 1; the control run is the first), with K = JOSH's generated tokens
    (`josh`) / the control's, rounded; M_k^rft = M_k + M_k+1's SFT steps on the samples that reached min_reward,
    then KTO with the failed samples as negatives. A baseline that finds no rows is reported, not trained. Returns
    its data record."""
    start, _, nxt = _names(k)
    name = _rft_name(k)
    first = result.runs[f"control {start}"]
    per_sample = runs.harvest_yield(warehouse_path, [first], cfg.min_reward)["generated_tokens"]
    samples = max(1, round(josh / max(per_sample, 1)))
    run_ids = [first]
    for j in range(1, samples):
        run_ids.append(stage(f"rft samples {start} ({j + 1} of {samples})", lambda j=j: sample(j)))
        result.runs[f"rft samples {start} ({j + 1})"] = run_ids[-1]
    recipe = dataclasses.replace(_sft_recipe(cfg), max_steps=result.training[nxt]["steps"])
    job = TrainJob(method="sft", recipe=recipe, out_dir=cfg.out / _folder(name), warehouse_path=warehouse_path,
                   model=agent, view="sft", run_ids=tuple(run_ids), view_params={"min_reward": cfg.min_reward},
                   seed=cfg.seed, force=True)
    try:
        result.training[name] = stage(f"train {name}", lambda: _train(job, name))
    except NoTrainingRows:
        err.print(f"[yellow]{name}: none of M{k}'s {samples} samples per task reached reward {cfg.min_reward}: "
                  "rejection sampling found no training rows (not trained)[/yellow]")
        return {**_data(warehouse_path, run_ids, cfg.min_reward, None, None), "samples_per_task": samples}
    result.models[name] = str(job.out_dir)
    if cfg.kto_steps:
        _train_kto(cfg, result, name, "kto_samples", tuple(run_ids), warehouse_path, stage)
    data = _data(warehouse_path, run_ids, cfg.min_reward, result.training[name],
                 result.training.get(f"{name} (kto)"))
    err.print(f"{name}: {samples} samples per task, {data['generated_tokens']:,} generated tokens "
              f"({data['generated_tokens'] / max(josh, 1):.2f}x JOSH's {josh:,})")
    return {**data, "samples_per_task": samples}


def _data(warehouse_path: str, run_ids: list[str], min_reward: float, sft: dict[str, Any] | None,
          kto: dict[str, Any] | None) -> dict[str, Any]:
    """What a harvest cost and found: generated tokens, rollouts kept, the tasks and full successes among them, SFT
    and KTO rows, SFT rows per 1000 generated tokens."""
    found = runs.harvest_yield(warehouse_path, run_ids, min_reward)
    tokens, rows = found["generated_tokens"], sft["rows"] if sft else 0
    return {"runs": run_ids, **found, "sft_rows": rows, "kto_rows": kto["rows"] if kto else None,
            "sft_rows_per_1000_tokens": round(1000 * rows / tokens, 4) if tokens else None}


def total_cpu(result: LoopResult) -> dict[str, float]:
    """The CPU use of every stage of `result` together (`TreeCPU`'s measure, as in `result.cpu`)."""
    stages = result.cpu.values()
    return Usage(sum(c["user_s"] for c in stages), sum(c["system_s"] for c in stages),
                 sum(c["wall_s"] for c in stages)).as_dict()


def _peak_rss_mb() -> int:
    """The peak resident memory of this process or any of its finished children, in MB (Linux reports KiB)."""
    import resource

    return round(max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
                 / 1024)


def _made(result: LoopResult, name: str) -> str:
    """The id of the training run that made model `name` (its KTO run when it had one)."""
    return result.training.get(f"{name} (kto)", result.training[name])["run_id"]


def _write(out: Path, result: LoopResult) -> None:
    """loop.json and its plot (loop.png) in `out`."""
    from factory.present.plots import plot_loop

    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(json.dumps(dataclasses.asdict(result), default=str))
    (out / "loop.json").write_text(json.dumps(data, indent=2) + "\n")
    plot_loop(data, out / "loop.png")


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
        raise NoTrainingRows(f"{name} has no training rows: no rollout of run {run} reached reward "
                        f"{job.view_params['min_reward']} (`factory sql \"select * from harvest_summary\"`); use a "
                        "stronger M0, a larger --beam or more --harvest-tasks (finished runs are kept: the loop "
                        "resumes)") from None


def _same_training(job: TrainJob) -> dict[str, Any] | None:
    """The summary of `job.out_dir` if its factory.json shows the same start model, data and recipe."""
    from train.recipes import upgrade

    manifest_file = job.out_dir / FACTORY_JSON
    if not manifest_file.exists():
        return None
    m = json.loads(manifest_file.read_text())
    wanted = {"method": job.method, "model": resolve_model(job.model),
              "view": job.view, "seed": job.seed, "recipe": json.loads(json.dumps(dataclasses.asdict(job.recipe))),
              "runs": list(job.run_ids), "params": {k: v for k, v in job.view_params.items() if v is not None},
              "warehouse": str(Path(job.warehouse_path).resolve())}
    found = {"method": m.get("method"), "model": m.get("model"), "view": m.get("view"), "seed": m.get("seed"),
             "recipe": upgrade(m.get("recipe") or {}),  # a folder trained before Recipe took TRL's names too
             "runs": (m.get("data") or {}).get("params", {}).get("run_id"),
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
