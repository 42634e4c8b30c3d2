"""Row lookups over the ToolWOZ domain tables, as sqlglot-built queries with bound parameters.

Every tool call becomes a `RowQuery` (domain + normalised constraints). `run_one` sends one query;
`run_many` groups queries with the same shape and sends each group as ONE query that joins the requests
(an Arrow table) with the domain table. The rendered SQL is cached per shape; values are always bound.
Queries return matching `row_idx` values and the match count; the caller maps ids to row payloads
(the tables are immutable, so turning the same strings into Python objects on every call is waste).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Sequence

import duckdb
import pyarrow as pa
from sqlglot import exp

from toolwoz.schemas import API_DEFS

# Columns served per domain (the search API's return fields; `fixed` semantics).
RETURN_COLUMNS = {d: API_DEFS[f"search_{d}"][1] for d in ("restaurant", "hotel", "attraction", "train")}
# `fixed` time comparisons: the user's earliest departure / latest arrival, inclusive.
FIXED_TIME = {"leaveAt": ("leave_min", exp.GTE), "arriveBy": ("arrive_min", exp.LTE)}
# `parity` time comparisons (reference §3.3): strict, on the HH:MM text.
PARITY_TIME = {"leaveAt": ("leaveAt", exp.GT), "arriveBy": ("arriveBy", exp.LT)}


@dataclass(frozen=True)
class RowQuery:
    """Rows of `domain` meeting every constraint, minus the `hidden` row ids (a task's `fail_info` rows).

    `constraints` values are already normalised: `fixed` times are minutes (int), other values text.
    """

    domain: str
    constraints: tuple[tuple[str, Any], ...]
    semantics: str = "fixed"
    hidden: tuple[int, ...] = ()
    limit: int | None = None

    @property
    def shape(self) -> tuple:
        keys = tuple(k for k, _ in self.constraints)
        return (self.domain, keys, self.semantics, self.limit, bool(self.hidden))


def _condition(semantics: str, table: str, param: str, value: exp.Expression) -> exp.Expression:
    time_rules = FIXED_TIME if semantics == "fixed" else PARITY_TIME
    if param in time_rules:
        column, op = time_rules[param]
        return op(this=exp.column(column, table=table), expression=value)
    column = f"k_{param}" if semantics == "fixed" else param
    return exp.EQ(this=exp.column(column, table=table), expression=value)


def _not_hidden(hidden: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.func("list_contains", hidden, exp.column("row_idx", table="t")))


def _ids(limit: int | None) -> exp.Expression:
    """The first `limit` matching row ids in DB order (all of them when `limit` is None)."""
    row_idx = exp.column("row_idx", table="t")
    if limit is None:
        return exp.ArrayAgg(this=exp.Order(this=row_idx, expressions=[exp.Ordered(this=row_idx.copy())]))
    return exp.Anonymous(this="min", expressions=[row_idx, exp.Literal.number(int(limit))])


@cache
def single_sql(shape: tuple) -> str:
    """SQL for one request of this shape; parameters are `$p0..$pn` and `$hidden`."""
    domain, params, semantics, limit, with_hidden = shape
    q = exp.select(_ids(limit).as_("ids"), "count(*) AS n_matches").from_(f"toolwoz.{domain} AS t")
    for i, param in enumerate(params):
        q = q.where(_condition(semantics, "t", param, exp.Placeholder(this=f"p{i}")))
    if with_hidden:
        q = q.where(_not_hidden(exp.Placeholder(this="hidden")))
    return q.sql(dialect="duckdb")


_SHAPE_IDS: dict[tuple, int] = {}


def _shape_id(shape: tuple) -> int:
    """A process-wide number per request shape, so each shape's SQL branch renders once."""
    return _SHAPE_IDS.setdefault(shape, len(_SHAPE_IDS))


@cache
def batch_branch_sql(shape: tuple, requests_table: str) -> str:
    """SQL answering the requests of one shape in `requests_table` (req_id, shape_id, p_<param>, hidden).

    Requests that match nothing have no output row.
    """
    domain, params, semantics, limit, with_hidden = shape
    on: exp.Expression = exp.true()
    for param in params:
        on = exp.and_(on, _condition(semantics, "t", param, exp.column(f"p_{param}", table="r")))
    q = (
        exp.select("r.req_id", _ids(limit).as_("ids"), "count(*) AS n_matches")
        .from_(f"{requests_table} AS r")
        .join(f"toolwoz.{domain} AS t", on=on)
        .where(exp.column("shape_id", table="r").eq(exp.Literal.number(_shape_id(shape))))
        .group_by("r.req_id")
    )
    if with_hidden:
        q = q.where(_not_hidden(exp.column("hidden", table="r")))
    return q.sql(dialect="duckdb")


@dataclass
class RowResult:
    row_ids: list[int]  # served rows in DB order (at most `limit`)
    n_matches: int  # all matching rows, before the limit


def run_one(con: duckdb.DuckDBPyConnection, query: RowQuery) -> RowResult:
    """One parameterised query for one request."""
    params: dict[str, Any] = {f"p{i}": v for i, (_, v) in enumerate(query.constraints)}
    if query.hidden:
        params["hidden"] = list(query.hidden)
    ((ids, n_matches),) = con.execute(single_sql(query.shape), params).fetchall()
    return RowResult(sorted(ids) if n_matches else [], n_matches)


def run_many(con: duckdb.DuckDBPyConnection, queries: Sequence[RowQuery]) -> list[RowResult]:
    """Answer many requests in one statement per semantics: the requests go in as one Arrow table and
    every request shape present is one UNION ALL branch joining it with its domain table."""
    results = [RowResult([], 0) for _ in queries]
    for semantics in ("fixed", "parity"):
        idxs = [i for i, q in enumerate(queries) if q.semantics == semantics]
        if not idxs:
            continue
        params = sorted({k for i in idxs for k, _ in queries[i].constraints})
        values = [dict(queries[i].constraints) for i in idxs]
        columns: dict[str, Any] = {
            "req_id": pa.array(idxs, pa.int32()),
            "shape_id": pa.array([_shape_id(queries[i].shape) for i in idxs], pa.int32()),
            "hidden": pa.array([list(queries[i].hidden) for i in idxs], pa.list_(pa.int32())),
        }
        for param in params:
            kind = pa.int32() if semantics == "fixed" and param in FIXED_TIME else pa.string()
            columns[f"p_{param}"] = pa.array([v.get(param) for v in values], kind)
        name = f"_tool_requests_{semantics}"
        shapes = dict.fromkeys(queries[i].shape for i in idxs)
        statement = " UNION ALL ".join(batch_branch_sql(shape, name) for shape in shapes)
        con.register(name, pa.table(columns))
        try:
            records = con.execute(statement).fetchall()
        finally:
            con.unregister(name)
        for req_id, ids, n_matches in records:
            results[req_id] = RowResult(sorted(ids), n_matches)
    return results


def load_rows(con: duckdb.DuckDBPyConnection) -> dict[str, list[dict[str, Any]]]:
    """Every domain table's rows (row_idx, return fields, raw), indexed by row_idx."""
    out = {}
    for domain, cols in RETURN_COLUMNS.items():
        cur = con.execute(f"SELECT row_idx, {', '.join(cols)}, raw FROM toolwoz.{domain} ORDER BY row_idx")
        names = [d[0] for d in cur.description]
        out[domain] = [dict(zip(names, r)) for r in cur.fetchall()]
    return out


def load_hidden(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], tuple[int, ...]]:
    """(task_id, domain) -> row ids `fixed` hides from that task (toolwoz.hidden_rows)."""
    out: dict[tuple[str, str], list[int]] = {}
    for task_id, domain, row_idx in con.execute(
        "SELECT task_id, domain, row_idx FROM toolwoz.hidden_rows ORDER BY ALL"
    ).fetchall():
        out.setdefault((task_id, domain), []).append(row_idx)
    return {k: tuple(v) for k, v in out.items()}
