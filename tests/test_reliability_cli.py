"""Reliability of the CLI as a hostile user meets it: broken Unicode and nesting in `toolwoz call`, real errors
instead of our own, locks that readers never break, runs whose writer is gone, SIGTERM, `factory sql`'s
sandbox and verbatim output. Every case was a failure before (issue 11) and is a passing one here."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
from pathlib import Path

import duckdb
import pytest

import sql
from factory.errors import WarehouseBusy
from factory.store.writer import Writer
from tests.conftest import (
    FACTORY,
    check_consistent,
    one_line_error,
    query,
    read_until,
    run,
    wait_for,
    wait_for_rollouts,
)

# -- 1. model-written bytes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, fragment", [
    ('{"name": "\\ud800"}', "name holds characters that are not text"),
    ('{"name": "acorn guest house", "people": "\u00b2", "day": "monday", "stay": "2"}', "people must be"),
    ("[" * 50_000 + "]" * 50_000, "not usable JSON"),
    ('{"name": ' + "9" * 5000 + "}", "not usable JSON"),
])
def test_toolwoz_call_with_hostile_arguments_is_one_line_exit_2(template, arguments, fragment) -> None:
    tool = "book_hotel" if "people" in arguments else "search_hotel"
    result = run("toolwoz", "call", tool, arguments, "-w", str(template))
    assert result.returncode == 2 and fragment in one_line_error(result)


def test_writer_stores_lone_surrogates_as_replacement_characters(small) -> None:
    with Writer(small, "test") as writer:
        writer.append({"rollouts": [{"rollout_id": "eval-a/T\ud800/0", "run_id": "eval-a", "task_id": "T\ud800",
                                     "sample": 0, "status": "done", "error": "bad \udfff", "n_nodes": 0, "reward": 0.0,
                                     "goals_total": 1, "goals_done": 0, "n_steps": 0}]})
    assert query(small, "select task_id, error from rollouts") == [("T\ufffd", "bad \ufffd")]


# -- 4. real errors, user mistakes ----------------------------------------------------------------------------

def test_a_failed_commit_reports_its_own_cause_not_cannot_rollback(tmp_path) -> None:
    path = tmp_path / "c.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (a INTEGER)")
    con.execute("CHECKPOINT")
    with pytest.raises(duckdb.Error) as caught:
        with sql.transaction(con):
            con.execute("INSERT INTO t VALUES (1)")
            Path(f"{path}.wal").mkdir()  # the write-ahead log cannot be created: COMMIT fails, DuckDB rolls back
    assert "Failed to commit" in str(caught.value) and "no transaction is active" not in str(caught.value)
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]


def test_sql_param_without_query_is_a_user_mistake(small) -> None:
    result = run("sql", "-w", str(small), "-p", "select", "1", input="")
    assert result.returncode == 2 and "unknown parameter 'select'" in one_line_error(result)
    result = run("sql", "-w", str(small), input="")
    assert result.returncode == 2 and "no QUERY given" in one_line_error(result)


# -- 5. locks, dead writers, SIGTERM ----------------------------------------------------------------------------

def test_an_open_prompt_never_locks_a_writer_out(small) -> None:
    leader, follower = pty.openpty()  # a terminal: the prompt only opens on one
    proc = subprocess.Popen([*FACTORY, "sql", "-w", str(small)], stdin=follower, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        os.write(leader, b"select count(*) as n, 424242 as marker from runs\n")
        answered = read_until(proc.stdout, "424242")  # the prompt has answered and waits for the next line
        assert proc.poll() is None
        writer = Writer(small, "test", wait_s=0)
        with writer:
            writer.append({}, statements=[("UPDATE runs SET status = 'done'", [])])
        os.write(leader, b".quit\n")
        out, _ = proc.communicate(timeout=60)
        out = answered + out
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
        os.close(follower)
    assert proc.returncode == 0 and "1" in out


def test_sql_write_takes_the_writer_lock(small) -> None:
    with Writer(small, "factory harvest --test"):
        result = run("sql", "--write", "-w", str(small), "delete from runs")
        assert result.returncode == 2 and "factory harvest --test" in one_line_error(result)
    assert query(small, "select count(*) from runs") == [(1,)]
    leader, follower = pty.openpty()  # and while its prompt is open, no other writer
    proc = subprocess.Popen([*FACTORY, "sql", "--write", "-w", str(small)], stdin=follower,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: Path(f"{small}.lock").read_text(), "the prompt's writer lock", 60)
        with pytest.raises(WarehouseBusy, match="factory sql --write"):
            with Writer(small, "test"):
                pass
    finally:
        proc.kill()
        proc.wait()
        os.close(leader)
        os.close(follower)


@pytest.mark.slow
def test_killed_run_shows_interrupted_and_sigterm_is_handled(wh) -> None:
    # All 396 val_harvest tasks: more than the resumed run can finish before its signal, even when grouped
    # writes commit its first rollouts late.
    args = ["harvest", "--agent", "teacher", "--split", "val_harvest", "--beam", "4", "--concurrency", "2",
            "-w", str(wh)]
    proc = subprocess.Popen([*FACTORY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rollouts(wh, proc, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert query(wh, "select status from runs") == [("running",)]  # as the dead writer left it
    listed = run("runs", "-w", str(wh), "--json")
    assert [r["status"] for r in json.loads(listed.stdout)] == ["interrupted"]

    proc = subprocess.Popen([*FACTORY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = query(wh, "select count(*) from rollouts")[0][0]
    wait_for_rollouts(wh, proc, before + 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert query(wh, "select status from runs") == [("interrupted",)]
    check_consistent(wh)


# -- 6. the sandbox -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "select * from read_csv('/etc/passwd')", "select * from read_text('/etc/passwd')", "select * from glob('/etc/*')",
    "copy (select 1) to 'OUT/x.csv'", "export database 'OUT/export'", "set profiling_output = 'OUT/p.json'",
    "install httpfs", "select * from 'http://127.0.0.1:9/x.csv'", "attach 'OUT/other.duckdb'",
    "set enable_external_access = true", "select * from read_parquet('OUT/*.parquet')",
])
def test_sql_reaches_nothing_beyond_the_warehouse(small, tmp_path, statement) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = run("sql", "-w", str(small), statement.replace("OUT", str(out)))
    assert result.returncode == 2, result.stderr
    one_line_error(result)
    assert list(out.iterdir()) == []


def test_allow_files_opts_in_and_o_still_writes(small, tmp_path) -> None:
    csv = tmp_path / "extra.csv"
    csv.write_text("run_id,note\neval-a,hello\n")
    query_text = f"select r.run_id, e.note from runs r join read_csv('{csv}') e using (run_id)"
    assert run("sql", "-w", str(small), query_text).returncode == 2
    joined = run("sql", "-w", str(small), "--allow-files", "--json", query_text)
    assert json.loads(joined.stdout) == [{"run_id": "eval-a", "note": "hello"}]
    saved = run("sql", "-w", str(small), "select run_id from runs", "--format", "csv", "-o", str(tmp_path / "r.csv"))
    assert saved.returncode == 0 and (tmp_path / "r.csv").read_text().splitlines()[1] == '"eval-a"'


# -- 7. verbatim output ---------------------------------------------------------------------------------------

def test_table_cells_are_shown_verbatim(small) -> None:
    result = run("sql", "-w", str(small), "select '[/INST] x' as a, ':x: [bold]y' as \"[red]b\"")
    assert result.returncode == 0, result.stderr
    assert "[/INST] x" in result.stdout and ":x: [bold]y" in result.stdout and "[red]b" in result.stdout
