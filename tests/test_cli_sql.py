"""`factory sql` and `factory runs` end to end on a temporary warehouse."""

from __future__ import annotations

import json

import duckdb
import pyarrow.parquet as pq
import pytest

from factory.store.writer import Writer
from tests.conftest import one_line_error, run


@pytest.fixture()
def two_runs(tmp_path):
    """A warehouse with the schema and two runs' worth of rollouts, written through the real writer."""
    path = tmp_path / "w.duckdb"
    with Writer(path, "test") as writer:
        for run_id, rewards in (("eval-a", [1.0, 0.5, 0.0]), ("eval-b", [1.0, 1.0, 0.5])):
            writer.append({"runs": [{"run_id": run_id, "kind": "eval", "created_at": "2026-01-01 00:00:00",
                                     "status": "done", "config": "{}", "agent_model": "teacher", "split": "val"}],
                           "rollouts": [{"rollout_id": f"{run_id}/T{i}.json/0", "run_id": run_id,
                                         "task_id": f"T{i}.json", "sample": 0, "status": "done", "reward": r,
                                         "goals_total": 2, "goals_done": int(r * 2), "n_nodes": 3, "n_steps": 2}
                                        for i, r in enumerate(rewards)]})
    return path


def test_query_formats(two_runs, tmp_path):
    q = "select run_id, average_reward, success_rate from eval_summary order by run_id"
    as_json = run("sql", q, "--format", "json", "-w", str(two_runs))
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [
        {"run_id": "eval-a", "average_reward": 0.5, "success_rate": 0.3333},
        {"run_id": "eval-b", "average_reward": 0.8333, "success_rate": 0.6667},
    ]
    as_csv = run("sql", q, "--format", "csv", "-w", str(two_runs))
    assert as_csv.stdout.splitlines()[0] == '"run_id","average_reward","success_rate"'
    assert len(as_csv.stdout.splitlines()) == 3
    as_jsonl = run("sql", q, "--format", "jsonl", "-w", str(two_runs))
    assert [json.loads(line)["run_id"] for line in as_jsonl.stdout.splitlines()] == ["eval-a", "eval-b"]
    parquet = tmp_path / "out.parquet"
    assert run("sql", q, "--format", "parquet", "-o", str(parquet), "-w", str(two_runs)).returncode == 0
    assert pq.read_table(parquet).num_rows == 2
    table = run("sql", q, "-w", str(two_runs))
    assert "eval-b" in table.stdout and "(2 rows)" in table.stdout


def test_params_stdin_and_file(two_runs, tmp_path):
    q = "select count(*) as n from rollouts where reward >= getvariable('min_reward')"
    result = run("sql", q, "-p", "min_reward", "0.5", "--format", "json", "-w", str(two_runs))
    assert json.loads(result.stdout) == [{"n": 5}]
    piped = run("sql", "-", "--format", "json", "-w", str(two_runs), input="select 41 + 1 as answer")
    assert json.loads(piped.stdout) == [{"answer": 42}]
    f = tmp_path / "q.sql"
    f.write_text("select count(*) as n from runs")
    assert json.loads(run("sql", "-f", str(f), "--format", "json", "-w", str(two_runs)).stdout) == [{"n": 2}]
    assert json.loads(run("sql", "-f", str(f), "--json", "-w", str(two_runs)).stdout) == [{"n": 2}]  # the short form
    own = run("sql", "select getvariable('mine') as v", "-p", "mine", "7", "--json", "-w", str(two_runs))
    assert json.loads(own.stdout) == [{"v": 7}]  # a variable the query itself reads is known


@pytest.mark.parametrize("args, fragment", [
    (["select * from nope"], "nope does not exist"),
    (["selec 1"], "syntax error"),
    (["create table x (a int)"], "read-only"),
    (["select 1", "--format", "parquet"], "needs -o FILE"),
    (["select 1", "-p", "bad name", "1"], "not an identifier"),
    (["select count(*) from sft", "-p", "min_rewrad", "0.5"], "unknown parameter 'min_rewrad'"),
    (["select 1", "--json", "--format", "csv"], "contradict"),
])
def test_bad_sql_is_one_line_exit_2(two_runs, args, fragment):
    result = run("sql", *args, "-w", str(two_runs))
    assert result.returncode == 2
    assert fragment in one_line_error(result)


def test_write_flag_allows_writes(two_runs):
    assert run("sql", "create table notes (t varchar)", "--write", "-w", str(two_runs)).returncode == 0
    con = duckdb.connect(str(two_runs), read_only=True)
    assert con.execute("select count(*) from notes").fetchall() == [(0,)]
    con.close()


def test_runs_list_show_delete(two_runs):
    listed = json.loads(run("runs", "--json", "-w", str(two_runs)).stdout)
    assert {r["run_id"]: r["rollouts"] for r in listed} == {"eval-a": 3, "eval-b": 3}
    shown = json.loads(run("runs", "show", "eval-b", "-w", str(two_runs)).stdout)
    assert shown["average_reward"] == 0.8333 and shown["config"] == {}
    assert run("runs", "show", "eval-", "-w", str(two_runs)).returncode == 2  # ambiguous prefix
    deleted = run("runs", "delete", "eval-a", "--yes", "-w", str(two_runs))
    assert deleted.returncode == 0, deleted.stderr
    con = duckdb.connect(str(two_runs), read_only=True)
    assert con.execute("select distinct run_id from rollouts").fetchall() == [("eval-b",)]
    assert con.execute("select run_id from runs").fetchall() == [("eval-b",)]
    con.close()
    assert "unknown run" in one_line_error(run("runs", "show", "eval-a", "-w", str(two_runs)))


def test_tables_fit_the_terminal_and_never_cut_ids(two_runs):
    """100 columns: a wide result turns into one block per row; run ids and column names stay whole."""
    narrow = run("sql", "select * from eval_summary", "-w", str(two_runs), env={"COLUMNS": "100"})
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert max(map(len, lines)) <= 100 and "…" not in narrow.stdout
    assert any("run_id" in line and "eval-a" in line for line in lines)
    assert any("average_reward" in line and "0.5" in line for line in lines)
    wide = run("sql", "select run_id, average_reward from eval_summary", "-w", str(two_runs))
    assert "┃ run_id" in wide.stdout and "eval-b" in wide.stdout


def test_csv_writes_nested_columns_as_json(two_runs):
    result = run("sql", "select [1, 2] as xs, {'a': 'b'} as s", "--format", "csv", "-w", str(two_runs))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == '"[1, 2]","{""a"": ""b""}"'
