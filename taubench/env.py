"""τ-bench tool calls against a branch's state: parse the arguments, run the domain's tool, store its writes.

A domain module (`taubench/retail.py`, `taubench/airline.py`) exposes `TOOLS`: its tool functions in any order,
each named as τ-bench names the tool, taking `data: BranchDB` first and the tool's parameters as keywords, marked
with `state.tool("<τ-bench class>")`, and returning the observation text exactly as τ-bench's `invoke` does.
A bad call is data, never a crash: τ-bench's observation text (`Unknown action NAME`, `Error: ...`) with nothing
written.
"""

from __future__ import annotations

import importlib
import inspect
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import duckdb

from taubench import data as tbdata
from taubench import state
from taubench.data import Action, TauTask
from taubench.errors import UnknownTask
from taubench.state import Branch, BranchDB

TERMINATE_TOOLS = frozenset({"transfer_to_human_agents"})
MODULES = {"retail": "taubench.retail", "airline": "taubench.airline"}


def registry(domain: str) -> dict[str, Callable[..., str]]:
    """name -> tool function of a domain (empty when its module is not there yet)."""
    try:
        module = importlib.import_module(MODULES[domain])
    except ModuleNotFoundError as e:
        if e.name != MODULES[domain]:
            raise
        return {}
    return {fn.__name__: fn for fn in module.TOOLS}


@dataclass(frozen=True)
class TauRequest:
    """One call for `TauEnv.call_many`."""

    name: str
    arguments: Any  # a dict, or JSON text of one
    branch: Branch
    pos: int | None = None


@dataclass
class TauCall:
    """What one call did: the observation the agent reads and what the warehouse records."""

    name: str
    arguments: Any
    ok: bool
    content: str
    kwargs: dict[str, Any] | None = None  # the parsed arguments (None when they did not parse)
    error_kind: str | None = None  # 'tool_error' | 'unknown_tool' | 'bad_arguments'
    error: str | None = None
    writes: list[dict[str, Any]] = field(default_factory=list)  # state_changes rows
    ends_conversation: bool = False
    latency_us: int = 0

    @property
    def action(self) -> Action | None:
        """The action taken (name + parsed kwargs), as τ-bench and JOSH's reward compare it."""
        return None if self.kwargs is None else Action(self.name, self.kwargs)

    def record(self) -> dict[str, Any]:
        """Flat record for the warehouse's `tool_calls` table."""
        args = self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments, default=str)
        return {"name": self.name, "arguments": args, "semantics": None, "ok": self.ok,
                "error_kind": self.error_kind, "error": self.error, "result": _as_json(self.content) if self.ok
                else None, "n_rows": len(self.writes), "latency_us": self.latency_us}


def _as_json(text: str) -> str:
    """The observation as JSON text: itself when it is a JSON object or list, else a JSON string."""
    if text[:1] in "[{":
        try:
            json.loads(text)
            return text
        except ValueError:
            pass
    return json.dumps(text)


