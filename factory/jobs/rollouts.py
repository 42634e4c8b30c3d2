"""Run a harvest or an eval: tasks from the warehouse, rollouts from `search/`, rows back into the warehouse.

Each finished rollout is committed in its own transaction, so an interrupted run loses only the rollouts
that were in flight; re-running the same command resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from factory.errors import Interrupted, UserError
from factory.jobs import environments, models
from factory.output import LogProgress
from factory.signals import raise_if_stop_requested, signals_cancel
from factory.store import runs
from factory.store.runs import RunSettings
from factory.store.writer import WriteGroup, Writer
from search.backends import backend_kind, engine_info, load_backend
from search.backends.base import Backend, Request, SamplingParams
from search.backends.scripted import ScriptedBackend
from search.environment import Environment, Task
from search.josh import RolloutResult, SearchConfig, branch_seed, run_rollout
from search.runner import ToolRunner, max_batch, run_all


@dataclass
class RunReport:
    run_id: str
    new_rollouts: int
    skipped: int
    seconds: float
    status: str


def user_factory(env: Environment, settings: RunSettings, user_backend: Backend | None) -> Callable[[Task, int], Any]:
    """Task, sample -> the environment's user simulator of kind `settings.user`, seeded per (run, task, sample)."""
    complete = None
    if settings.user == "llm":
        assert user_backend is not None

        async def complete(messages: list[dict[str, str]]) -> str:
            completion = await user_backend.complete(Request(messages, None, SamplingParams(0.0, 1.0, 96, 0)))
            if completion.error:
                raise RuntimeError(completion.error)
            return completion.message.get("content") or ""

    return lambda task, sample: env.user(settings.user, task,
                                         branch_seed(settings.search.seed, task.task_id, sample, -2), complete)


def build_settings(kind: str, agent: str, search: SearchConfig, *, split: str, base_url: str | None = None,
                   user: str = "rule", user_model: str | None = None, user_base_url: str | None = None,
                   limit: int | None = None, task_ids: Sequence[str] | None = None,
                   concurrency: int = 16, env: str = "toolwoz") -> RunSettings:
    """RunSettings from command-line values; starts nothing (commands resolve the default agent first)."""
    kind_of_backend = check_agent(env, agent, search.protocol)
    keyed = _task_key(env)
    tasks = tuple(sorted({keyed(t) for t in task_ids})) if task_ids else None
    return RunSettings(kind=kind, agent=agent, backend=kind_of_backend, user=user, user_model=user_model,
                       split=split, search=search, base_url=base_url, user_base_url=user_base_url, limit=limit,
                       tasks=tasks, concurrency=concurrency, env=env)


# --agent values an environment runs itself (privileged scripted agents), by environment
SCRIPTED = {"retail": ("oracle",), "airline": ("oracle",)}
SCRIPTED_ANY = {a for agents in SCRIPTED.values() for a in agents}


def check_agent(env: str, agent: str | None, protocol: str) -> str:
    """The backend kind of `agent` in `env` (`scripted`: one the environment runs itself), or a UserError for an
    agent or protocol the environment does not offer. `agent` None: the default model, a transformers agent."""
    environments.check(env)
    if agent is None:
        kind = "transformers"
    else:
        kind = "scripted" if agent in SCRIPTED.get(env, ()) else backend_kind(agent)
    if protocol == "react" and kind in ("teacher", "scripted"):
        raise UserError(f"the {agent} speaks the `tools` protocol only; drop --protocol react")
    if protocol == "react" and env != "toolwoz":
        raise UserError(f"the react protocol is ToolWOZ's; --env {env} speaks `tools` only")
    if env != "toolwoz" and kind == "teacher":
        raise UserError(f"the teacher is ToolWOZ's scripted agent; --env {env} offers {', '.join(SCRIPTED[env])}")
    if env == "toolwoz" and agent in SCRIPTED_ANY:
        raise UserError(f"--agent {agent} is a τ-bench agent; pass --env retail or --env airline")
    return kind


def is_scripted(env: str, agent: str | None) -> bool:
    """Is `agent` a scripted agent `env` runs itself (no model to resolve)?"""
    return agent is not None and agent in SCRIPTED.get(env, ())


def _task_key(env: str) -> Callable[[str], str]:
    if env == "toolwoz":
        from toolwoz.tasks import task_key

        return task_key
    return lambda text: text


def rollout_id(run_id: str, task: Task, sample: int) -> str:
    return f"{run_id}/{task.task_id}/{sample}"


def failed_rollouts(writer: Writer, run_id: str) -> set[str]:
    """The run's committed rollouts whose status is `failed` (a backend or user-simulator error ended a branch):
    a re-run of the same command runs them again."""
    with writer.session() as con:
        return {r[0] for r in con.execute("SELECT rollout_id FROM rollouts WHERE run_id = ? AND status = 'failed'",
                                          [run_id]).fetchall()}


