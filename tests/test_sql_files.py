"""Every SQL file of the project parses as DuckDB SQL and names what it holds.

A file under `sql/toolwoz/`, `sql/views/`, `sql/macros/` or `sql/queries/` holds one statement named after the file;
one under `sql/maintenance/` one UPDATE (a step `make` runs on a finished warehouse). A migration
(`sql/schema/NNNN_*.sql`) is the one kind of file that holds several statements: its header names the migration
and every statement is a CREATE preceded by a comment naming its table.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

import sql

FILES = sql.files()
HEADER = re.compile(r"^-- (?P<name>[\w.]+): \S")


def qualified_name(create: exp.Create) -> str:
    table = create.this.find(exp.Table)
    return ".".join(p for p in (table.db, table.name) if p)


def parse(path: Path) -> tuple[re.Match[str] | None, list[exp.Expression]]:
    text = path.read_text()
    statements = [s for s in sqlglot.parse(text, read="duckdb") if s is not None]
    return HEADER.match(text.splitlines()[0] if text else ""), statements


def test_every_sql_file_the_code_loads_is_one_of_these() -> None:
    """The files the code runs (literal `load("dir/name")` names, and those it builds from the ToolWOZ and τ-bench
    table lists and the report's sections) exist, so the checks below parse every one of them."""
    from factory.present.report import SECTIONS
    from taubench import data as tau_data
    from toolwoz.tables import TOOLWOZ_TABLES

    names = {p.relative_to(sql.ROOT).with_suffix("").as_posix() for p in FILES}
    code = [p for d in ("factory", "search", "toolwoz", "taubench", "train", "sql")
            for p in (sql.ROOT.parent / d).rglob("*.py")]
    literal = {name for path in code for name in re.findall(r'\bload\(\s*"([\w/]+)"\s*\)', path.read_text())}
    assert len(literal) >= 20, sorted(literal)  # the pattern still finds the calls
    built = {f"toolwoz/{t}" for t in (*TOOLWOZ_TABLES, "tasks")} | {f"queries/{s.query}" for s in SECTIONS} | \
        {f"taubench/taubench_{d}_{t}" for d in tau_data.DOMAINS for t in tau_data.TABLES[d]}
    assert literal | built <= names, sorted((literal | built) - names)


@pytest.mark.parametrize("path", [p for p in FILES if p.parent.name != "schema"],
                         ids=lambda p: str(p.relative_to(sql.ROOT)))
def test_sql_file_is_one_named_statement(path: Path) -> None:
    header, statements = parse(path)
    assert len(statements) == 1
    assert header, f"{path.name} must start with '-- <object name>: <what it holds>'"
    statement = statements[0]
    if isinstance(statement, exp.Create):
        assert statement.this.find(exp.Table).name == path.stem
        assert header["name"] == qualified_name(statement)
    elif path.parent.name == "maintenance":
        assert isinstance(statement, exp.Update) and header["name"] == path.stem
    else:  # a named query: the header names the file
        assert isinstance(statement, exp.Query)
        assert header["name"] == path.stem


@pytest.mark.parametrize("path", [p for p in FILES if p.parent.name == "schema"], ids=lambda p: p.name)
def test_migration_names_itself_and_every_table(path: Path) -> None:
    header, statements = parse(path)
    assert re.fullmatch(r"\d{4}_\w+", path.stem)
    assert header and header["name"] == path.stem
    assert statements
    altered = None
    for statement in statements:
        names = [c.strip().split(":")[0] for c in statement.comments or []]
        if isinstance(statement, exp.Update):  # a backfill of the column the statement before added
            assert statement.this.name == altered, "an UPDATE only backfills the column added just before"
            continue
        assert isinstance(statement, (exp.Create, exp.Alter))
        if isinstance(statement, exp.Alter):  # ADD COLUMN: '-- table.column: ...'
            (column,) = [a.this.name for a in statement.args["actions"]]
            altered = statement.this.name
            assert f"{altered}.{column}" in names, f"no '-- {altered}.{column}: ...' comment"
            continue
        altered = None
        assert qualified_name(statement) in names, f"no '-- {qualified_name(statement)}: ...' comment"