def parse_arguments(arguments: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(kwargs, None) or (None, error observation) for a call's arguments: a dict or JSON text of one."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as e:
            return None, f"Error: arguments are not valid JSON: {e}"
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None, f"Error: arguments must be a JSON object, not {type(arguments).__name__}"
    return arguments, None


class TauEnv:
    """Runs one τ-bench domain's tool calls against the tables of `con`, each on its branch's state."""

    def __init__(self, con: duckdb.DuckDBPyConnection, domain: str, tasks: dict[str, TauTask], wiki: str,
                 tool_schemas: list[dict[str, Any]], rules: list[str]):
        self.con, self.domain, self.tasks = con, domain, tasks
        self.wiki, self.tool_schemas, self.rules = wiki, tool_schemas, rules
        self.tools = registry(domain)
        self._signatures = {name: inspect.signature(fn) for name, fn in self.tools.items()}
        self._next_pos: dict[tuple[str, int], int] = {}  # (rollout, node) -> next free write position
        self._writers: dict[str, set[int]] = {}  # rollout -> its nodes that wrote (one env writes a rollout)
        self.gold: dict[str, Branch] = {}  # task id -> the branch holding its gold actions' database (rewards)

    @classmethod
    def open(cls, con: duckdb.DuckDBPyConnection, domain: str, folder: str | None = None) -> "TauEnv":
        """An env over a connection holding the domain's tables (built from the τ-bench folder if missing)."""
        if not tbdata.has_tables(con, domain):
            tbdata.build(con, domain, folder)
        else:
            state.attach(con)
        wiki, schemas, rules = tbdata.domain_info(con, domain)
        return cls(con, domain, tbdata.tasks_from_table(con, domain), wiki, schemas, rules)

    def task(self, task_id: str) -> TauTask:
        if task_id not in self.tasks:
            raise UnknownTask(f"unknown τ-bench task {task_id!r}: ids look like {self.domain}/test/0")
        return self.tasks[task_id]

    def call(self, name: str, arguments: Any, *, branch: Branch, pos: int | None = None) -> TauCall:
        """Run one tool call on a branch; its writes are stored at (rollout, node, pos: next free if None)."""
        start = time.perf_counter()
        result = self._run(name, arguments, branch, pos)
        result.latency_us = int((time.perf_counter() - start) * 1e6)
        return result

    def call_many(self, requests: Sequence[TauRequest]) -> list[TauCall]:
        """Run calls in order (a later call of a branch sees an earlier one's writes)."""
        return [self.call(r.name, r.arguments, branch=r.branch, pos=r.pos) for r in requests]

    def _run(self, name: str, arguments: Any, branch: Branch, pos: int | None) -> TauCall:
        ends = name in TERMINATE_TOOLS
        kwargs, problem = parse_arguments(arguments)
        if name not in self.tools:
            text = f"Unknown action {name}"
            return TauCall(name, arguments, False, text, kwargs, "unknown_tool", text)
        if kwargs is None:
            return TauCall(name, arguments, False, problem, None, "bad_arguments", problem, ends_conversation=ends)
        db = BranchDB(self.con, self.domain, branch, overlay=not self._writer_nodes(branch).isdisjoint(branch.path))
        try:
            self._signatures[name].bind(db, **kwargs)
        except TypeError:
            kind = "bad_arguments"
        else:
            kind = "tool_error"
        try:
            content = self.tools[name](db, **kwargs)  # a bad binding raises τ-bench's own TypeError text
        except Exception as e:
            text = f"Error: {e}"
            return TauCall(name, arguments, False, text, kwargs, kind, text, ends_conversation=ends)
        if not isinstance(content, str):
            content = str(content)
        writes = db.changes()
        rows = []
        if writes:
            rows = state.record(self.con, branch, self._position(branch, pos), writes)
            self._writer_nodes(branch).add(branch.node_id)
        failed = content.startswith("Error:")  # τ-bench reports a refusal as a returned "Error: ..." text
        return TauCall(name, arguments, not failed, content, kwargs, "tool_error" if failed else None,
                       content if failed else None, rows, ends)

    def _writer_nodes(self, branch: Branch) -> set[int]:
        """The rollout's nodes that have written (read once per rollout, then kept as this env writes): a path
        with none of them reads the base rows directly."""
        if branch.rollout_id not in self._writers:
            rows = state.run_query(self.con, "writer_nodes", {"rollout_id": branch.rollout_id})
            self._writers[branch.rollout_id] = {r[0] for r in rows}
        return self._writers[branch.rollout_id]

    def _position(self, branch: Branch, pos: int | None) -> int:
        """The given position, else the one after the node's last writing call; remembered per node."""
        node = (branch.rollout_id, branch.node_id)
        if pos is None:
            if node in self._next_pos:
                pos = self._next_pos[node]
            else:
                pos = state.next_pos(self.con, branch) if branch.node_id in self._writer_nodes(branch) else 0
        self._next_pos[node] = max(self._next_pos.get(node, 0), pos + 1)
        return pos

    def read(self, branch: Branch, tbl: str, key: str) -> Any:
        """One row as a branch sees it, or None."""
        return state.read(self.con, self.domain, branch, tbl, key)

    def state_changes(self, rollout_id: str) -> list[dict[str, Any]]:
        """Every write of a rollout, for the warehouse's `state_changes`."""
        return state.state_changes(self.con, rollout_id)

    def forget(self, rollout_id: str) -> None:
        """Drop a finished rollout's writes (after the warehouse has them)."""
        state.forget(self.con, rollout_id)
        self._next_pos = {k: v for k, v in self._next_pos.items() if k[0] != rollout_id}
        self._writers.pop(rollout_id, None)