FAILED_EXIT = 1  # a run with failed rollouts: infrastructure (backend or user simulator), all committed


def failed_message(failed: int) -> str:
    """What a run with `failed` failed rollouts says (commands then exit FAILED_EXIT)."""
    return (f"{failed} rollouts failed on backend or user errors (rollouts.error says why); run the same command "
            "again to retry them")


def commit(writer: Writer | WriteGroup, tables: dict[str, Any], rollout: str,
           retry: set[str]) -> None:
    """Commit one rollout's rows in one transaction; a retried rollout's old rows go in the same one. Nothing
    is committed once a stop was asked for: the rollout may have been cut short by it."""
    raise_if_stop_requested()
    writer.append(tables, before=runs.replace_rollout(rollout) if rollout in retry else [])


def agent_template(agent: str, console: Console) -> str | None:
    """The chat template to serve `agent` with in place of its own: ChatML with tools for a transformers model
    whose ChatML template ignores tools (said on the console), else None."""
    if backend_kind(agent) != "transformers" or (template := models.tools_template(agent)) is None:
        return None
    console.print(f"[dim]{agent}: its ChatML chat template ignores tools; serving it with ChatML + tools "
                  "(train/chatml_tools.jinja)[/dim]")
    return template


def resume_notice(run_id: str, skipped: int, retried: int, todo: int) -> str | None:
    """What a resumed run says before it starts (None for a new run)."""
    if not skipped and not retried:
        return None
    parts = [f"{skipped} rollouts already committed"]
    if retried:
        parts.append(f"{retried} failed ones to run again")
    left = f"; {todo} to go" if todo else ": nothing left to run"
    return f"resuming run {run_id}: {', '.join(parts)}{left}"


def scripted_agents(env: Environment, name: str) -> Callable[[Task], Backend]:
    """Task -> the environment's scripted agent `name` for it, as a backend."""
    return lambda task: ScriptedBackend(name, env.scripted_agent(name, task))


def execute(settings: RunSettings, warehouse_path: str, *, run_name: str | None, multiwoz_path: str | None,
            console: Console, samples: int = 1, request_timeout_s: float | None = None,
            taubench_path: str | None = None) -> RunReport:
    """Run (or resume) the rollouts of `settings` and commit each one as it finishes; rollouts a backend error
    failed in an earlier invocation are run again."""
    with Writer(warehouse_path) as writer:
        environments.ensure(writer, settings.env, console, multiwoz_path=multiwoz_path, taubench_path=taubench_path)
        env = environments.load(writer, settings.env)
        tasks = environments.select_tasks(env, settings.split, settings.limit, settings.tasks)
        if done := finished_run(writer, settings, run_name, env.tool_schemas(), tasks, samples, console):
            return done
        batch = batch_size(settings)  # one generate per search step
        rows = getattr(env, "rows", None)  # ToolWOZ's: the teacher's lexicon
        agent: Backend | None = None  # one backend for every task, or the environment's scripted agent per task
        if settings.backend != "scripted":
            agent = load_backend(settings.agent, base_url=settings.base_url, rows=rows,
                                 concurrency=settings.concurrency, max_batch=batch,
                                 request_timeout_s=request_timeout_s, chat_template=agent_template(settings.agent,
                                                                                                   console))
        user_backend = None
        if settings.user == "llm":
            user_backend = load_backend(settings.user_model or "", base_url=settings.user_base_url, rows=rows,
                                        concurrency=settings.concurrency, max_batch=batch,
                                        request_timeout_s=request_timeout_s)
        # vLLM's version, prefix caching, batch invariance: part of the run record
        if agent is not None and (engine := engine_info(agent)):
            settings = dataclasses.replace(settings, engine=engine)
        report, todo, retry = begin(writer, settings, run_name, env.tool_schemas(), tasks, samples, console)
        make_user = user_factory(env, settings, user_backend)
        tools = ToolRunner(env)
        with lifecycle(writer, report):
            # The group is left outside the event loop, so even a signal the loop does not unwind (SIGTERM)
            # commits every finished rollout still waiting and stops the writer thread before we exit.
            with writer.grouped() as group:
                asyncio.run(_run(settings, report.run_id, todo, agent or scripted_agents(env, settings.agent),
                                 make_user, tools, group, console, report, retry))
    return report


def left_to_run(run_id: str, tasks: Sequence[Task], samples: int, done: set[str]) -> list[tuple[Task, int]]:
    """The (task, sample) pairs of the run whose rollout is not in `done`."""
    return [(t, s) for t in tasks for s in range(samples) if rollout_id(run_id, t, s) not in done]


