"""One assembly for every run: `factory eval`, `factory harvest` (local or on Ray) and the loop's stages turn
what they were asked for into RunSettings here, run it, and read back its summary row."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from factory.jobs import default_model, environments, rollouts
from factory.jobs.rollouts import RunReport
from factory.store.runs import RunSettings
from search.josh import SearchConfig


@dataclass(frozen=True)
class RunRequest:
    """A run as asked for: the flags of `factory eval` / `factory harvest`, before the agent is resolved (None =
    the default model) and before `results` falls back to the agent's own preference."""

    kind: str  # eval | harvest
    agent: str | None
    search: SearchConfig  # the preset with the flags applied; `results` is set from the field below
    results: str | None = None  # None: the agent's preference (factory_results in its config.json)
    split: str | None = None  # None: the environment's default split for `kind`
    env: str = "toolwoz"
    base_url: str | None = None
    user: str = "rule"
    user_model: str | None = None
    user_base_url: str | None = None
    limit: int | None = None
    task_ids: Sequence[str] | None = None
    concurrency: int = 16
    run_name: str | None = None
    request_timeout_s: float | None = None
    ray_address: str | None = None  # None: run here; "": $RAY_ADDRESS or a new local Ray
    ray_workers: int | None = None


@dataclass
class Paths:
    """Where a run reads and writes: the warehouse, and the environments' source data (None: remembered or
    default)."""

    warehouse: str
    multiwoz: str | None = None
    taubench: str | None = None


def settings_for(request: RunRequest, paths: Paths, console: Console) -> RunSettings:
    """The RunSettings of `request`: default split, the agent checked against the environment and resolved (the
    default model is bootstrapped on first use), `results` from the agent's preference."""
    split = request.split or environments.default_split(request.env, request.kind)
    rollouts.check_agent(request.env, request.agent, request.search.protocol)
    agent = request.agent
    if not rollouts.is_scripted(request.env, agent):
        agent = default_model.resolve_agent(agent, multiwoz_path=paths.multiwoz, warehouse_path=paths.warehouse,
                                            console=console)
    assert agent is not None
    results = default_model.resolve_results(agent, request.results, request.search.semantics)
    search = dataclasses.replace(request.search, results=results)
    return rollouts.build_settings(request.kind, agent, search, base_url=request.base_url, user=request.user,
                                   user_model=request.user_model, user_base_url=request.user_base_url, split=split,
                                   limit=request.limit, task_ids=request.task_ids, concurrency=request.concurrency,
                                   env=request.env)


def run(request: RunRequest, paths: Paths, console: Console) -> tuple[RunReport, dict[str, Any]]:
    """Run (or resume) `request`; returns its report and its summary row (eval_summary / harvest_summary plus
    this invocation's timing)."""
    settings = settings_for(request, paths, console)
    search = settings.search
    if request.kind == "harvest" and search.temperature == 0 and search.beam > 1 and settings.backend != "teacher":
        console.print("[yellow]warning: temperature 0 makes every branch alike; JOSH needs sampling[/yellow]")
    if request.ray_address is not None:
        from factory.jobs.ray_harvest import execute_on_ray  # imports Ray's runner only when asked for

        report = execute_on_ray(settings, paths.warehouse, run_name=request.run_name, multiwoz_path=paths.multiwoz,
                                console=console, address=request.ray_address or None, workers=request.ray_workers,
                                request_timeout_s=request.request_timeout_s)
    else:
        report = rollouts.execute(settings, paths.warehouse, run_name=request.run_name, multiwoz_path=paths.multiwoz,
                                  console=console, request_timeout_s=request.request_timeout_s,
                                  taubench_path=paths.taubench)
    return report, rollouts.summary(f"{request.kind}_summary", paths.warehouse, report)
