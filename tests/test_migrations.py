"""Warehouses an earlier version wrote migrate on open: a writer's, and a read-only command's."""

from __future__ import annotations

import fcntl
import json

import duckdb
import pytest

import sql
from factory.errors import UserError
from factory.store import warehouse
from factory.store.writer import Writer
from tests.conftest import query, run

BEAMS = {"eval-old": 1, "harvest-old": 8, "train-old": None}


def _old_warehouse(path) -> None:
    """The 0001 + 0002 schema with runs, as a writer of that version left it: `runs.beam_size`, and views that
    read it."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE _factory_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
    for name in ("0001_warehouse", "0002_environments"):
        con.execute(sql.load(f"schema/{name}"))
        con.execute("INSERT INTO _factory_migrations VALUES (?, now())", [name])
    for run_id, beam in BEAMS.items():
        kind = run_id.split("-")[0]
        con.execute("INSERT INTO runs (run_id, kind, created_at, status, config, split, beam_size, env) "
                    "VALUES (?, ?, now(), 'done', '{}', 'val', ?, ?)",
                    [run_id, kind, beam, None if kind == "train" else "toolwoz"])
        if kind != "train":
            con.execute("INSERT INTO rollouts (rollout_id, run_id, task_id, sample, status, reward, goals_total, "
                        "goals_done, n_nodes, n_steps) VALUES (?, ?, 'T1.json', 0, 'done', 1.0, 1, 1, 1, 1)",
                        [f"{run_id}/T1.json/0", run_id])
    con.execute("CREATE VIEW harvest_summary AS SELECT r.run_id, r.beam_size AS beam FROM runs AS r")
    con.execute("CREATE VIEW beams AS SELECT beam_size FROM runs")  # a view only that version had
    con.execute("CREATE TABLE _factory_views (fingerprint VARCHAR, created_at TIMESTAMP)")
    con.execute("INSERT INTO _factory_views VALUES ('older sql files', now())")
    con.close()


def _columns(path) -> set[str]:
    return {r[0] for r in query(path, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'runs'")}


def test_a_writer_migrates_an_old_warehouse_and_keeps_its_beams(tmp_path):
    path = tmp_path / "old.duckdb"
    _old_warehouse(path)
    with Writer(path, "test"):
        pass
    assert "beam" in _columns(path) and "beam_size" not in _columns(path)
    assert dict(query(path, "SELECT run_id, beam FROM runs")) == BEAMS
    assert query(path, "SELECT name FROM _factory_migrations ORDER BY name") == \
        [(p.stem,) for p in sorted((sql.ROOT / "schema").glob("*.sql"))]
    assert dict(query(path, "SELECT run_id, beam FROM harvest_summary")) == {"harvest-old": 8}  # today's view


def test_a_read_only_command_migrates_an_old_warehouse_first(tmp_path):
    path = tmp_path / "old.duckdb"
    _old_warehouse(path)
    result = run("runs", "--json", "-w", str(path))
    assert result.returncode == 0, result.stderr
    assert {r["run_id"]: r["beam"] for r in json.loads(result.stdout)} == BEAMS
    assert "beam_size" not in _columns(path)
    with warehouse.opened(path, read_only=True) as con:  # migrated once: now an ordinary read
        assert warehouse.pending_migrations(con) == [] and warehouse.is_current(con)


def test_an_old_warehouse_in_use_is_not_migrated_under_its_writer(tmp_path):
    path = tmp_path / "old.duckdb"
    _old_warehouse(path)
    with open(f"{path}.lock", "a+") as lock:  # a writer (of the earlier version) holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another process has it open"):
            warehouse.connect(path, read_only=True)
    assert "beam_size" in _columns(path) and dict(query(path, "SELECT run_id, beam_size FROM runs")) == BEAMS
