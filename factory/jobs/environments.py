"""The environments a run can use (`--env`): their tables built into the warehouse on first use, loaded into memory
for a run, and the split a command takes when none is given. `search/` sees them only through
`search.environment.Environment`."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from factory.errors import UserError
from factory.store import warehouse
from factory.store.writer import Writer
from search.environment import Environment
from toolwoz import multiwoz, tables
from toolwoz.environment import ToolWOZ

ENVS = ("toolwoz", "retail", "airline")  # retail and airline: τ-bench's two domains
DEFAULT_SPLITS = {"toolwoz": {"eval": "test", "harvest": "val_harvest"},
                  "retail": {"eval": "test", "harvest": "train"},
                  "airline": {"eval": "test", "harvest": "test"}}


def check(name: str) -> str:
    if name not in ENVS:
        raise UserError(f"unknown environment {name!r}; choose one of {', '.join(ENVS)}")
    return name


def default_split(name: str, kind: str) -> str:
    """The split `factory eval` / `harvest` / `loop` use when `--split` is not given."""
    return DEFAULT_SPLITS[check(name)]["eval" if kind == "eval" else "harvest"]


def ensure(writer: Writer, name: str, console: Console, *, multiwoz_path: str | None = None,
           taubench_path: str | None = None) -> None:
    """Build the environment's tables into the warehouse on first use."""
    with writer.session() as con:
        if name == "toolwoz":
            if not warehouse.has_toolwoz(con):
                console.print(f"[dim]{writer.path} has no ToolWOZ tables yet: building them (once)[/dim]")
                tables.build(con, multiwoz.load(multiwoz_path))
            return
        from taubench import data

        if not data.has_tables(con, name):
            folder = data.locate(taubench_path)
            console.print(f"[dim]{writer.path} has no τ-bench {name} tables yet: building them from {folder} "
                          "(once)[/dim]")
            data.build(con, name, folder)


def load(writer: Writer, name: str) -> Environment:
    """The environment over an in-memory copy of its warehouse tables (a run never holds the warehouse file)."""
    with writer.session() as con:
        if name == "toolwoz":
            return ToolWOZ.from_connection(tables.copy_to_memory(con))
        from taubench.environment import TauBench

        return TauBench.from_warehouse(con, name)


def select_tasks(env: Environment, split: str, limit: int | None, task_ids: Any) -> list[Any]:
    """The split's tasks in run order, optionally only `task_ids`, first `limit`."""
    chosen = env.tasks_in(split)
    if task_ids:
        wanted = {env.task_key(t) for t in task_ids}
        if unknown := wanted - {t.task_id for t in chosen}:
            raise UserError(f"tasks not in split {split}: {', '.join(sorted(unknown)[:5])}")
        chosen = [t for t in chosen if t.task_id in wanted]
    if not chosen:
        empty_train = env.name == "toolwoz" and split == "train"
        hint = " (the train split is empty with this MultiWOZ copy; use --split val_harvest)" if empty_train else ""
        raise UserError(f"split {split} has no tasks{hint}")
    return chosen[:limit] if limit else chosen
