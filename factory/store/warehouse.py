"""The warehouse: one DuckDB file that every command reads and writes.

Connections, migrations, views and queries; the one writer is in `factory.store.writer`.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import duckdb
import pyarrow as pa

import sql
from common.errors import first_line
from factory.errors import NotBuilt, UserError, WarehouseBusy, WarehouseError
from toolwoz.clock import utc_now

DEFAULT_PATH = "warehouse.duckdb"
_HOLDER = re.compile(r"Conflicting lock is held in (.*?)(?: \(PID (\d+)\))?\.? See also", re.S)


def default_path() -> str:
    """`FACTORY_WAREHOUSE`, else `./warehouse.duckdb`."""
    return os.environ.get("FACTORY_WAREHOUSE") or DEFAULT_PATH


def is_lock_error(e: Exception) -> bool:
    return "Could not set lock" in str(e) or "Conflicting lock" in str(e)


def _busy(path: Path, e: Exception) -> WarehouseBusy:
    m = _HOLDER.search(str(e))
    holder = f" (PID {m.group(2)})" if m and m.group(2) else ""
    return WarehouseBusy(f"warehouse {path} is being written by another process{holder}; "
                         "wait for it to finish or pass another --warehouse")


def open_quietly(path: str, *, read_only: bool = False, config: Mapping[str, Any] | None = None
                 ) -> duckdb.DuckDBPyConnection:
    """duckdb.connect without DuckDB's progress bar: it prints to stdout for a query over 2 s, into `--json` output
    and tables alike (a loop under load printed one into its JSON)."""
    config = dict(config or {})
    lock = config.pop("lock_configuration", False)  # a locked configuration takes no SET: lock it after ours
    con = duckdb.connect(path, read_only=read_only, config=config)
    con.execute("SET enable_progress_bar = false")
    if lock:
        con.execute("SET lock_configuration = true")
    return con


def connect(path: str | os.PathLike, *, read_only: bool = False, wait_s: float = 5.0,
            config: Mapping[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (with DuckDB `config`, e.g. `factory sql`'s sandbox). Readers retry a lock conflict
    for up to `wait_s`; writers fail at once."""
    p = Path(path)
    if not p.parent.exists():
        raise UserError(f"folder {p.parent} does not exist; create it or pass another --warehouse")
    if read_only and not p.exists():
        raise UserError(f"no warehouse at {p}; run `factory toolwoz build -w {p}` first")
    deadline = time.monotonic() + (wait_s if read_only else 0)
    delay = 0.02
    while True:
        try:
            con = open_quietly(str(p), read_only=read_only, config=config)
            if read_only and pending_migrations(con):  # written by an earlier version: migrate, then read
                con.close()
                _migrate_for_reading(p)
                con = open_quietly(str(p), read_only=True, config=config)
            return con
        except duckdb.IOException as e:
            if not is_lock_error(e):
                raise WarehouseError(f"cannot open warehouse {p}: {first_line(e)}") from e
            if time.monotonic() >= deadline:
                raise _busy(p, e) from e
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        except duckdb.Error as e:
            raise WarehouseError(f"cannot open warehouse {p}: {first_line(e)}") from e


