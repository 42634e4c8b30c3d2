"""Branch-local τ-bench state: the base tables once, each branch's writes as rows of `taubench_writes`.

A branch is a rollout id and the path of node ids from the root to the node that writes. A read of (tbl, key) is
the latest write among the path's nodes (deepest node first, then the last call), else the base row: siblings
never see each other's writes, children inherit their ancestors'. Nothing is copied per branch.

Tools are small functions over a `BranchDB`, the call's view of one branch, written like τ-bench's own tools::

    @tool("CancelPendingOrder")
    def cancel_pending_order(data: BranchDB, order_id: str, reason: str) -> str:
        order = data.get("orders", order_id)          # a dict: mutate it in place, as τ-bench does
        ...
        return json.dumps(order)

`get` returns the call's working copy of a row (the same dict for the same key within a call). When the tool
returns, every row whose JSON text changed (or that `put`/`delete` created or removed) becomes one write row;
when it raises, nothing is written. Tables are τ-bench's data keys ("users", "orders", "products"; "users",
"flights", "reservations").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import duckdb

import sql

F = TypeVar("F", bound=Callable[..., str])


@dataclass(frozen=True)
class Branch:
    """One node of one rollout's tree: `path` is the node ids root..this node; the node that writes is path[-1]."""

    rollout_id: str
    path: tuple[int, ...]

    @property
    def node_id(self) -> int:
        return self.path[-1]

    def child(self, node_id: int) -> "Branch":
        """The branch of a child node."""
        return Branch(self.rollout_id, (*self.path, node_id))


@dataclass(frozen=True)
class Write:
    """One row version a call left: `before`/`after` are JSON texts, None = absent (created / deleted)."""

    tbl: str
    key: str
    before: str | None
    after: str | None


def tool(reference: str) -> Callable[[F], F]:
    """Mark a function as τ-bench's `<reference>.invoke`, so Python's own argument errors ("... missing 1 required
    positional argument: 'reason'") read exactly as τ-bench's. Name the first parameter `data`, as τ-bench does."""

    def mark(fn: F) -> F:
        fn.__qualname__ = f"{reference}.invoke"
        return fn

    return mark


def canonical_hash(obj: Any) -> str:
    """Hash of an object's canonical JSON (keys sorted): equal iff τ-bench's `to_hashable` values are equal."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def attach(con: duckdb.DuckDBPyConnection) -> None:
    """Create the write table and the overlay macros on a connection (temporary objects; idempotent)."""
    con.execute(sql.load("taubench/taubench_writes"))
    con.execute(sql.load("taubench/taubench_rows"))
    con.execute(sql.load("taubench/branch_versions"))


def _params(text: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values a SQL text names (`$name`); DuckDB refuses parameters a statement does not use."""
    names = set(re.findall(r"\$(\w+)", text))
    missing = names - set(values)
    if missing:
        raise ValueError(f"no value for SQL parameter(s) {sorted(missing)}")
    return {k: v for k, v in values.items() if k in names}


def run_query(con: duckdb.DuckDBPyConnection, name: str, values: dict[str, Any]) -> list[tuple]:
    """Rows of `sql/taubench/<name>.sql` with the parameters it names bound from `values`."""
    text = sql.load(f"taubench/{name}")
    return con.execute(text, _params(text, values)).fetchall()


