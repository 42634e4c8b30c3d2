"""Row lookups over the ToolWOZ domain tables, as DuckDB queries with bound parameters.

Every tool call becomes a `RowQuery` (domain + normalised constraints). `run_one` sends one query. `run_many`
answers all the `fixed` requests of a batch with ONE statement whose plan does not depend on the batch's mix
(`sql/queries/toolwoz_key_rows.sql`, over the index built by `index_rows`); the rare `parity` requests go as one
UNION ALL branch per request shape (SQL cached per shape). Values are always bound, never pasted into SQL.
Queries return matching `row_idx` values and the match count; the caller maps ids to row payloads
(the tables are immutable, so turning the same strings into Python objects on every call is waste).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

import sql
from toolwoz.schemas import API_DEFS, UID_KEY

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


# -- the `fixed` index ------------------------------------------------------------------------------------
#
# A `fixed` request is equality constraints on k_* columns plus, for trains, time bounds. A per-(param, value)
# inverted index would join every constraint with its postings and count hits per row, but day / departure /
# destination each match hundreds of trains: a batch of 64 would join ~28k postings to keep a few hundred rows.
# So the index is keyed by every SUBSET of a row's searchable values (2^k subsets per row, k <= 7; 7,152 keys):
# a request's equality constraints are exactly one key, and that key's row list is exactly its matches (no
# constraint = the empty subset = every row of the domain). A batch, whatever its mix of domains and parameters,
# is then ONE lookup of its keys (by MD5, the text compared here too); each request's time bounds, hidden rows,
# limit and count are applied to its key's rows here, as the SQL of `single_sql` does. Indexed: subsets of the
# search parameters, and the uid alone (what book_* asks); any other `fixed` request (no tool makes one) goes
# the per-shape way, like `parity`.

SEARCHABLE = {d: frozenset(API_DEFS[f"search_{d}"][0]) - FIXED_TIME.keys() for d in RETURN_COLUMNS}
_INDEXED: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()  # connections holding the index


def index_key(domain: str, pairs: Iterable[tuple[str, Any]]) -> str:
    """The toolwoz_keys key of equality constraints: their Python repr (unambiguous), pairs sorted by param."""
    return repr((domain, *sorted(pairs)))


def _indexed(q: RowQuery) -> bool:
    if q.semantics != "fixed" or q.domain not in SEARCHABLE:
        return False
    params = {k for k, _ in q.constraints} - FIXED_TIME.keys()
    return params <= SEARCHABLE[q.domain] or params == {UID_KEY[q.domain]}


def index_rows(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)derive the temp table toolwoz_keys (`sql/toolwoz/toolwoz_keys.sql`) from the domain tables: once
    per connection (`tables.build` after writing them, else the first `run_many`); ~0.1 s."""
    postings: dict[str, tuple[list[int], list[int | None], list[int | None]]] = {}
    for domain, searchable in SEARCHABLE.items():
        uid, params = UID_KEY[domain], sorted(searchable)
        cur = con.execute(f"SELECT * FROM toolwoz.{domain} ORDER BY row_idx")  # domain: a code constant
        names = [d[0] for d in cur.description]
        for values in cur.fetchall():
            row = dict(zip(names, values))
            pairs = [(p, row[f"k_{p}"]) for p in params if row.get(f"k_{p}") is not None]
            subsets = [s for n in range(len(pairs) + 1) for s in itertools.combinations(pairs, n)]
            if uid not in searchable and row.get(f"k_{uid}") is not None:
                subsets.append(((uid, row[f"k_{uid}"]),))
            for subset in subsets:
                entry = postings.setdefault(index_key(domain, subset), ([], [], []))
                entry[0].append(row["row_idx"])
                entry[1].append(row.get("leave_min"))
                entry[2].append(row.get("arrive_min"))
    row_ids, leave_mins, arrive_mins = zip(*postings.values())
    ints = pa.list_(pa.int32())
    table = pa.table({"key": list(postings), "row_ids": pa.array(row_ids, ints),
                      "leave_mins": pa.array(leave_mins, ints), "arrive_mins": pa.array(arrive_mins, ints)})
    con.execute("DROP TABLE IF EXISTS temp.toolwoz_keys")
    con.execute(sql.load("toolwoz/toolwoz_keys"))
    con.register("_toolwoz_keys", table)
    try:
        con.execute("INSERT INTO toolwoz_keys SELECT md5_number(key), * FROM _toolwoz_keys")
    finally:
        con.unregister("_toolwoz_keys")
    _INDEXED.add(con)


def _run_indexed(con: duckdb.DuckDBPyConnection, queries: Sequence[RowQuery], idxs: list[int],
                 results: list[RowResult]) -> None:
    """Answer `queries[i]` for i in `idxs` (all indexed) with one lookup of their keys in toolwoz_keys."""
    asks: dict[str, list[int]] = {}  # key -> the requests asking for it
    bounds: dict[int, tuple[int | None, int | None]] = {}  # request -> (earliest departure, latest arrival)
    for i in idxs:
        q = queries[i]
        if any(v is None for _, v in q.constraints):  # a NULL value (an unparsed time) meets no row, as in SQL
            continue
        values = dict(q.constraints)
        bounds[i] = values.pop("leaveAt", None), values.pop("arriveBy", None)
        asks.setdefault(index_key(q.domain, values.items()), []).append(i)
    if not asks:
        return
    if con not in _INDEXED:
        index_rows(con)
    for key, row_ids, leave_mins, arrive_mins in con.execute(sql.load("queries/toolwoz_key_rows"),
                                                             {"keys": list(asks)}).fetchall():
        for i in asks.get(key, ()):
            lo, hi = bounds[i]
            ids = row_ids
            if lo is not None or hi is not None:  # a row without the time meets no bound on it
                ids = [r for r, leave, arrive in zip(row_ids, leave_mins, arrive_mins)
                       if (lo is None or (leave is not None and leave >= lo))
                       and (hi is None or (arrive is not None and arrive <= hi))]
            if queries[i].hidden:
                ids = [r for r in ids if r not in queries[i].hidden]
            results[i] = RowResult(ids[: queries[i].limit], len(ids))


def _run_by_shape(con: duckdb.DuckDBPyConnection, queries: Sequence[RowQuery], idxs: list[int],
                  results: list[RowResult]) -> None:
    """Answer `queries[i]` for i in `idxs` (one semantics) in one statement: the requests go in as one Arrow
    table and every request shape present is one UNION ALL branch joining it with its domain table."""
    if not idxs:
        return
    semantics = queries[idxs[0]].semantics
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


def run_many(con: duckdb.DuckDBPyConnection, queries: Sequence[RowQuery]) -> list[RowResult]:
    """Answer many requests: the indexed `fixed` ones in one statement, the others (`parity`) by shape."""
    results = [RowResult([], 0) for _ in queries]
    indexed = [_indexed(q) for q in queries]
    _run_indexed(con, queries, [i for i, ok in enumerate(indexed) if ok], results)
    for semantics in ("fixed", "parity"):
        rest = [i for i, q in enumerate(queries) if not indexed[i] and q.semantics == semantics]
        _run_by_shape(con, queries, rest, results)
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
