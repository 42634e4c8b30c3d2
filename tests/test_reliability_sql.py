"""Reliability of `factory sql` (issue 25): `-o` never writes the warehouse or a companion file of it, by any
spelling and in any format, and replaces an existing file only with --force; the read-only sandbox runs exactly the
statements its rule allows (factory/store/sandbox.py) and refuses the rest with one line, exit 2. After every attempt the
warehouse's sha256 is what it was.

Most cases call the command in this process (click's runner: the same command code, a few ms each); the first
cases run the real `factory` entry point in a subprocess for its one-line error and exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from factory.cli import cli
from tests.conftest import one_line_error, run


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sql(*args: str):
    """`factory sql ARGS` in this process (one-line errors: FACTORY_DEBUG unset)."""
    return CliRunner(env={"FACTORY_DEBUG": None}).invoke(cli, ["sql", *args])


def refused_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- -o FILE ----------------------------------------------------------------------------------------------------

def test_o_onto_the_warehouse_through_the_real_entry_point(small, tmp_path) -> None:
    before = sha(small)
    for args in (["-o", str(small)], ["--format", "parquet", "-o", str(small), "--force"],
                 ["-o", f"{small}.wal", "--format", "csv"]):
        result = run("sql", "select 1 as a", "-w", str(small), *args)
        assert result.returncode == 2
        assert "is the warehouse" in one_line_error(result)
        assert sha(small) == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.duckdb"]  # no .wal made


# case -> arguments after the query, run in the warehouse's folder (W: its absolute path). There, link.duckdb is a
# symbolic link to w.duckdb, hard.duckdb a hard link, to-wal.csv a dangling link to w.duckdb.wal, sub/ a folder.
SPELLINGS = {
    "same path": ["-o", "W"],
    "relative": ["-o", "w.duckdb"],
    "dot-dot": ["-o", "sub/../w.duckdb"],
    "symlink": ["-o", "link.duckdb", "--force"],
    "hard link": ["-o", "hard.duckdb", "--force"],
    ".wal": ["-o", "w.duckdb.wal"],
    ".lock (exists)": ["-o", "w.duckdb.lock", "--force"],
    ".tmp": ["-o", "W.tmp"],
    "symlink to .wal": ["-o", "to-wal.csv", "--force", "--format", "csv"],
    "-w via symlink, -o the file": ["-w", "link.duckdb", "-o", "w.duckdb", "--force"],
    "-w via symlink, -o its .wal": ["-w", "link.duckdb", "-o", "link.duckdb.wal"],
    "with --write": ["--write", "-o", "w.duckdb", "--force"],
    **{f"--format {fmt} --force": ["--format", fmt, "-o", "W", "--force"]
       for fmt in ("table", "csv", "json", "jsonl", "parquet")},
}


@pytest.mark.parametrize("case", SPELLINGS)
def test_o_never_writes_the_warehouse_or_its_companions(small, monkeypatch, case) -> None:
    monkeypatch.chdir(small.parent)
    os.mkdir("sub")
    os.symlink("w.duckdb", "link.duckdb")
    os.symlink("w.duckdb.wal", "to-wal.csv")  # dangling: writing through it would create the warehouse's .wal
    os.link("w.duckdb", "hard.duckdb")
    args = [str(small) if a == "W" else a.replace("W.", f"{small}.") for a in SPELLINGS[case]]
    before, listing = sha(small), sorted(os.listdir("."))
    result = sql("select 41 + 1 as answer", *([] if "-w" in args else ["-w", str(small)]), *args)
    assert "is the warehouse" in refused_line(result)
    assert sha(small) == before
    assert sorted(os.listdir(".")) == listing  # no .wal, .tmp or other file made
    assert not os.path.exists("w.duckdb.wal")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_an_existing_file_only_with_force(small, tmp_path, fmt) -> None:
    target = tmp_path / f"result.{fmt}"
    target.write_text("mine\n")
    before = sha(small)
    refused = sql("select 42 as answer", "--format", fmt, "-o", str(target), "-w", str(small))
    assert refused_line(refused) == f"Error: -o {target} exists; pass --force to replace it"
    assert target.read_text() == "mine\n"
    replaced = sql("select 42 as answer", "--format", fmt, "-o", str(target), "--force", "-w", str(small))
    assert replaced.exit_code == 0, replaced.output
    if fmt == "parquet":
        assert pq.read_table(target).to_pylist() == [{"answer": 42}]
    elif fmt == "json":
        assert json.loads(target.read_text()) == [{"answer": 42}]
    else:
        assert target.read_text().splitlines() == ['"answer"', "42"]
    assert sha(small) == before


def test_a_new_file_is_written_and_a_missing_folder_named(small, tmp_path) -> None:
    fresh = tmp_path / "fresh.jsonl"
    written = sql("select 1 as a union all select 2", "--format", "jsonl", "-o", str(fresh), "-w", str(small))
    assert written.exit_code == 0, written.output
    assert [json.loads(line) for line in fresh.read_text().splitlines()] == [{"a": 1}, {"a": 2}]
    missing = sql("select 1", "-o", str(tmp_path / "nope" / "x.csv"), "-w", str(small))
    assert "folder" in refused_line(missing) and "does not exist" in refused_line(missing)


def test_force_has_an_example_in_help() -> None:
    result = CliRunner().invoke(cli, ["sql", "--help"])
    assert result.exit_code == 0
    example = result.output.split("Example:")[1]
    assert "--force" in example and "-o" in example


# -- the read-only sandbox's statement rule ---------------------------------------------------------------------

ALLOWED = [
    "select count(*) from runs", "with r as (select * from runs) select run_id from r", "values (1, 'a')",
    "from runs", "table runs", "describe runs", "show tables", "summarize runs", "explain select * from runs",
    "explain analyze select count(*) from rollouts", "explain (format json) select 1", "pragma table_info('runs')",
    "pragma show_tables", "pragma database_size", "pragma storage_info('runs')", "pragma version",
    "call pragma_table_info('runs')", "call duckdb_tables()", "set variable x = 41; select getvariable('x') + 1",
    "reset variable x", "select 'checkpoint()' as s, 1 as checkpoint -- checkpoint()",
    "select * from duckdb_settings() where name = 'threads'",
]

REFUSED = [
    ("checkpoint", "CHECKPOINT is maintenance"), ("force checkpoint", "CHECKPOINT is maintenance"),
    ("call checkpoint()", "checkpoint() is maintenance"), ("select * from force_checkpoint()", "maintenance"),
    ("explain analyze checkpoint", "CHECKPOINT is maintenance"),
    ("load json", "LOAD json: no extension"), ("load parquet", "LOAD parquet: no extension"),
    ("load icu", "LOAD icu: no extension"), ("install json", "INSTALL json: no extension"),
    ("update extensions", "kind this duckdb cannot name"), ("select 1; load json", "LOAD json"),
    ("vacuum", "VACUUM is not a reading"), ("analyze", "ANALYZE is not a reading"),
    ("pragma enable_profiling", "PRAGMA enable_profiling does not report"),
    ("pragma threads = 1", "PRAGMA threads does not report"),
    ("set threads = 1", "SET is not a reading"), ("reset threads", "RESET is not a reading"),
    ("set search_path = 'main'", "SET is not a reading"), ("use memory", "USE is not a reading"),
    ("attach ':memory:' as m", "ATTACH is not a reading"), ("detach w", "DETACH is not a reading"),
    ("begin", "BEGIN is not a reading"), ("prepare p as select 1", "PREPARE is not a reading"),
    ("create temp table t (a int)", "CREATE is not a reading"), ("insert into runs (run_id) values ('x')", "INSERT"),
    ("copy runs to 'OUT/r.csv'", "COPY is not a reading"), ("export database 'OUT/db'", "EXPORT is not a reading"),
    ("explain analyze delete from runs", "DELETE is not a reading"),
]


@pytest.mark.parametrize("statement", ALLOWED)
def test_reading_statements_run(small, statement) -> None:
    before = sha(small)
    result = sql(statement, "--json", "-w", str(small))
    assert result.exit_code == 0, result.output
    json.loads(result.stdout or "[]")
    assert sha(small) == before


def test_set_variable_is_read_back(small) -> None:
    result = sql("set variable x = 41; select getvariable('x') + 1 as y", "--json", "-w", str(small))
    assert json.loads(result.stdout) == [{"y": 42}]


@pytest.mark.parametrize("statement, fragment", REFUSED, ids=[s for s, _ in REFUSED])
def test_other_statements_are_refused_with_one_line(small, tmp_path, statement, fragment) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = sha(small)
    line = refused_line(sql(statement.replace("OUT", str(out)), "-w", str(small)))
    assert fragment in line and "--write opens the warehouse read-write" in line
    assert sha(small) == before and list(out.iterdir()) == []


def test_allow_files_lets_copy_write_a_file_but_no_extension_load(small, tmp_path) -> None:
    target = tmp_path / "runs.csv"
    copied = sql(f"copy (select run_id from runs) to '{target}'", "--allow-files", "-w", str(small))
    assert copied.exit_code == 0, copied.output
    assert target.read_text().splitlines() == ["run_id", "eval-a"]
    assert "LOAD json" in refused_line(sql("load json", "--allow-files", "-w", str(small)))


def test_write_lifts_the_rule(small) -> None:
    for statement in ("checkpoint", "create table notes (t varchar)", "load json"):
        result = sql(statement, "--write", "-w", str(small))
        assert result.exit_code == 0, result.output
    assert sql("select count(*) as n from notes", "--json", "-w", str(small)).stdout.strip().startswith("[")
