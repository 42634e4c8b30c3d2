"""The one writer of a warehouse and the grouped commits of a harvest.

Concurrency model (measured in ../shared/notes/stack-checks.md §2): DuckDB allows one read-write process
*or* many read-only ones per file, and a lock conflict fails at once (it never waits). So:
- a writing command takes an advisory `flock` on `<warehouse>.lock` for its whole life (a second writer
  is refused with a message naming the first; the kernel drops the lock when a process dies, even on
  `kill -9`), but opens the DuckDB file only for each short write session (open, one transaction, close:
  about 20 ms), retrying while a reader holds it;
- readers (`factory sql`) open read-only and retry briefly while a write session holds the file.
Every write session is one transaction, so a rollout is either wholly visible or not at all. A harvest groups
its writes (`Writer.grouped`): a writer thread commits every rollout finished within `max_delay_s` of the first
one waiting in ONE session (open, one transaction, close), so the connect/commit/checkpoint costs are paid once
per group, at most one session starts per `max_delay_s` (readers always find gaps), and a `kill -9` loses at
most the rollouts of the last second, never part of one (re-running resumes).
A writer migrates the schema and re-creates the macros and views only when the package's SQL files changed
since they were made (`sql.fingerprint()`, recorded in `_factory_views`); otherwise opening costs one query.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import duckdb
import pyarrow as pa

import sql
from common.errors import first_line
from factory.errors import UserError, WarehouseBusy, WarehouseError
from factory.store.warehouse import is_lock_error, open_quietly, prepare
from toolwoz.clock import utc_now
from toolwoz.values import storable


class Writer:
    """The one writer of a warehouse: holds `<path>.lock` while alive, writes in short transactions."""

    def __init__(self, path: str | os.PathLike, command: str | None = None, *, wait_s: float = 60.0):
        self.path = Path(path)
        self.command = command or " ".join(["factory", *sys.argv[1:]])
        self.wait_s = wait_s
        self._lock: IO[str] | None = None

    def __enter__(self) -> "Writer":
        if not self.path.parent.exists():
            raise UserError(f"folder {self.path.parent} does not exist; create it or pass another --warehouse")
        lock = open(f"{self.path}.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = _describe_holder(lock.read())
            lock.close()
            raise WarehouseBusy(f"warehouse {self.path} is being written by {holder}; "
                                "wait for it to finish or pass another --warehouse") from None
        lock.seek(0)
        lock.truncate()
        since = utc_now().isoformat(" ", "seconds")
        lock.write(json.dumps({"pid": os.getpid(), "command": self.command, "since": since}))
        lock.flush()
        self._lock = lock
        with self.session() as con:
            prepare(con)
            # We hold the lock, so no other writer lives: a run still `running` lost its writer (kill -9, power).
            con.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.seek(0)
            self._lock.truncate()
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    @contextmanager
    def session(self, config: Mapping[str, Any] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """An open read-write connection (DuckDB `config`), retried while readers hold the file; closed after."""
        deadline = time.monotonic() + self.wait_s
        delay = 0.01
        while True:
            try:
                con = open_quietly(str(self.path), config=config)
                break
            except duckdb.IOException as e:
                if not is_lock_error(e) or time.monotonic() >= deadline:
                    raise WarehouseError(f"cannot write warehouse {self.path}: {first_line(e)}") from e
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        try:
            yield con
        finally:
            con.close()

    def append(self, tables: Mapping[str, pa.Table | list[dict[str, Any]]], *,
               statements: list[tuple[str, Any]] = (), before: list[tuple[str, Any]] = ()) -> None:
        """Run `before`, insert every table's rows (by column name), run `statements`: all in ONE transaction."""
        with self.session() as con, sql.transaction(con):
            for statement, params in before:
                con.execute(statement, params)
            _insert(con, tables)
            for statement, params in statements:
                con.execute(statement, params)

    def append_many(self, groups: list[Mapping[str, pa.Table | list[dict[str, Any]]]], *,
                    before: list[tuple[str, Any]] = ()) -> None:
        """Run `before`, then insert the rows of every mapping in `groups` (e.g. one per rollout): ONE session
        and transaction."""
        with self.session() as con, sql.transaction(con):
            for statement, params in before:
                con.execute(statement, params)
            for name, table in _concat(groups):
                _insert(con, {name: table})

    def grouped(self, max_delay_s: float = 1.0) -> "WriteGroup":
        """A `WriteGroup` on this writer: `with writer.grouped() as group: group.append(tables)`."""
        return WriteGroup(self, max_delay_s)


def _insert(con: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table | list[dict[str, Any]]]) -> None:
    for name, rows in tables.items():
        table = rows if isinstance(rows, pa.Table) else to_arrow(rows)
        if table.num_rows:
            con.register("_factory_rows", table)
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _factory_rows")  # name: ours
            con.unregister("_factory_rows")


