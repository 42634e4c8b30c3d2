"""The project's SQL files, loaded by name (``load("toolwoz/train")`` reads ``sql/toolwoz/train.sql``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

ROOT = Path(__file__).parent


@cache
def load(name: str) -> str:
    """Text of ``sql/<name>.sql``; raises FileNotFoundError naming the file."""
    path = ROOT / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text()


def views_in_order() -> list[str]:
    """Names of `sql/views/*.sql`, each after the views it reads (found by parsing with sqlglot)."""
    import sqlglot
    from sqlglot import exp

    views = {p.stem: p for p in sorted((ROOT / "views").glob("*.sql"))}
    deps = {
        name: {t.name for t in sqlglot.parse_one(path.read_text(), read="duckdb").find_all(exp.Table)} & set(views)
        for name, path in views.items()
    }
    ordered: list[str] = []
    while len(ordered) < len(views):
        ready = [n for n in views if n not in ordered and deps[n] - {n} <= set(ordered)]
        if not ready:
            raise ValueError(f"views depend on each other in a cycle: {sorted(set(views) - set(ordered))}")
        ordered += ready
    return ordered


def files() -> list[Path]:
    """Every .sql file of the project, sorted (the sqlglot test parses each one)."""
    return sorted(ROOT.rglob("*.sql"))
