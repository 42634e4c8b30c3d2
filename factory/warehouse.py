"""The warehouse: one DuckDB file that every command reads and writes.

DuckDB allows one read-write process *or* many read-only ones per file, and a lock conflict fails at
once (it never waits), so writers hold the file only while they write and readers retry briefly.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from factory.errors import NotBuilt, UserError, WarehouseBusy, WarehouseError

DEFAULT_PATH = "warehouse.duckdb"
_HOLDER = re.compile(r"Conflicting lock is held in (.*?)(?: \(PID (\d+)\))?\.? See also", re.S)


def default_path() -> str:
    """`FACTORY_WAREHOUSE`, else `./warehouse.duckdb`."""
    return os.environ.get("FACTORY_WAREHOUSE") or DEFAULT_PATH


def _is_lock_error(e: Exception) -> bool:
    return "Could not set lock" in str(e) or "Conflicting lock" in str(e)


def _busy(path: Path, e: Exception) -> WarehouseBusy:
    m = _HOLDER.search(str(e))
    holder = f" (PID {m.group(2)})" if m and m.group(2) else ""
    return WarehouseBusy(f"warehouse {path} is being written by another process{holder}; "
                         "wait for it to finish or pass another --warehouse")


def connect(path: str | os.PathLike, *, read_only: bool = False, wait_s: float = 5.0) -> duckdb.DuckDBPyConnection:
    """Open the warehouse. Readers retry a lock conflict for up to `wait_s`; writers fail at once."""
    p = Path(path)
    if not p.parent.exists():
        raise UserError(f"folder {p.parent} does not exist; create it or pass another --warehouse")
    if read_only and not p.exists():
        raise UserError(f"no warehouse at {p}; run `factory toolwoz build -w {p}` first")
    deadline = time.monotonic() + (wait_s if read_only else 0)
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(p), read_only=read_only)
        except duckdb.IOException as e:
            if not _is_lock_error(e):
                raise WarehouseError(f"cannot open warehouse {p}: {str(e).splitlines()[0]}") from e
            if time.monotonic() >= deadline:
                raise _busy(p, e) from e
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        except duckdb.Error as e:
            raise WarehouseError(f"cannot open warehouse {p}: {str(e).splitlines()[0]}") from e


@contextmanager
def opened(path: str | os.PathLike, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect` as a context manager that always closes the file."""
    con = connect(path, read_only=read_only)
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
