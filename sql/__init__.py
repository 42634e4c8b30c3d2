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


def files() -> list[Path]:
    """Every .sql file of the project, sorted (the sqlglot test parses each one)."""
    return sorted(ROOT.rglob("*.sql"))
