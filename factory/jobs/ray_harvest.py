"""`factory harvest --ray`: the same run as a local harvest, its rollouts sharded over Ray workers.

This process stays the warehouse's only writer. It builds the run exactly as `rollouts.execute` does (the same
settings, run id, task selection, resume set and seeds: workers derive every seed from the same hash), hands
each (task, sample) not committed yet to `search.ray_runner.WorkerPool`, and commits every finished rollout in
its own transaction as the workers return it (Arrow tables). A worker that dies loses only the rollouts it had
in flight: the other workers carry on with the rest of the queue, then the command exits 1 saying how many are
missing, and running the same command again (with or without `--ray`) completes the run without duplicates.
"""

from __future__ import annotations

import dataclasses
from functools import partial

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from factory.errors import FactoryError, UserError
from factory.jobs import environments, rollouts
from factory.jobs.rollouts import RunReport, lifecycle
from factory.output import LogProgress
from factory.store.runs import RunSettings
from factory.store.writer import Writer
from search.ray_runner import Finished, Job, WorkerPool, WorkerSetup
from toolwoz import tables
from toolwoz.environment import ToolWOZ
from toolwoz.multiwoz import factory_home
from toolwoz.schemas import tool_schemas


class WorkersLost(FactoryError):
    """Ray workers died mid-run: what they had in flight is not committed (exit 1; re-running completes)."""


def execute_on_ray(settings: RunSettings, warehouse_path: str, *, run_name: str | None, multiwoz_path: str | None,
                   console: Console, samples: int = 1, address: str | None = None,
                   workers: int | None = None, request_timeout_s: float | None = None) -> RunReport:
    """Run (or resume) the rollouts of `settings` on Ray workers; commit each one as it comes back."""
    with Writer(warehouse_path) as writer:
        if settings.env != "toolwoz":
            raise UserError(f"--ray harvests ToolWOZ only for now; drop --ray for --env {settings.env}")
        environments.ensure(writer, settings.env, console, multiwoz_path=multiwoz_path)
        env = environments.load(writer, settings.env)
        tasks = environments.select_tasks(env, settings.split, settings.limit, settings.tasks)
        if done := rollouts.finished_run(writer, settings, run_name, tool_schemas(), tasks, samples, console):
            return done  # a resumed, finished run: no Ray to start
        setup = WorkerSetup(agent=settings.agent, base_url=settings.base_url, search=settings.search,
                            toolwoz=tables.export_arrow(env.tools.con),  # type: ignore[attr-defined]
                            make_users=partial(rollouts.user_factory, ToolWOZ, settings),  # the same users
                            user_model=settings.user_model if settings.user == "llm" else None,
                            user_base_url=settings.user_base_url, concurrency=settings.concurrency,
                            max_batch=rollouts.batch_size(settings),
                            request_timeout_s=request_timeout_s,
                            chat_template=rollouts.agent_template(settings.agent, console))
        try:
            with console.status("starting Ray workers (each loads its own backend)"):
                # A local Ray is recorded in $FACTORY_HOME/ray: the next --ray run stops what a killed one left.
                pool = WorkerPool(setup, workers=workers, address=address, record_dir=factory_home() / "ray")
        except RuntimeError as e:  # a worker or a local Ray that did not start
            raise FactoryError(str(e)) from e
        try:
            return _run(pool, settings, writer, run_name, tasks, samples, console)
        finally:
            pool.shutdown()


def _run(pool: WorkerPool, settings: RunSettings, writer: Writer, run_name: str | None,
         tasks: list, samples: int, console: Console) -> RunReport:
    if pool.engine:  # vLLM: the same record (and run id) as rollouts.execute gives
        settings = dataclasses.replace(settings, engine=pool.engine)
    report, pairs, retry = rollouts.begin(writer, settings, run_name, tool_schemas(), tasks, samples, console)
    run_id = report.run_id
    todo = [Job(rollouts.rollout_id(run_id, t, s), run_id, t.task_id, s) for t, s in pairs]
    if not todo:  # a resumed, finished run: no empty progress bar
        with lifecycle(writer, report):
            return report
    console.print(f"[dim]{len(pool.actors)} Ray workers, {settings.concurrency} conversations in flight each[/dim]")
    rewards: list[float] = []
    lost: list[str] = []
    missing = 0
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("mean reward {task.fields[reward]:.3f}"), TimeElapsedColumn())
    with lifecycle(writer, report), LogProgress(*columns, console=console, transient=False) as progress, \
            writer.grouped() as group:
        bar = progress.add_task(f"{settings.kind} {run_id} (ray)", total=len(todo), reward=0.0)
        for event in pool.run(todo, inflight=settings.concurrency):
            if isinstance(event, Finished):
                rollout = event.tables["rollouts"]["rollout_id"][0].as_py()
                # committed with the others ready within a second (Writer.grouped)
                rollouts.commit(group, event.tables, rollout, retry)
                rewards.append(event.tables["rollouts"]["reward"][0].as_py())
                report.new_rollouts += 1
                progress.update(bar, advance=1, reward=sum(rewards) / len(rewards))
            else:
                lost.append(event.error)
                missing += len(event.lost)
                console.print(f"[red]Ray worker {event.worker} died ({event.error}); {len(event.lost)} "
                              "rollouts in flight there are lost, the other workers carry on[/red]")
        missing += len(pool.not_started)
        if lost:
            report.status = "failed"
    if lost:
        raise WorkersLost(f"{len(lost)} of {len(pool.actors)} Ray workers died ({lost[0]}); {missing} rollouts of "
                          f"run {run_id} were not committed; run the same command again to complete the run")
    return report
