"""The project's SQL files, loaded by name (``load("toolwoz/train")`` reads ``sql/toolwoz/train.sql``), and the
one transaction helper every writer uses.

The files are parsed with sqlglot once per process (`views_in_order` and `view_reads` are cached); a warehouse
re-creates its views only when `fingerprint()` (a hash of every schema, macro and view file) changes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent


@cache
def load(name: str) -> str:
    """Text of ``sql/<name>.sql``; raises FileNotFoundError naming the file."""
    path = ROOT / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text()


def tables_read(text: str) -> set[str]:
    """Names of the tables and views one SQL statement reads (parsed with sqlglot)."""
    import sqlglot
    from sqlglot import exp

    return {t.name for t in sqlglot.parse_one(text, read="duckdb").find_all(exp.Table)}


@cache
def view_reads() -> dict[str, frozenset[str]]:
    """Every view of `sql/views/` -> the other views of `sql/views/` it reads."""
    names = {p.stem for p in (ROOT / "views").glob("*.sql")}
    return {name: frozenset((tables_read(load(f"views/{name}")) & names) - {name}) for name in sorted(names)}


@cache
def views_in_order() -> tuple[str, ...]:
    """Names of `sql/views/*.sql`, each after the views it reads."""
    deps = view_reads()
    ordered: list[str] = []
    while len(ordered) < len(deps):
        ready = [n for n in deps if n not in ordered and deps[n] <= set(ordered)]
        if not ready:
            raise ValueError(f"views depend on each other in a cycle: {sorted(set(deps) - set(ordered))}")
        ordered += ready
    return tuple(ordered)


@cache
def view_parameters() -> frozenset[str]:
    """The DuckDB variables the views read (`getvariable('min_reward')`): what `-p NAME VALUE` may set."""
    return frozenset(name for path in (ROOT / "views").glob("*.sql") for name in variables_read(path.read_text()))


def variables_read(text: str) -> set[str]:
    """Names of the DuckDB variables a SQL text reads with `getvariable('NAME')`."""
    return set(re.findall(r"getvariable\(\s*'(\w+)'\s*\)", text, flags=re.IGNORECASE))


def macros() -> list[str]:
    """Names of `sql/macros/*.sql` (functions the views call), sorted."""
    return sorted(p.stem for p in (ROOT / "macros").glob("*.sql"))


@cache
def fingerprint() -> str:
    """A hash of the schema migrations, macros and views: a warehouse whose views carry another one is stale."""
    digest = hashlib.sha256()
    for folder in ("schema", "macros", "views"):
        for path in sorted((ROOT / folder).glob("*.sql")):
            digest.update(f"{folder}/{path.name}\n".encode() + path.read_bytes())
    digest.update(load("toolwoz/tasks").encode())
    return digest.hexdigest()[:16]


@contextmanager
def transaction(con: Any) -> Iterator[Any]:
    """BEGIN ... COMMIT on a DuckDB connection; ROLLBACK (and re-raise) if anything in the block fails."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def files() -> list[Path]:
    """Every .sql file of the project, sorted (the sqlglot test parses each one)."""
    return sorted(ROOT.rglob("*.sql"))
