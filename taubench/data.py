"""τ-bench's data: locate the folder, read its JSON, build the DuckDB tables of both domains and the tasks.

Each database row keeps the record exactly as the JSON file has it (`doc`, key order kept, so a tool's
`json.dumps` observation is byte-identical to τ-bench's) and its position in the file (`ord`, τ-bench's iteration
order), beside typed and nested columns for analysis.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

import sql
from common.errors import first_line
from taubench import state
from taubench.errors import DataError, DataNotFound

REPO_ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("retail", "airline")
SPLITS = {"retail": ("train", "dev", "test"), "airline": ("test",)}
TABLES = {"retail": ("users", "orders", "products"), "airline": ("users", "flights", "reservations")}
KEY_COLUMN = {("retail", "users"): "user_id", ("retail", "orders"): "order_id",
              ("retail", "products"): "product_id", ("airline", "users"): "user_id",
              ("airline", "flights"): "flight_number", ("airline", "reservations"): "reservation_id"}
RESPOND = "respond"  # τ-bench's name for "say this to the user" in an action list


@dataclass(frozen=True)
class Action:
    """One tool call (or `respond`) as τ-bench writes it: equal when name and kwargs are equal."""

    name: str
    kwargs: dict[str, Any]

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.kwargs))))  # names only: equal values may differ in type (1, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": self.kwargs}


@dataclass(frozen=True)
class TauTask:
    """One τ-bench task: the simulated user's instruction, the gold actions in order and the outputs to say."""

    task_id: str
    domain: str
    split: str
    index: int
    user_id: str
    instruction: str
    actions: tuple[Action, ...]
    outputs: tuple[str, ...]

    @property
    def tool_actions(self) -> list[Action]:
        """The gold actions that are tool calls (not `respond`)."""
        return [a for a in self.actions if a.name != RESPOND]


def task_id(domain: str, split: str, index: int) -> str:
    return f"{domain}/{split}/{index}"


def locate(path: str | os.PathLike | None = None) -> Path:
    """The τ-bench folder: `path`, else $FACTORY_TAUBENCH, else ../shared/taubench beside the checkout."""
    chosen = path or os.environ.get("FACTORY_TAUBENCH") or REPO_ROOT.parent / "shared" / "taubench"
    folder = Path(chosen)
    if not folder.is_dir():
        raise DataNotFound(f"τ-bench data not found at {folder}: pass --taubench PATH or set FACTORY_TAUBENCH")
    return folder


def read_json(path: Path) -> Any:
    """A JSON file's content; DataError naming the file when it is missing or does not parse."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"τ-bench file {path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"τ-bench file {path} does not parse: {first_line(e)}") from None


def load_database(folder: Path, domain: str) -> dict[str, dict[str, Any]]:
    """τ-bench's `load_data()` for a domain: {table: {key: record}} in file order."""
    out = {}
    for tbl in TABLES[domain]:
        path = folder / domain / f"{tbl}.json"
        records = read_json(path)
        if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
            raise DataError(f"τ-bench file {path} is not an object of records")
        out[tbl] = records
    return out


def _action(raw: Any, path: Path) -> Action:
    if not (isinstance(raw, dict) and isinstance(raw.get("name"), str) and isinstance(raw.get("kwargs"), dict)):
        raise DataError(f"τ-bench task file {path} has an action that is not {{name, kwargs}}: {str(raw)[:80]}")
    return Action(raw["name"], raw["kwargs"])


def load_tasks(folder: Path, domain: str) -> list[TauTask]:
    """Every task of a domain, split by split (DataError naming a file that does not parse)."""
    tasks = []
    for split in SPLITS[domain]:
        path = folder / domain / f"tasks_{split}.json"
        raw = read_json(path)
        if not isinstance(raw, list):
            raise DataError(f"τ-bench task file {path} is not a list of tasks")
        for i, t in enumerate(raw):
            if not (isinstance(t, dict) and isinstance(t.get("instruction"), str)
                    and isinstance(t.get("actions"), list) and isinstance(t.get("outputs", []), list)):
                raise DataError(f"τ-bench task file {path}: task {i} lacks instruction/actions/outputs")
            tasks.append(TauTask(task_id(domain, split, i), domain, split, i, str(t.get("user_id", "")),
                                 t["instruction"], tuple(_action(a, path) for a in t["actions"]),
                                 tuple(str(o) for o in t.get("outputs", []))))
    return tasks


