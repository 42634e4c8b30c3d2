"""Run a harvest or an eval: tasks from the warehouse, rollouts from `search/`, rows back into the warehouse.

Each finished rollout is committed in its own transaction, so an interrupted run loses only the rollouts
that were in flight; re-running the same command resumes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

import sql
from factory import models, runs, warehouse
from factory.errors import Interrupted, UserError, raise_if_stop_requested, signals_cancel
from factory.output import LogProgress
from factory.runs import RunSettings
from search.backends import backend_kind, engine_info, load_backend
from search.backends.base import Backend, Request, SamplingParams
from search.josh import RolloutResult, SearchConfig, branch_seed, run_rollout
from search.runner import ToolRunner, max_batch, run_all
from toolwoz import multiwoz, tables
from toolwoz.rewards import paired_bootstrap
from toolwoz.tasks import Task, check_split, task_key
from toolwoz.tools import ToolEnv
from toolwoz.user_llm import LLMUser
from toolwoz.user_rule import RuleUser


@dataclass
class RunReport:
    run_id: str
    new_rollouts: int
    skipped: int
    seconds: float
    status: str


def ensure_toolwoz(writer: warehouse.Writer, multiwoz_path: str | None, console: Console) -> None:
    """Build the ToolWOZ tables into the warehouse on first use."""
    with writer.session() as con:
        if warehouse.has_toolwoz(con):
            return
        console.print(f"[dim]{writer.path} has no ToolWOZ tables yet: building them (once)[/dim]")
        tables.build(con, multiwoz.load(multiwoz_path))


def load_env(writer: warehouse.Writer) -> ToolEnv:
    """A ToolEnv over an in-memory copy of the warehouse's ToolWOZ tables."""
    with writer.session() as con:
        return ToolEnv.from_connection(tables.copy_to_memory(con))


def select_tasks(env: ToolEnv, split: str, limit: int | None, task_ids: list[str] | None) -> list[Task]:
    """The split's tasks in sorted order, optionally only `task_ids`, first `limit`."""
    check_split(split)
    chosen = sorted((t for t in env.tasks.values() if split in t.splits), key=lambda t: t.task_id)
    if task_ids:
        wanted = {task_key(t) for t in task_ids}
        if unknown := wanted - {t.task_id for t in chosen}:
            raise UserError(f"tasks not in split {split}: {', '.join(sorted(unknown)[:5])}")
        chosen = [t for t in chosen if t.task_id in wanted]
    if not chosen:
        hint = " (the train split is empty with this MultiWOZ copy; use --split val_harvest)" if split == "train" else ""
        raise UserError(f"split {split} has no tasks{hint}")
    return chosen[:limit] if limit else chosen


def _user_factory(settings: RunSettings, user_backend: Backend | None) -> Callable[[Task, int], Any]:
    if settings.user == "rule":
        return lambda task, sample: RuleUser(task.goal, branch_seed(settings.search.seed, task.task_id, sample, -2))
    assert user_backend is not None

    async def complete(messages: list[dict[str, str]]) -> str:
        completion = await user_backend.complete(Request(messages, None, SamplingParams(0.0, 1.0, 96, 0)))
        if completion.error:
            raise RuntimeError(completion.error)
        return completion.message.get("content") or ""

    return lambda task, sample: LLMUser(task.message, complete)


def build_settings(kind: str, agent: str, search: SearchConfig, *, split: str, base_url: str | None = None,
                   user: str = "rule", user_model: str | None = None, user_base_url: str | None = None,
                   limit: int | None = None, task_ids: Sequence[str] | None = None,
                   concurrency: int = 16) -> RunSettings:
    """RunSettings from command-line values; starts nothing (commands resolve the default agent first)."""
    kind_of_backend = backend_kind(agent)
    if search.protocol == "react" and kind_of_backend == "teacher":
        raise UserError("the teacher speaks the `tools` protocol only; drop --protocol react")
    tasks = tuple(sorted({task_key(t) for t in task_ids})) if task_ids else None
    return RunSettings(kind=kind, agent=agent, backend=kind_of_backend, user=user, user_model=user_model,
                       split=split, search=search, base_url=base_url, user_base_url=user_base_url, limit=limit,
                       tasks=tasks, concurrency=concurrency)