class BranchDB:
    """One tool call's view of one branch's database (base ⊕ the path's writes), with the call's working copies."""

    def __init__(self, con: duckdb.DuckDBPyConnection, domain: str, branch: Branch, overlay: bool = True):
        """`overlay=False` promises that no node of the branch's path has written (its caller knows: the env
        records every write), so point reads go straight to the base rows."""
        self.con, self.domain, self.branch, self.overlay = con, domain, branch, overlay
        self._before: dict[tuple[str, str], str | None] = {}  # text as read
        self._rows: dict[tuple[str, str], Any] = {}  # working copy (None = absent)

    def _bind(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {"domain": self.domain, "rollout_id": self.branch.rollout_id, "path": list(self.branch.path),
                **extra}

    def _load(self, tbl: str, keys: list[str]) -> None:
        todo = [k for k in dict.fromkeys(keys) if (tbl, k) not in self._before]
        if not todo:
            return
        if len(todo) == 1:  # two point lookups plan far faster than the grouped union of `read_rows`
            args = self._bind({"tbl": tbl, "key": todo[0]})
            n, doc = run_query(self.con, "read_write", args)[0] if self.overlay else (0, None)
            if not n:
                doc = next(iter(run_query(self.con, "read_base", args)), (None,))[0]
            found = {todo[0]: doc}
        else:
            found = dict(run_query(self.con, "read_rows", self._bind({"tbl": tbl, "keys": todo})))
        for key in todo:
            doc = found.get(key)
            self._before[(tbl, key)] = doc
            self._rows[(tbl, key)] = None if doc is None else json.loads(doc)

    def get(self, tbl: str, key: Any) -> Any:
        """The row (a dict, mutable: changes are written when the call returns), or None if there is none.
        As with τ-bench's dicts, an unhashable key raises TypeError and any other non-text key finds nothing."""
        hash(key)
        if not isinstance(key, str):
            return None
        self._load(tbl, [key])
        return self._rows[(tbl, key)]

    def row(self, tbl: str, key: Any) -> Any:
        """The row, or KeyError(key) as τ-bench's `data[tbl][key]` raises."""
        found = self.get(tbl, key)
        if found is None:
            raise KeyError(key)
        return found

    def get_many(self, tbl: str, keys: list[str]) -> dict[str, Any]:
        """Several rows in one query: key -> row or None."""
        keys = [k for k in keys if isinstance(k, str)]
        self._load(tbl, keys)
        return {k: self._rows[(tbl, k)] for k in keys}

    def has(self, tbl: str, key: Any) -> bool:
        """Whether the row exists (τ-bench's `key in data[tbl]`)."""
        return self.get(tbl, key) is not None

    def text(self, tbl: str, key: Any) -> str | None:
        """The row as `json.dumps` writes it (what τ-bench's getters return), or None."""
        row = self.get(tbl, key)
        return None if row is None else json.dumps(row)

    def put(self, tbl: str, key: str, row: Any) -> None:
        """Create or replace a row (also fine after mutating the dict `get` returned)."""
        self._load(tbl, [key])
        self._rows[(tbl, key)] = row

    def delete(self, tbl: str, key: str) -> None:
        """Remove a row."""
        self._load(tbl, [key])
        self._rows[(tbl, key)] = None

    def rows(self, tbl: str) -> list[tuple[str, Any]]:
        """Every row of a table in τ-bench's iteration order, as (key, row), this call's working copies included
        (rows it created come last, as in a dict). A scan: prefer a search query."""
        listed = []
        for key, doc in self.query("table_rows", {"tbl": tbl}):
            if (tbl, key) not in self._before:
                self._before[(tbl, key)] = doc
                self._rows[(tbl, key)] = json.loads(doc)
            listed.append(key)
        seen = set(listed)
        listed += [k for (t, k), before in self._before.items() if t == tbl and k not in seen and before is None]
        return [(k, self._rows[(tbl, k)]) for k in listed if self._rows[(tbl, k)] is not None]

    def query(self, name: str, params: dict[str, Any] | None = None) -> list[tuple]:
        """Rows of `sql/taubench/<name>.sql`, which reads `taubench_rows($domain, tbl, $rollout_id, $path)`
        (base ⊕ this branch's committed writes) and any other `$params`. It does not see this call's changes."""
        return run_query(self.con, name, self._bind(params or {}))

    def changes(self) -> list[Write]:
        """The rows this call changed so far (JSON text differs from what it read)."""
        out = []
        for (tbl, key), before in self._before.items():
            row = self._rows[(tbl, key)]
            after = None if row is None else json.dumps(row)
            if after != before:
                out.append(Write(tbl, key, before, after))
        return out


def next_pos(con: duckdb.DuckDBPyConnection, branch: Branch) -> int:
    """The call position after the last one that wrote at the branch's node."""
    return run_query(con, "next_pos", {"rollout_id": branch.rollout_id, "node_id": branch.node_id})[0][0]


def record(con: duckdb.DuckDBPyConnection, branch: Branch, pos: int, writes: list[Write]) -> list[dict[str, Any]]:
    """Store one call's writes as rows at (rollout, node, pos); returns them as `state_changes` rows."""
    rows = [{"rollout_id": branch.rollout_id, "node_id": branch.node_id, "pos": pos, "tbl": w.tbl, "key": w.key,
             "before": w.before, "after": w.after} for w in writes]
    if rows:
        text = sql.load("taubench/insert_writes")
        con.execute(f"INSERT INTO taubench_writes BY NAME {text}", {  # text: our own SQL file
            "rollout_id": branch.rollout_id, "node_id": branch.node_id, "pos": pos,
            "tbls": [w.tbl for w in writes], "keys": [w.key for w in writes],
            "befores": [w.before for w in writes], "afters": [w.after for w in writes],
            "before_hashes": [_hash(w.before) for w in writes], "after_hashes": [_hash(w.after) for w in writes]})
    return rows


def _hash(text: str | None) -> str | None:
    return None if text is None else canonical_hash(json.loads(text))


def state_changes(con: duckdb.DuckDBPyConnection, rollout_id: str) -> list[dict[str, Any]]:
    """Every write of a rollout: rows (rollout_id, node_id, pos, tbl, key, before, after) for the warehouse."""
    names = ("rollout_id", "node_id", "pos", "tbl", "key", "before", "after")
    return [dict(zip(names, r)) for r in run_query(con, "state_changes", {"rollout_id": rollout_id})]


def forget(con: duckdb.DuckDBPyConnection, rollout_id: str) -> None:
    """Delete a finished rollout's write rows."""
    con.execute("DELETE FROM taubench_writes WHERE rollout_id = $rollout_id", {"rollout_id": rollout_id})


def differences(con: duckdb.DuckDBPyConnection, a: Branch, b: Branch) -> list[tuple[str, str]]:
    """(tbl, key) of every row on which two branches' databases differ (canonical JSON); [] = equal."""
    rows = run_query(con, "db_diff", {"rollout_a": a.rollout_id, "path_a": list(a.path),
                                      "rollout_b": b.rollout_id, "path_b": list(b.path)})
    return [(r[0], r[1]) for r in rows]


def read(con: duckdb.DuckDBPyConnection, domain: str, branch: Branch, tbl: str, key: str) -> Any:
    """One row as a branch sees it (a fresh dict), or None."""
    return BranchDB(con, domain, branch).get(tbl, key)