def _typed(domain: str, tbl: str, key: str, ord_: int, rec: dict[str, Any]) -> dict[str, Any]:
    """One record in the form of `sql/taubench/taubench_<domain>_<tbl>.sql`."""
    g = rec.get
    row: dict[str, Any] = {KEY_COLUMN[(domain, tbl)]: key, "ord": ord_, "doc": json.dumps(rec)}
    if tbl == "users":
        name, address = g("name") or {}, g("address") or {}
        row |= {"first_name": name.get("first_name"), "last_name": name.get("last_name"), "email": g("email"),
                "payment_method_ids": list(g("payment_methods") or {})}
        if domain == "retail":
            row |= {"zip": address.get("zip"), "address": address or None, "orders": g("orders")}
        else:
            row |= {"dob": g("dob"), "membership": g("membership"), "reservations": g("reservations")}
    elif tbl == "orders":
        row |= {"user_id": g("user_id"), "status": g("status"), "address": g("address"),
                "items": [{k: i.get(k) for k in ("name", "product_id", "item_id", "price")} for i in g("items", [])],
                "payment_history": g("payment_history")}
    elif tbl == "products":
        row |= {"name": g("name"), "variants": [{"item_id": k, "available": v.get("available"),
                                                 "price": v.get("price")} for k, v in (g("variants") or {}).items()]}
    elif tbl == "flights":
        row |= {k: g(k) for k in ("origin", "destination", "scheduled_departure_time_est",
                                  "scheduled_arrival_time_est")}
        row["dates"] = [{"date": d, "status": v.get("status")} for d, v in (g("dates") or {}).items()]
    elif tbl == "reservations":
        row |= {k: g(k) for k in ("user_id", "origin", "destination", "flight_type", "cabin", "created_at",
                                  "total_baggages", "nonfree_baggages", "insurance", "passengers")}
        row["flights"] = g("flights")
    return row


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        con.register("_taubench_rows", pa.Table.from_pylist(rows))
        try:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _taubench_rows")  # table: code constant
        finally:
            con.unregister("_taubench_rows")


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every τ-bench table (both domains) and the write overlay, where missing."""
    for domain in DOMAINS:
        for tbl in TABLES[domain]:
            con.execute(sql.load(f"taubench/taubench_{domain}_{tbl}"))
    con.execute(sql.load("taubench/taubench_tasks"))
    con.execute(sql.load("taubench/taubench_domains"))
    con.execute(sql.load("taubench/taubench_base"))
    state.attach(con)


def build(con: duckdb.DuckDBPyConnection, domain: str, folder: str | os.PathLike | None = None) -> list[TauTask]:
    """(Re)fill one domain's tables, tasks and policy from the τ-bench folder in one transaction; idempotent."""
    if domain not in DOMAINS:
        raise DataError(f"unknown τ-bench domain {domain!r}: one of {', '.join(DOMAINS)}")
    root = locate(folder)
    database, tasks = load_database(root, domain), load_tasks(root, domain)
    tools, rules = read_json(root / domain / "tools.json"), read_json(root / domain / "rules.json")
    try:
        wiki = (root / domain / "wiki.md").read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"τ-bench file {root / domain / 'wiki.md'} cannot be read: {e}") from None
    with sql.transaction(con):
        create_schema(con)
        con.execute("DELETE FROM taubench_base WHERE domain = $domain", {"domain": domain})
        for tbl, records in database.items():
            table = f"taubench_{domain}_{tbl}"
            con.execute(f"DELETE FROM {table}")  # table: code constant
            _insert(con, table, [_typed(domain, tbl, k, i, r) for i, (k, r) in enumerate(records.items())])
            con.execute(f"INSERT INTO taubench_base SELECT $domain, $tbl, {KEY_COLUMN[(domain, tbl)]}, ord, doc "
                        f"FROM {table}", {"domain": domain, "tbl": tbl})  # names: code constants
        con.execute("DELETE FROM taubench_tasks WHERE domain = $domain", {"domain": domain})
        _insert(con, "taubench_tasks", [
            {"task_id": t.task_id, "domain": domain, "split": t.split, "idx": t.index, "user_id": t.user_id,
             "instruction": t.instruction, "actions": json.dumps([a.to_dict() for a in t.actions]),
             "outputs": list(t.outputs)} for t in tasks])
        con.execute("DELETE FROM taubench_domains WHERE domain = $domain", {"domain": domain})
        con.execute("INSERT INTO taubench_domains VALUES ($domain, $wiki, $tools, $rules, $source)",
                    {"domain": domain, "wiki": wiki, "tools": json.dumps(tools), "rules": json.dumps(rules),
                     "source": str(root)})
    return tasks


def has_tables(con: duckdb.DuckDBPyConnection, domain: str) -> bool:
    """Whether the connection holds a built domain (its policy row, written last by `build`)."""
    try:
        return bool(con.execute("SELECT count(*) FROM taubench_domains WHERE domain = $domain",
                                {"domain": domain}).fetchone()[0])
    except duckdb.CatalogException:
        return False


def tasks_from_table(con: duckdb.DuckDBPyConnection, domain: str) -> dict[str, TauTask]:
    """The built tasks of a domain, by task id, in split and index order."""
    out = {}
    for tid, dom, split, idx, user_id, instruction, actions, outputs in state.run_query(
            con, "tasks", {"domain": domain}):
        out[tid] = TauTask(tid, dom, split, idx, user_id or "", instruction,
                           tuple(Action(a["name"], a["kwargs"]) for a in json.loads(actions)), tuple(outputs))
    return out


def domain_info(con: duckdb.DuckDBPyConnection, domain: str) -> tuple[str, list[dict[str, Any]], list[str]]:
    """(wiki, tool schemas, rules) of a built domain."""
    rows = state.run_query(con, "domain_info", {"domain": domain})
    if not rows:
        raise DataError(f"τ-bench domain {domain} is not built on this database")
    wiki, tools, rules = rows[0]
    return wiki, json.loads(tools), json.loads(rules)


def in_memory(*domains: str, folder: str | os.PathLike | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB holding the given domains' tables (both when none given)."""
    con = duckdb.connect(":memory:", config={"threads": 1})
    for domain in domains or DOMAINS:
        build(con, domain, folder)
    return con
