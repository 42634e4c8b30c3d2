"""The 8 ToolWOZ tools: validate -> normalise -> one bound DuckDB query -> JSON for the agent + a record.

A bad call is data, not a crash: it returns a `ToolCall` with `ok=False` and an `ErrorKind`.
Two semantics (see ../shared/spec/toolwoz.md): `fixed` (default) and `parity` (the reference exactly).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping, Sequence

import duckdb

from toolwoz.errors import UnknownTask
from toolwoz.query import RETURN_COLUMNS, RowQuery, RowResult, load_hidden, load_rows, run_many, run_one
from toolwoz.schemas import API_DEFS, DAYS, DOMAINS, TIME_PARAMS, TOOL_NAMES, UID_KEY, domain_of
from toolwoz.tasks import Task
from toolwoz.values import (canonical, clean, contains_clean, is_empty, is_subset, is_valid_text, parse_time,
                            reference_normalise, storable_text, to_json)

SEMANTICS = ("fixed", "parity")
DEFAULT_K = 3  # rows a `fixed` search serves
# What a `fixed` search shows the agent: `full` = up to DEFAULT_K rows with every return field of the API;
# `compact` = one row with only what it takes to present, narrow down and book (a 2k-token context: the 396
# val_boot teacher conversations shrink from 1313 to 843 tokens on average, tool results from 46% to 18%).
RESULTS = ("full", "compact")
COMPACT_FIELDS = {"restaurant": ("name", "food", "area", "pricerange"),
                  "hotel": ("name", "type", "area", "pricerange", "stars", "parking", "internet"),
                  "attraction": ("name", "type", "area", "entrance"),
                  "train": ("trainID", "departure", "destination", "day", "leaveAt", "arriveBy", "price")}
MAX_VALUE_LENGTH = 200
# The reference's error strings (§3.2), used verbatim in `parity`.
PARITY_INVALID = ("ERROR: INVALID API CALL! YOUR REQUEST CONTAINED PARAMETERS THAT ARE NOT ALLOWED FOR THIS API "
                  "or AN IMPROPER API NAME!")
PARITY_LISTS = "ERROR: INVALID API CALL! LISTS AND DICTS ARE NOT ALLOWED AS VALUES!"


class ErrorKind(StrEnum):
    """The closed set of reasons a tool call fails."""

    UNKNOWN_TOOL = "unknown_tool"
    BAD_ARGUMENTS = "bad_arguments"  # arguments are not a JSON object
    UNKNOWN_ARGUMENT = "unknown_argument"
    BAD_VALUE = "bad_value"
    MISSING_ARGUMENT = "missing_argument"
    UNKNOWN_ENTITY = "unknown_entity"
    NO_AVAILABILITY = "no_availability"
    NOT_BOOKABLE = "not_bookable"
    MALFORMED_CALL = "malformed_call"  # the model's output could not be parsed into a call at all
    # BAD_VALUE also covers text that is not valid Unicode (a lone surrogate such as "\ud800", or NUL), numbers
    # written in other digit classes ("²"), and values longer than MAX_VALUE_LENGTH.


@dataclass(frozen=True)
class ToolRequest:
    name: str
    arguments: Any  # a dict, or JSON text of one, as the agent produced it
    task_id: str | None = None
    semantics: str = "fixed"
    results: str = "full"  # `fixed` searches: RESULTS


@dataclass
class ToolCall:
    """What one call did: the value the agent sees (`result`) and what the warehouse records."""

    name: str
    arguments: Any
    semantics: str
    task_id: str | None
    ok: bool
    result: Any
    error_kind: ErrorKind | None = None
    error: str | None = None
    normalised: dict[str, Any] = field(default_factory=dict)  # validated arguments, canonical values
    rows: list[dict[str, Any]] = field(default_factory=list)  # DB rows behind the result (flat form)
    n_rows: int = 0  # rows matched (searches, before the `k` cap) or entity rows found (bookings)
    latency_us: int = 0

    @property
    def content(self) -> str:
        """The tool message text the agent reads."""
        return self.result if isinstance(self.result, str) else json.dumps(self.result)

    def record(self) -> dict[str, Any]:
        """Flat record for the warehouse's `tool_calls` table; always storable (`values.to_json`)."""
        return {"name": storable_text(str(self.name)), "arguments": to_json(self.arguments),
                "semantics": self.semantics, "ok": self.ok, "error_kind": self.error_kind and str(self.error_kind),
                "error": self.error and storable_text(self.error), "result": to_json(self.result),
                "n_rows": self.n_rows, "latency_us": self.latency_us}


