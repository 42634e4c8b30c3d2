"""Build the ToolWOZ DuckDB tables (domains, tasks, hidden rows) from MultiWOZ.

The same function fills a warehouse (`factory toolwoz build`) or an in-memory database for rollouts.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

import sql
from toolwoz.clock import utc_now
from toolwoz.multiwoz import MultiWOZ
from toolwoz.query import RowQuery, index_rows, load_rows, run_many
from toolwoz.schemas import API_DEFS, DOMAINS
from toolwoz.tasks import Task, derive_tasks
from toolwoz.tools import constraints_for
from toolwoz.values import normalise, parse_time

SEARCH_KEYS = {d: API_DEFS[f"search_{d}"][0] for d in DOMAINS}
KEY_COLUMNS = {d: tuple(p for p in SEARCH_KEYS[d] if p not in ("leaveAt", "arriveBy")) for d in DOMAINS}
KEY_COLUMNS["train"] = ("trainID", *KEY_COLUMNS["train"])
TOOLWOZ_TABLES = ("restaurant", "hotel", "attraction", "train", "hidden_rows", "build_info")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def flat_row(domain: str, idx: int, raw: dict[str, Any]) -> dict[str, Any]:
    """One DB row in the flat, typed form of `sql/toolwoz/<domain>.sql`."""
    row: dict[str, Any] = {"row_idx": idx, "raw": json.dumps(raw)}
    for col in API_DEFS[f"search_{domain}"][1]:
        row[col] = _text(raw.get(col))
    if domain == "hotel":
        price = raw.get("price") or {}
        for kind in ("single", "double", "family"):
            row[kind] = _int(price.get(kind))
    if domain == "attraction":
        row["entrance"] = _text(raw.get("entrance fee"))
    if domain == "train":
        row["leave_min"] = parse_time(raw.get("leaveAt") or "")
        row["arrive_min"] = parse_time(raw.get("arriveBy") or "")
    elif isinstance(raw.get("location"), list) and len(raw["location"]) == 2:
        row["lat"], row["lon"] = (float(x) for x in raw["location"])
    for col in KEY_COLUMNS[domain]:
        value = raw.get(col)
        row[f"k_{col}"] = normalise(value) if isinstance(value, str) else None
    return row


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        arrow = pa.Table.from_pylist(rows)
        con.register("_toolwoz_rows", arrow)
        try:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _toolwoz_rows")  # table: code constant
        finally:
            con.unregister("_toolwoz_rows")


def _hidden_rows(con: duckdb.DuckDBPyConnection, tasks: list[Task]) -> list[dict[str, Any]]:
    """Rows a task's doomed `fail_info` search would find and that do not also meet its goal."""
    asks: list[tuple[str, str, RowQuery, RowQuery]] = []
    for task in tasks:
        for domain in task.domains:
            info = task.goal[domain].get("info") or {}
            fail = task.goal[domain].get("fail_info") or {}
            if not fail:
                continue
            overlay = {k: fail.get(k, info.get(k, "")) for k in SEARCH_KEYS[domain]}
            asks.append((task.task_id, domain, _fixed_query(domain, overlay), _fixed_query(domain, info)))
    answers = run_many(con, [q for a in asks for q in a[2:]])
    hidden = []
    for i, (task_id, domain, _, _) in enumerate(asks):
        fail_rows, goal_rows = set(answers[2 * i].row_ids), set(answers[2 * i + 1].row_ids)
        hidden += [{"task_id": task_id, "domain": domain, "row_idx": idx} for idx in sorted(fail_rows - goal_rows)]
    return hidden


def _fixed_query(domain: str, params: dict[str, Any]) -> RowQuery:
    return RowQuery(domain, constraints_for(domain, params), "fixed")


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the toolwoz schema's tables and make sure `tasks` exists."""
    con.execute("CREATE SCHEMA IF NOT EXISTS toolwoz")
    for table in TOOLWOZ_TABLES:
        con.execute(f"DROP TABLE IF EXISTS toolwoz.{table}")
        con.execute(sql.load(f"toolwoz/{table}"))
    con.execute(sql.load("toolwoz/tasks"))


def build(con: duckdb.DuckDBPyConnection, mw: MultiWOZ, code_version: str = "") -> list[Task]:
    """Fill domain tables, `tasks` and hidden rows in one transaction; idempotent. Returns the tasks."""
    with sql.transaction(con):
        create_schema(con)
        for domain in DOMAINS:
            _insert(con, f"toolwoz.{domain}", [flat_row(domain, i, r) for i, r in enumerate(mw.dbs[domain])])
        index_rows(con)  # the `fixed` search index (a temp table) of the rows just written
        tasks = derive_tasks(mw, lambda q: run_many(con, q), load_rows(con))
        con.execute("DELETE FROM tasks")
        _insert(con, "tasks", [t.to_row() for t in tasks])
        _insert(con, "toolwoz.hidden_rows", _hidden_rows(con, tasks))
        con.execute(
            "INSERT INTO toolwoz.build_info VALUES ($source, $n_dialogues, $n_tasks, $built_at, $version)",
            {"source": mw.source, "n_dialogues": len(mw.dialogues), "n_tasks": len(tasks),
             "built_at": utc_now(), "version": code_version},
        )
    return tasks


def in_memory(mw: MultiWOZ) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB holding every ToolWOZ table (for rollouts, tests and benchmarks)."""
    # One thread: on tables this small, scheduling a query across threads costs more than the scan.
    con = duckdb.connect(":memory:", config={"threads": 1})
    build(con, mw)
    return con


def export_arrow(con: duckdb.DuckDBPyConnection) -> dict[str, pa.Table]:
    """The ToolWOZ tables of a database as Arrow tables (what a Ray worker rebuilds its env from)."""
    return {table: con.sql(f"SELECT * FROM {table}").to_arrow_table()  # table: from our own list
            for table in ("tasks", *(f"toolwoz.{t}" for t in TOOLWOZ_TABLES))}


def from_arrow(arrow: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    """An in-memory database holding the tables of `export_arrow`."""
    mem = duckdb.connect(":memory:", config={"threads": 1})
    create_schema(mem)
    for table, rows in arrow.items():
        if table not in ("tasks", *(f"toolwoz.{t}" for t in TOOLWOZ_TABLES)):
            raise ValueError(f"not a ToolWOZ table: {table}")
        mem.register("_toolwoz_copy", rows)
        mem.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _toolwoz_copy")  # table: checked above
        mem.unregister("_toolwoz_copy")
    return mem


def copy_to_memory(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """An in-memory copy of a database's ToolWOZ tables, so rollouts never hold the warehouse file."""
    return from_arrow(export_arrow(con))