def _concat(groups: list[Mapping[str, pa.Table | list[dict[str, Any]]]]) -> list[tuple[str, pa.Table]]:
    """The rows of every group as one Arrow table per name (columns the union, missing ones NULL); a name whose
    tables' types do not unify keeps one table per group (inserted one by one, in the same transaction)."""
    out = []
    for name in dict.fromkeys(name for g in groups for name in g):
        parts = [g[name] for g in groups if name in g]
        try:
            if all(isinstance(p, list) for p in parts):
                out.append((name, to_arrow([row for p in parts for row in p])))
            else:
                tables = [p if isinstance(p, pa.Table) else to_arrow(p) for p in parts]
                out.append((name, pa.concat_tables(tables, promote_options="permissive")))
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. a column int in one rollout, text in another
            out += [(name, p if isinstance(p, pa.Table) else to_arrow(p)) for p in parts]
    return out


class WriteGroup:
    """Rollouts handed over with `append` are committed by a writer thread, every group that is ready in one
    transaction: the first one waiting starts the group, which takes whatever arrives within `max_delay_s`
    (or `max_rows` appends), and later until sessions take at most `max_share` of the time: a session costs
    a connect and a checkpoint at close (~0.1 s) whatever its size, so after one that took `c` seconds the
    next starts `c * (1 - max_share) / max_share` later. Never later than `max_wait_s` after its first rollout
    arrived: that bounds what a kill -9 loses (finished rollouts, which a re-run redoes). Leaving the `with`
    block commits what is still waiting; a failed commit stops the group and is raised by the next `append`
    or at the exit."""

    def __init__(self, writer: Writer, max_delay_s: float = 1.0, max_rows: int = 1000, *,
                 max_share: float = 0.01, max_wait_s: float = 10.0):
        self.writer, self.max_delay_s, self.max_rows = writer, max_delay_s, max_rows
        self.max_share, self.max_wait_s = max_share, max_wait_s
        self._queue: queue.Queue[tuple[Mapping[str, Any], list[tuple[str, Any]]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._commit_groups, name="factory-writer", daemon=True)
        self.sessions = 0  # transactions committed
        self.committed = 0  # appends committed
        self.busy_s = 0.0  # seconds the writer thread spent in write sessions

    def __enter__(self) -> "WriteGroup":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error

    def append(self, tables: Mapping[str, pa.Table | list[dict[str, Any]]], *,
               before: list[tuple[str, Any]] = ()) -> None:
        """Queue one rollout's rows (by table name) for the next group; `before` (e.g. deleting a retried
        rollout's old rows) runs first in the group's transaction."""
        if self._error is not None:
            raise self._error
        self._queue.put((tables, list(before)))

    def _commit_groups(self) -> None:
        done, last_end, last_cost = False, 0.0, 0.0
        while not done:
            first = self._queue.get()
            if first is None:
                return
            now = time.monotonic()
            spaced = last_end + last_cost * (1 - self.max_share) / self.max_share
            group, deadline = [first], min(max(now + self.max_delay_s, spaced), now + self.max_wait_s)
            while len(group) < self.max_rows:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                group.append(item)
            start = time.perf_counter()
            try:
                self.writer.append_many([tables for tables, _ in group],
                                        before=[s for _, statements in group for s in statements])
            except BaseException as e:  # noqa: BLE001 - handed to the harvest, which stops
                self._error = e
                return
            finally:
                last_cost = time.perf_counter() - start
                self.busy_s += last_cost
                last_end = time.monotonic()
            self.sessions += 1
            self.committed += len(group)


def to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as an Arrow table with the union of their keys (a key missing from a row is NULL there).

    `pa.Table.from_pylist` takes the columns from the first row only, which would silently drop the
    rest when the first row lacks a key.
    """
    keys = dict.fromkeys(k for row in rows for k in row)
    try:
        return pa.table({k: [row.get(k) for row in rows] for k in keys})
    except UnicodeEncodeError:  # a lone surrogate from a model somewhere: store U+FFFD in its place
        return pa.table({k: [storable(row.get(k)) for row in rows] for k in keys})


def writer_alive(path: str | os.PathLike) -> bool:
    """Is a writer of this warehouse alive now? (The pid its lock file names is a running process.) Readers use
    it to show a `running` run whose writer is gone as `interrupted`; never takes the lock itself."""
    try:
        info = json.loads(Path(f"{path}.lock").read_text() or "{}")
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def shown_status(status: str | None, writer_is_alive: bool) -> str | None:
    """A run's status as a reader should show it: `running` without a live writer is `interrupted`."""
    return "interrupted" if status == "running" and not writer_is_alive else status


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"`{info['command']}` (PID {info['pid']}, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"