@contextmanager
def opened(path: str | os.PathLike, *, read_only: bool = False,
           config: Mapping[str, Any] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect` as a context manager that always closes the file."""
    con = connect(path, read_only=read_only, config=config)
    try:
        yield con
    finally:
        con.close()


def has_toolwoz(con: duckdb.DuckDBPyConnection) -> bool:
    """Does this database hold built ToolWOZ tables?"""
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'toolwoz' AND table_name = 'build_info'"
    ).fetchall()[0][0]
    return bool(found)


def require_toolwoz(con: duckdb.DuckDBPyConnection, path: str | os.PathLike) -> None:
    """Raise NotBuilt (exit 2, naming the fix) unless `factory toolwoz build` has run on this warehouse."""
    if not has_toolwoz(con):
        raise NotBuilt(f"warehouse {path} has no ToolWOZ tables; run `factory toolwoz build -w {path}` first")


# -- schema -----------------------------------------------------------------------------------------------

def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply `sql/schema/NNNN_*.sql` files not yet recorded in `_factory_migrations`; returns their names."""
    con.execute("CREATE TABLE IF NOT EXISTS _factory_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
    applied = pending_migrations(con)
    for name in applied:
        con.execute((sql.ROOT / "schema" / f"{name}.sql").read_text())
        con.execute("INSERT INTO _factory_migrations VALUES (?, ?)", [name, utc_now()])
    return applied


def pending_migrations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the `sql/schema` files this warehouse has not had yet (none for a file no writer has prepared)."""
    try:
        done = {r[0] for r in con.execute("SELECT name FROM _factory_migrations").fetchall()}
    except duckdb.CatalogException:
        return []
    return [path.stem for path in sorted((sql.ROOT / "schema").glob("*.sql")) if path.stem not in done]


def _migrate_for_reading(path: Path) -> None:
    """Migrate (and refresh the views of) a warehouse an earlier version wrote, before a read-only command reads
    it: as a writer would on open, holding the writer's lock (`<path>.lock`) for the moment it takes."""
    in_use = UserError(f"warehouse {path} needs the migrations of this version, and another process has it open; "
                       "run the command again when it is done")
    try:
        lock = open(f"{path}.lock", "a+")
    except OSError as e:
        raise UserError(f"warehouse {path} needs the migrations of this version, which cannot take its lock file: "
                        f"{first_line(e)}") from e
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise in_use from None
        try:
            con = open_quietly(str(path))
        except duckdb.Error as e:
            if is_lock_error(e):
                raise in_use from e
            raise WarehouseError(f"cannot migrate warehouse {path}: {first_line(e)}") from e
        try:
            prepare(con)
        finally:
            con.close()


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every macro of `sql/macros/` and view of `sql/views/`, so the warehouse has the current ones."""
    con.execute(sql.load("toolwoz/tasks"))  # views read `tasks`; `factory toolwoz build` fills it
    for name in sql.macros():
        con.execute(sql.load(f"macros/{name}"))
    for name in sql.views_in_order():
        con.execute(sql.load(f"views/{name}"))


def is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Were this warehouse's tables and views made from today's `sql/` files (`sql.fingerprint()`)?"""
    try:
        found = con.execute("SELECT fingerprint FROM _factory_views").fetchall()
    except duckdb.CatalogException:
        return False
    return found == [(sql.fingerprint(),)]


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Migrate and refresh macros and views, in one transaction, unless they are current already."""
    if is_current(con):
        return
    with sql.transaction(con):
        migrate(con)
        create_views(con)
        con.execute("CREATE OR REPLACE TABLE _factory_views (fingerprint VARCHAR, created_at TIMESTAMP)")
        con.execute("INSERT INTO _factory_views VALUES (?, ?)", [sql.fingerprint(), utc_now()])


# -- reading ----------------------------------------------------------------------------------------------

def _value(text: str) -> Any:
    """`-p` values: integers and decimals become numbers, `null` NULL, anything else stays text."""
    if text.lower() == "null":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def check_parameters(query: str, params: Mapping[str, Any]) -> None:
    """UserError for a `-p` name that neither a view nor the query reads (a typo would be ignored silently)."""
    known = sql.view_parameters() | sql.variables_read(query)
    for name in params:
        if not name.isidentifier():
            raise UserError(f"parameter name {name!r} is not an identifier")
        if name not in known:
            raise UserError(f"unknown parameter {name!r}; the views read {', '.join(sorted(sql.view_parameters()))} "
                            "(a query reads its own with getvariable('NAME'))")


def run_query(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, str]) -> pa.Table | None:
    """Set the view parameters as DuckDB variables, run the query, return its rows (None for no result)."""
    check_parameters(query, params)
    for name, value in params.items():
        con.execute(f"SET VARIABLE {name} = $value", {"value": _value(value)})  # name checked above
    try:
        relation = con.sql(query)
    except duckdb.Error as e:
        raise UserError(first_line(e)) from e
    if relation is None:
        return None
    try:
        return relation.to_arrow_table()
    except duckdb.Error as e:
        raise UserError(first_line(e)) from e