def finished_run(writer: Writer, settings: RunSettings, run_name: str | None, tool_schemas: list[dict[str, Any]],
                 tasks: Sequence[Task], samples: int, console: Console) -> RunReport | None:
    """The report of a resumed run with nothing left to run (every rollout committed, none failed), found before
    any model loads or Ray starts; None otherwise. Not for vLLM, whose engine is part of the run id."""
    if settings.backend == "vllm":
        return None
    run_id = run_name or settings.default_run_id()
    with writer.session() as con:
        done = {r[0] for r in con.execute("SELECT rollout_id FROM rollouts WHERE run_id = ? AND status <> 'failed'",
                                          [run_id]).fetchall()}
    if left_to_run(run_id, tasks, samples, done):
        return None
    report, _, _ = begin(writer, settings, run_name, tool_schemas, tasks, samples, console)  # checks the settings
    with lifecycle(writer, report):
        return report


def begin(writer: Writer, settings: RunSettings, run_name: str | None, tool_schemas: list[dict[str, Any]],
          tasks: Sequence[Task], samples: int, console: Console) -> tuple[RunReport, list[tuple[Task, int]], set[str]]:
    """Register (or resume) the run: its report so far, the (task, sample) pairs left to run, and the committed
    rollouts that failed and run again. Says what a resumed run skips."""
    run_id, done = runs.start(writer, settings, run_name, tool_schemas)
    retry = failed_rollouts(writer, run_id)
    done = done - retry
    todo = left_to_run(run_id, tasks, samples, done)
    report = RunReport(run_id, 0, len(tasks) * samples - len(todo), 0.0, "done")
    if notice := resume_notice(run_id, report.skipped, len(retry), len(todo)):
        console.print(notice)
    return report, todo, retry


@contextlib.contextmanager
def lifecycle(writer: Writer, report: RunReport) -> Iterator[None]:
    """Time the block and record how the run ended: `done` (or the `report.status` the block set), `failed` on an
    error, `interrupted` on a signal (then one-line Interrupted: what finished is committed)."""
    start = time.monotonic()
    status = "failed"
    try:
        yield
        status = report.status
    except (KeyboardInterrupt, asyncio.CancelledError):  # a signal: see signals.signals_cancel
        status = "interrupted"
        raise Interrupted(f"interrupted: {report.new_rollouts} rollouts of run {report.run_id} committed; "
                          "run the same command again to resume") from None
    finally:
        report.seconds = time.monotonic() - start
        report.status = status
        runs.finish(writer, report.run_id, status)


def batch_size(settings: RunSettings) -> int:
    """Rows the agent's backend batches in one generate: every live branch of every conversation in flight."""
    return max_batch(settings.concurrency, settings.search.beam)


async def _run(settings: RunSettings, run_id: str, todo: list[tuple[Task, int]],
               agent: Backend | Callable[[Task], Backend], make_user: Callable[[Task, int], Any], tools: ToolRunner,
               group: WriteGroup, console: Console, report: RunReport, retry: set[str]) -> None:
    shared = agent if hasattr(agent, "complete") else None
    agent_for: Callable[[Task], Backend] = (lambda task: shared) if shared else agent  # type: ignore[assignment]
    if not todo:  # a resumed, finished run: no empty progress bar
        if shared:
            await shared.aclose()
        return
    rewards: list[float] = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("mean reward {task.fields[reward]:.3f}"), TimeElapsedColumn())
    with LogProgress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(f"{settings.kind} {run_id}", total=len(todo), reward=0.0)

        def write(result: RolloutResult) -> None:
            # committed with the others ready within a second (Writer.grouped)
            commit(group, result.tables(), result.rollout["rollout_id"], retry)
            rewards.append(result.rollout["reward"])
            report.new_rollouts += 1
            progress.update(bar, advance=1, reward=sum(rewards) / len(rewards))

        def job(task: Task, sample: int):
            return lambda: run_rollout(task, agent_for(task), make_user(task, sample), tools, settings.search,
                                       rollout_id=rollout_id(run_id, task, sample), run_id=run_id, sample=sample)

        try:
            with signals_cancel(asyncio.current_task()):
                await run_all([job(t, s) for t, s in todo], concurrency=settings.concurrency, on_result=write)
        finally:
            if shared:
                await shared.aclose()






def summary(view: str, warehouse_path: str, report: RunReport) -> dict[str, Any]:
    """The run's row of `view` (eval_summary / harvest_summary) plus this invocation's timing."""
    row = runs.run_summary(view, warehouse_path, report.run_id)
    rate = report.new_rollouts / report.seconds * 60 if report.seconds else 0.0
    return row | {"new_rollouts": report.new_rollouts, "resumed_skipped": report.skipped,
                  "seconds": round(report.seconds, 1), "conversations_per_min": round(rate, 2)}