def constraints_for(domain: str, params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """`fixed` query constraints from (goal or call) parameters: empties dropped, times as minutes."""
    out = []
    for key, value in params.items():
        if not isinstance(value, str) or is_empty(value):
            continue
        value = canonical(key, value)
        out.append((key, parse_time(value) if key in TIME_PARAMS else value))
    return tuple(out)


def row_meets(row: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Does a served row meet `fixed` constraints? (Used by rewards; mirrors the SQL of `query.py`.)"""
    for key, value in constraints_for("", params):
        if key == "leaveAt":
            ok = (parse_time(row.get("leaveAt") or "") or -1) >= value
        elif key == "arriveBy":
            ok = (t := parse_time(row.get("arriveBy") or "")) is not None and t <= value
        else:
            ok = row.get(key) is not None and canonical(key, str(row[key])) == value
        if not ok:
            return False
    return True


def _coerce(value: Any) -> str | None:
    """Agent values: text as is, whole numbers as text (models often emit 4 for "4"), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        try:
            return str(int(value))
        except ValueError:  # more digits than Python prints
            return None
    return None


@dataclass
class _Pending:
    """A validated call waiting for its rows."""

    call: ToolCall
    query: RowQuery | None = None
    finish: str = "search"  # "search" | "book" | "parity_search"
    results: str = "full"  # what a `fixed` search shows: RESULTS


class ToolEnv:
    """Runs ToolWOZ tool calls against the DuckDB tables of `con` for the given tasks."""

    def __init__(self, con: duckdb.DuckDBPyConnection, tasks: Mapping[str, Task], k: int = DEFAULT_K):
        self.con, self.tasks, self.k = con, tasks, k
        self.rows = load_rows(con)  # immutable payloads; queries return row ids
        self._raw: dict[tuple[str, int], dict[str, Any]] = {}  # parsed `raw` JSON of rows parity search read
        self.hidden = load_hidden(con)

    @classmethod
    def from_connection(cls, con: duckdb.DuckDBPyConnection, k: int = DEFAULT_K) -> "ToolEnv":
        """An env over a database that holds the ToolWOZ tables (a warehouse or `tables.in_memory`)."""
        cur = con.execute("SELECT task_id, split, splits, domains, goal, ground_truth, message FROM tasks")
        names = [d[0] for d in cur.description]
        return cls(con, {r[0]: Task.from_row(dict(zip(names, r))) for r in cur.fetchall()}, k)

    def call(self, name: str, arguments: Any, *, task_id: str | None = None, semantics: str = "fixed",
             results: str = "full") -> ToolCall:
        """Run one tool call with one query."""
        start = time.perf_counter()
        pending = self._prepare(ToolRequest(name, arguments, task_id, semantics, results))
        if pending.query is not None:
            return self._finish(pending, run_one(self.con, pending.query), start, 1)
        return self._done(pending.call, start, 1)

    def call_many(self, requests: Sequence[ToolRequest]) -> list[ToolCall]:
        """Run many calls; all their row lookups go as one query per request shape."""
        start = time.perf_counter()
        prepared = [self._prepare(r) for r in requests]
        waiting = [p for p in prepared if p.query is not None]
        answers = dict(zip(map(id, waiting), run_many(self.con, [p.query for p in waiting])))  # type: ignore[misc]
        n = max(len(requests), 1)
        return [self._finish(p, answers[id(p)], start, n) if p.query is not None else self._done(p.call, start, n)
                for p in prepared]

    # -- validation ---------------------------------------------------------------------------------------

    def _task(self, task_id: str | None) -> Task | None:
        if task_id is None:
            return None
        if task_id not in self.tasks:
            raise UnknownTask(f"unknown task {task_id!r}; list tasks with `factory toolwoz info`")
        return self.tasks[task_id]

    def _prepare(self, req: ToolRequest) -> _Pending:
        if req.semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, not {req.semantics!r}")
        if req.results not in RESULTS:
            raise ValueError(f"results must be one of {RESULTS}, not {req.results!r}")
        task = self._task(req.task_id)
        call = ToolCall(req.name, req.arguments, req.semantics, req.task_id, ok=False, result=None)
        args = req.arguments
        if isinstance(args, str):  # the wire format: arguments as JSON text; keep the parsed form when it is one
            try:
                args = json.loads(args) if args.strip() else {}
                call.arguments = args
            except (ValueError, RecursionError):  # bad JSON, a huge integer, or absurd nesting
                pass
        if req.semantics == "parity":
            return self._prepare_parity(call, args, task)
        if req.name not in TOOL_NAMES:
            return self._fail(call, ErrorKind.UNKNOWN_TOOL,
                              f"there is no tool {str(req.name)[:60]!r}; use one of {', '.join(TOOL_NAMES)}")
        allowed = API_DEFS[req.name][0]
        if not isinstance(args, dict):
            return self._fail(call, ErrorKind.BAD_ARGUMENTS, "arguments must be a JSON object of strings")
        if unknown := [k for k in args if k not in allowed]:
            return self._fail(call, ErrorKind.UNKNOWN_ARGUMENT,
                              f"{req.name} has no argument {str(unknown[0])[:60]!r}; "
                              f"its arguments are {', '.join(allowed) or 'none'}")
        normalised: dict[str, Any] = {}
        for key, raw in args.items():
            value = _coerce(raw) if raw is not None else ""
            if value is None:
                return self._fail(call, ErrorKind.BAD_VALUE, f"{key} must be a string, not {type(raw).__name__}")
            if len(value) > MAX_VALUE_LENGTH:
                return self._fail(call, ErrorKind.BAD_VALUE, f"{key} is longer than {MAX_VALUE_LENGTH} characters")
            if not is_valid_text(value):
                return self._fail(call, ErrorKind.BAD_VALUE, f"{key} holds characters that are not text")
            if is_empty(value):
                continue
            value = canonical(key, value)  # times become HH:MM
            if key in TIME_PARAMS and parse_time(value) is None:
                return self._fail(call, ErrorKind.BAD_VALUE, f"{key} must be a time like 09:30, not {value[:30]!r}")
            normalised[key] = value
        call.normalised = normalised
        domain = domain_of(req.name)
        if req.name.startswith("search_"):
            hidden = self.hidden.get((req.task_id, domain), ()) if req.task_id else ()
            constraints = tuple((k, parse_time(v) if k in TIME_PARAMS else v) for k, v in normalised.items())
            k = self.k if req.results == "full" else 1
            return _Pending(call, RowQuery(domain, constraints, "fixed", hidden, k), results=req.results)
        return self._prepare_book(call, domain, normalised)

    def _prepare_book(self, call: ToolCall, domain: str, args: dict[str, str]) -> _Pending:
        if domain == "attraction":
            return self._fail(call, ErrorKind.NOT_BOOKABLE, "attractions need no booking; give the details instead")
        if missing := [p for p in API_DEFS[call.name][0] if p not in args]:
            return self._fail(call, ErrorKind.MISSING_ARGUMENT,
                              f"{call.name} needs {', '.join(missing)}; ask the customer")
        for key in ("people", "stay"):
            if key in args and not (args[key].isascii() and args[key].isdigit() and 0 < int(args[key]) <= 99):
                return self._fail(call, ErrorKind.BAD_VALUE, f"{key} must be a whole number like 2")
        if "day" in args and args["day"] not in DAYS:
            return self._fail(call, ErrorKind.BAD_VALUE, f"day must be a day of the week, not {args['day'][:30]!r}")
        uid = UID_KEY[domain]
        hidden = self.hidden.get((call.task_id, domain), ()) if call.task_id else ()
        return _Pending(call, RowQuery(domain, ((uid, args[uid]),), "fixed", hidden), "book")

    def _prepare_parity(self, call: ToolCall, args: Any, task: Task | None) -> _Pending:
        if call.name not in API_DEFS:
            return self._fail(call, ErrorKind.UNKNOWN_TOOL, PARITY_INVALID)
        if not isinstance(args, dict):
            return self._fail(call, ErrorKind.BAD_ARGUMENTS, PARITY_INVALID)
        if any(k not in API_DEFS[call.name][0] for k in args):
            return self._fail(call, ErrorKind.UNKNOWN_ARGUMENT, PARITY_INVALID)
        if any(isinstance(v, (list, dict)) for v in args.values()):
            return self._fail(call, ErrorKind.BAD_VALUE, PARITY_LISTS)
        call.normalised = {k: reference_normalise(v) for k, v in args.items()}
        domain = domain_of(call.name)
        if domain not in DOMAINS:  # taxi / hospital: defined APIs without a ToolWOZ table
            call.ok = True
            call.result = [] if call.name.startswith("search_") else {"success": False, "return": {}}
            return _Pending(call)
        if call.name.startswith("book_"):
            call.ok = True
            goal = (task.ground_truth.get(domain, {}).get("success", {}).get(call.name) if task else None)
            booked = goal is not None and is_subset(goal["parameters"], call.normalised)
            call.result = {"success": True, "return": goal["returns"]} if booked else {"success": False, "return": {}}
            return _Pending(call)
        # Lone surrogates cannot be bound; U+FFFD in their place matches no row either, as in the reference.
        constraints = tuple((k, storable_text(v)) for k, v in call.normalised.items()
                            if isinstance(v, str) and not is_empty(v))
        return _Pending(call, RowQuery(domain, constraints, "parity"), "parity_search")

    @staticmethod
    def _fail(call: ToolCall, kind: ErrorKind, message: str) -> _Pending:
        call.ok, call.error_kind, call.error = False, kind, message
        call.result = message if call.semantics == "parity" else f"Error: {message}"
        return _Pending(call)

    # -- results ------------------------------------------------------------------------------------------

    def _finish(self, pending: _Pending, answer: RowResult, start: float, batch: int) -> ToolCall:
        call = pending.call
        call.n_rows = answer.n_matches
        domain = domain_of(call.name)
        matched = [self.rows[domain][i] for i in answer.row_ids]
        call.rows = [_without_raw(r) for r in matched]
        if pending.finish == "search":
            call.ok = True
            if pending.results == "compact":
                call.result = [{c: r[c] for c in COMPACT_FIELDS[domain] if not is_empty(r[c]) and r[c] != "?"}
                               for r in call.rows]
            else:
                call.result = [{c: r[c] for c in RETURN_COLUMNS[domain]} for r in call.rows]
        elif pending.finish == "parity_search":
            call.ok = True
            raw = [self._parsed_raw(domain, i) for i in answer.row_ids]
            served = _serve_parity(self._task(call.task_id), domain, call.normalised, matched, raw)
            call.result = [json.loads(r["raw"]) for r in served]
        else:
            self._finish_book(call, domain)
        return self._done(call, start, batch)

    def _parsed_raw(self, domain: str, row_id: int) -> dict[str, Any]:
        """A row's `raw` JSON, parsed once (read only: results are parsed afresh)."""
        key = (domain, row_id)
        if key not in self._raw:
            self._raw[key] = json.loads(self.rows[domain][row_id]["raw"])
        return self._raw[key]

    def _finish_book(self, call: ToolCall, domain: str) -> None:
        uid = UID_KEY[domain]
        if not call.rows:
            self._fail(call, ErrorKind.UNKNOWN_ENTITY,
                       f"no {domain} with {uid} {call.normalised[uid]!r}; search first and use a result's {uid}")
            return
        slots = {k: v for k, v in call.normalised.items() if k != uid}
        task = self._task(call.task_id)
        doomed = task and task.ground_truth.get(domain, {}).get("failure", {}).get(call.name)
        if doomed:
            fail_slots = {k: canonical(k, v) for k, v in doomed["parameters"].items() if k != uid and not is_empty(v)}
            if fail_slots and fail_slots == {k: slots.get(k) for k in fail_slots}:
                self._fail(call, ErrorKind.NO_AVAILABILITY,
                           f"no availability for {', '.join(f'{k} {v}' for k, v in slots.items())}; "
                           "ask the customer for another option")
                return
        entity = call.rows[0][uid]
        digest = hashlib.sha1(json.dumps([call.task_id, domain, entity, sorted(slots.items())]).encode())
        call.ok = True
        call.result = {"success": True, uid: entity, "reference": digest.hexdigest()[:8].upper()}

    @staticmethod
    def _done(call: ToolCall, start: float, batch: int) -> ToolCall:
        call.latency_us = int((time.perf_counter() - start) * 1e6 / batch)
        return call


def _without_raw(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of a DB row without its `raw` JSON (a C-level copy: cheaper than filtering key by key)."""
    flat = dict(row)
    del flat["raw"]
    return flat


def _serve_parity(task: Task | None, domain: str, args: dict[str, Any], rows: list[dict[str, Any]],
                  raw: list[dict[str, Any]]) -> list[dict]:
    """Reference §3.5: serve at most one row, chosen by the task's goal (`raw`: each row's parsed raw JSON)."""
    if not rows:
        return []
    truth = task.ground_truth.get(domain) if task else None
    search_goal = truth and truth["success"].get(f"search_{domain}")
    if not search_goal:
        return rows[:1]
    goal_params = search_goal["parameters"]
    book_goal = truth["success"].get(f"book_{domain}")
    uid = UID_KEY[domain]
    goal = clean(goal_params)
    correct = wrong = None
    for row, r in zip(raw, rows):
        if book_goal and row.get(uid) == book_goal["unique_id"]:
            correct = r
        if not contains_clean(row, goal):
            wrong = r
    if is_subset(goal_params, args):
        if book_goal:
            return [correct] if correct else [wrong] if wrong else []
        return rows[:1]
    if is_subset(args, goal_params):
        if wrong:
            return [wrong]
        if book_goal and correct:
            return [correct]
    return rows[:1]