def rollout_id(run_id: str, task: Task, sample: int) -> str:
    return f"{run_id}/{task.task_id}/{sample}"


# A failed rollout's rows, dropped in the transaction that commits its retry (children first).
_REPLACE = tuple(f"DELETE FROM {table} WHERE rollout_id = ?"  # table: a code constant
                 for table in ("rewards", "tool_calls", "messages", "nodes", "rollouts"))


def failed_rollouts(writer: warehouse.Writer, run_id: str) -> set[str]:
    """The run's committed rollouts whose status is `failed` (a backend or user-simulator error ended a branch):
    a re-run of the same command runs them again."""
    with writer.session() as con:
        return {r[0] for r in con.execute("SELECT rollout_id FROM rollouts WHERE run_id = ? AND status = 'failed'",
                                          [run_id]).fetchall()}


def commit(writer: warehouse.Writer | warehouse.WriteGroup, tables: dict[str, Any], rollout: str,
           retry: set[str]) -> None:
    """Commit one rollout's rows in one transaction; a retried rollout's old rows go in the same one. Nothing
    is committed once a stop was asked for: the rollout may have been cut short by it."""
    raise_if_stop_requested()
    writer.append(tables, before=[(s, [rollout]) for s in _REPLACE] if rollout in retry else [])


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


def execute(settings: RunSettings, warehouse_path: str, *, run_name: str | None, multiwoz_path: str | None,
            console: Console, samples: int = 1, request_timeout_s: float | None = None) -> RunReport:
    """Run (or resume) the rollouts of `settings` and commit each one as it finishes; rollouts a backend error
    failed in an earlier invocation are run again."""
    with warehouse.Writer(warehouse_path) as writer:
        ensure_toolwoz(writer, multiwoz_path, console)
        env = load_env(writer)
        tasks = select_tasks(env, settings.split, settings.limit, settings.tasks)
        batch = max_batch(settings.concurrency, settings.search.beam)  # one generate per search step
        agent = load_backend(settings.agent, base_url=settings.base_url, rows=env.rows,
                             concurrency=settings.concurrency, max_batch=batch, request_timeout_s=request_timeout_s,
                             chat_template=agent_template(settings.agent, console))
        user_backend = None
        if settings.user == "llm":
            user_backend = load_backend(settings.user_model or "", base_url=settings.user_base_url, rows=env.rows,
                                        concurrency=settings.concurrency, max_batch=batch,
                                        request_timeout_s=request_timeout_s)
        if engine := engine_info(agent):  # vLLM's version, prefix caching, batch invariance: part of the run record
            settings = dataclasses.replace(settings, engine=engine)
        run_id, done = runs.start(writer, settings, run_name)
        retry = failed_rollouts(writer, run_id)
        done = done - retry
        todo = [(t, s) for t in tasks for s in range(samples) if rollout_id(run_id, t, s) not in done]
        report = RunReport(run_id, 0, len(tasks) * samples - len(todo), 0.0, "done")
        if notice := resume_notice(run_id, report.skipped, len(retry), len(todo)):
            console.print(notice)
        make_user = _user_factory(settings, user_backend)
        tools = ToolRunner(env)
        start = time.monotonic()
        status = "failed"
        try:
            # The group is left outside the event loop, so even a signal the loop does not unwind (SIGTERM)
            # commits every finished rollout still waiting and stops the writer thread before we exit.
            with writer.grouped() as group:
                asyncio.run(_run(settings, run_id, todo, agent, make_user, tools, group, console, report, retry))
            status = "done"
        except (KeyboardInterrupt, asyncio.CancelledError):  # a signal: see errors.signals_cancel
            status = "interrupted"
            raise Interrupted(f"interrupted: {report.new_rollouts} rollouts of run {run_id} committed; "
                              "run the same command again to resume") from None
        finally:
            report.seconds = time.monotonic() - start
            report.status = status
            runs.finish(writer, run_id, status)
    return report


async def _run(settings: RunSettings, run_id: str, todo: list[tuple[Task, int]], agent: Backend,
               make_user: Callable[[Task, int], Any], tools: ToolRunner, group: warehouse.WriteGroup,
               console: Console, report: RunReport, retry: set[str]) -> None:
    if not todo:  # a resumed, finished run: no empty progress bar
        await agent.aclose()
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
            return lambda: run_rollout(task, agent, make_user(task, sample), tools, settings.search,
                                       rollout_id=rollout_id(run_id, task, sample), run_id=run_id, sample=sample)

        try:
            with signals_cancel(asyncio.current_task()):
                await run_all([job(t, s) for t, s in todo], concurrency=settings.concurrency, on_result=write)
        finally:
            await agent.aclose()


def compare(warehouse_path: str, run_a: str, run_b: str, samples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Run A vs run B on the tasks both finished: mean reward and 100% success of each, and the paired-bootstrap
    interval of A - B (toolwoz.rewards.paired_bootstrap). Run ids may be unique prefixes."""
    with warehouse.opened(warehouse_path, read_only=True) as con:
        a, b = runs.resolve_run(con, run_a), runs.resolve_run(con, run_b)
        rows = con.execute(sql.load("queries/paired_rewards"), {"run_a": a, "run_b": b}).fetchall()
    if not rows:
        raise UserError(f"runs {a} and {b} share no finished task; evaluate both on the same split")
    reward_a, reward_b = [r[1] for r in rows], [r[2] for r in rows]
    stats = paired_bootstrap(reward_a, reward_b, samples=samples, seed=seed)
    return {"run_a": a, "run_b": b, "reward_a": round(sum(reward_a) / len(rows), 4),
            "reward_b": round(sum(reward_b) / len(rows), 4),
            "success_a": round(sum(r[3] for r in rows) / len(rows), 4),  # is_success, in SQL
            "success_b": round(sum(r[4] for r in rows) / len(rows), 4), **stats}


def run_summary(view: str, warehouse_path: str, run_id: str) -> dict[str, Any]:
    """The run's row of `view` (eval_summary / harvest_summary), with `failed` (rollouts a backend or user error
    ended) from run_scores where the view has no such column."""
    with warehouse.opened(warehouse_path, read_only=True) as con:
        cur = con.execute(f"SELECT * FROM {view} WHERE run_id = ?", [run_id])  # view: ours
        row = dict(zip([d[0] for d in cur.description], cur.fetchall()[0]))
        if "failed" not in row:
            row["failed"] = con.execute("SELECT failed FROM run_scores WHERE run_id = ?", [run_id]).fetchall()[0][0]
        return row


def summary(view: str, warehouse_path: str, report: RunReport) -> dict[str, Any]:
    """The run's row of `view` (eval_summary / harvest_summary) plus this invocation's timing."""
    row = run_summary(view, warehouse_path, report.run_id)
    rate = report.new_rollouts / report.seconds * 60 if report.seconds else 0.0
    return row | {"new_rollouts": report.new_rollouts, "resumed_skipped": report.skipped,
                  "seconds": round(report.seconds, 1), "conversations_per_min": round(rate, 2)}


def split_task_ids(warehouse_path: str, split: str) -> list[str]:
    """The ids of `split`'s tasks in the order runs take them (ToolWOZ must be built in the warehouse)."""
    with warehouse.opened(warehouse_path, read_only=True) as con:
        warehouse.require_toolwoz(con, warehouse_path)
        return [r[0] for r in con.execute(sql.load("queries/split_task_ids"), {"split": split}).fetchall()]
