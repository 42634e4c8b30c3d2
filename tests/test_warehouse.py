"""The warehouse: schema migration, one writer at a time, atomic appends, readers during a run."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import textwrap

import duckdb
import pytest

import sql
from factory.errors import UserError, WarehouseBusy
from factory.store import runs, warehouse
from factory.store.sandbox import sandbox_config
from factory.store.writer import Writer, to_arrow
from tests.conftest import query, wait_for

TABLES = {"runs", "rollouts", "nodes", "messages", "tool_calls", "rewards", "tasks", "_factory_migrations"}


def test_writer_creates_schema_and_views_once(tmp_path):
    path = tmp_path / "w.duckdb"
    for _ in range(2):
        with Writer(path, "test"):
            pass
    con = duckdb.connect(str(path), read_only=True)
    names = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
    views = {r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()}
    migrations = con.execute("select name from _factory_migrations").fetchall()
    con.close()
    assert TABLES <= names
    assert set(sql.views_in_order()) <= views
    assert migrations == [(p.stem,) for p in sorted((sql.ROOT / "schema").glob("*.sql"))]


def test_a_current_warehouse_is_not_prepared_again(tmp_path):
    """Opening a writer costs one query once the views are current; changed SQL files re-create them."""
    path = tmp_path / "w.duckdb"
    with Writer(path, "test"):
        pass
    con = duckdb.connect(str(path))
    assert con.execute("SELECT fingerprint FROM _factory_views").fetchall() == [(sql.fingerprint(),)]
    con.execute("DROP VIEW harvest_summary")  # a mark: a writer that re-created the views would restore it
    con.close()
    with Writer(path, "test"):
        pass
    views = "SELECT count(*) FROM duckdb_views() WHERE view_name = 'harvest_summary'"
    assert query(path, views) == [(0,)]
    con = duckdb.connect(str(path))
    con.execute("UPDATE _factory_views SET fingerprint = 'older sql files'")  # as if the package's SQL changed
    con.close()
    with Writer(path, "test"):
        pass
    assert query(path, views) == [(1,)]
    assert query(path, "SELECT fingerprint FROM _factory_views") == [(sql.fingerprint(),)]


def test_one_definition_of_success(tmp_path):
    """`is_success` (sql/macros) decides 100% Success for run_scores and paired_rewards alike."""
    path = tmp_path / "w.duckdb"
    rewards = {"T1.json": 1.0, "T2.json": 0.9999999, "T3.json": 0.999, "T4.json": 0.5}
    with Writer(path, "test") as writer:
        for run_id in ("eval-a", "eval-b"):
            writer.append({"runs": [{"run_id": run_id, "kind": "eval", "created_at": "2026-01-01 00:00:00",
                                     "status": "done", "config": "{}"}],
                           "rollouts": [{"rollout_id": f"{run_id}/{t}/0", "run_id": run_id, "task_id": t,
                                         "sample": 0, "status": "done", "reward": r, "goals_total": 1,
                                         "goals_done": int(r), "n_nodes": 1, "n_steps": 1}
                                        for t, r in rewards.items()]})
    assert query(path, "SELECT success_rate FROM run_scores WHERE run_id = 'eval-a'") == [(0.5,)]
    compared = runs.compare(str(path), "eval-a", "eval-b", resamples=100)
    assert compared["success_a"] == compared["success_b"] == 0.5


def test_views_are_created_after_the_views_they_read():
    order = sql.views_in_order()
    assert sorted(order) == sorted(sql.view_reads())  # every view, once
    assert order.index("run_scores") < order.index("eval_summary")
    for view, reads in sql.view_reads().items():
        assert all(order.index(read) < order.index(view) for read in reads), (view, sorted(reads))
    assert any(sql.view_reads().values())  # some view reads another: the order is not vacuous


def test_second_writer_is_refused_naming_the_first(tmp_path):
    path = tmp_path / "w.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from factory.store.writer import Writer
        with Writer({str(path)!r}, "factory harvest --split val"):
            print("ready", flush=True)
            sys.stdin.read()  # until killed
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(WarehouseBusy, match=r"`factory harvest --split val` \(PID \d+"):
            with Writer(path, "second"):
                pass
        # Readers are never refused while the writer is between write sessions.
        con = warehouse.connect(path, read_only=True)
        assert con.execute("select count(*) from runs").fetchall() == [(0,)]
        con.close()
    finally:
        holder.kill()
        holder.wait()
    # kill -9 releases the lock: the next writer gets in.
    with Writer(path, "after"):
        pass


def test_append_is_one_transaction(tmp_path):
    path = tmp_path / "w.duckdb"
    with Writer(path, "test") as writer:
        run = {"run_id": "r1", "kind": "eval", "created_at": "2026-01-01 00:00:00", "status": "running",
               "config": "{}"}
        with pytest.raises(duckdb.Error):
            # the second table's row breaks a NOT NULL constraint: the first insert must not stay
            writer.append({"runs": [run], "rollouts": [{"rollout_id": "x"}]})
        with writer.session() as con:
            assert con.execute("select count(*) from runs").fetchall() == [(0,)]
        writer.append({"runs": [run]})
        with writer.session() as con:
            assert con.execute("select run_id, status from runs").fetchall() == [("r1", "running")]


def test_reader_waits_for_a_short_write_session(tmp_path):
    path = tmp_path / "w.duckdb"
    with Writer(path, "test"):
        pass
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys
        con = duckdb.connect({str(path)!r})
        print("open", flush=True)
        sys.stdin.readline()
        con.close()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(duckdb.IOException, match="lock"):  # the session holds the file
            duckdb.connect(str(path), read_only=True)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reader = pool.submit(warehouse.connect, path, read_only=True, wait_s=120)
            # The session ends only once the reader has met its lock and backs off (its delay doubled)
            wait_for(lambda: _retrying(reader), "the reader retrying", 60, poll_s=0.01)
            holder.stdin.write("close\n")
            holder.stdin.flush()
            con = reader.result()
        assert con.execute("select count(*) from runs").fetchall() == [(0,)]
        con.close()
    finally:
        holder.stdin.close()
        holder.wait()


def _retrying(reader: concurrent.futures.Future) -> bool:
    """Is `reader` (a `warehouse.connect` in a pool thread) backing off after a lock conflict?"""
    assert not reader.done(), reader.result()
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code is warehouse.connect.__code__ and frame.f_locals.get("delay", 0) > 0.02:
                return True
            frame = frame.f_back
    return False


def test_bad_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        warehouse.connect(tmp_path / "missing" / "w.duckdb")
    with pytest.raises(UserError, match="no warehouse at"):
        warehouse.connect(tmp_path / "absent.duckdb", read_only=True)
    with pytest.raises(UserError, match="does not exist"):
        with Writer(tmp_path / "missing" / "w.duckdb"):
            pass


def test_rows_with_different_keys_keep_every_column():
    table = to_arrow([{"a": 1}, {"a": 2, "b": "x"}])
    assert table.column_names == ["a", "b"]
    assert table.to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def _rollout(i: int, **extra) -> dict:
    return {"rollout_id": f"r/t{i}/0", "run_id": "r", "task_id": f"t{i}", "sample": 0, "status": "done",
            "reward": i / 10, "goals_total": 1, "goals_done": 0, "n_nodes": 0, "n_steps": 0, **extra}


def test_grouped_writes_commit_every_ready_rollout_in_one_transaction(tmp_path):
    path = tmp_path / "w.duckdb"
    with Writer(path, "test") as writer:
        with writer.grouped(max_delay_s=0.5) as group:
            for i in range(30):
                # rows with different keys and an Arrow table (what Ray workers send) in the same group
                rows = {"rollouts": [_rollout(i, end_reason="max_steps") if i % 2 else _rollout(i)]}
                group.append(rows if i % 3 else {"rollouts": to_arrow(rows["rollouts"])})
        assert group.committed == 30 and 1 <= group.sessions <= 3
    assert query(path, "select count(*), count(end_reason), round(sum(reward), 1) from rollouts") == [(30, 15, 43.5)]


def test_a_failed_group_commits_nothing_of_it_and_stops_the_harvest(tmp_path):
    path = tmp_path / "w.duckdb"
    with Writer(path, "test") as writer:
        with pytest.raises(duckdb.Error):
            with writer.grouped(max_delay_s=0.2) as group:
                group.append({"rollouts": [_rollout(1)]})
                group.append({"rollouts": [{"rollout_id": "broken"}]})  # NOT NULL columns missing
                # the failure surfaces here (its group failed already) or at the exit (rollout 2 joined that group)
                group.append({"rollouts": [_rollout(2)]})
    assert query(path, "select count(*) from rollouts") == [(0,)]


def test_a_reader_gets_in_while_grouped_writes_run(tmp_path):
    """A harvest's writer thread commits a group now and then; a reader opening the file meanwhile waits
    at most one write session (`connect` retries a lock conflict for 5 s) and sees only whole groups."""
    path = tmp_path / "w.duckdb"
    with Writer(path, "test"):
        pass
    stop = tmp_path / "stop"
    # The writer appends until the reader has seen three different counts (synchronised on rows, not on time).
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time
        from factory.store.writer import Writer
        from tests.test_warehouse import _rollout
        i = 0
        with Writer({str(path)!r}, "factory harvest") as w, w.grouped(max_delay_s=0.1) as group:
            print("writing", flush=True)
            while not os.path.exists({str(stop)!r}) and i < 100_000:
                group.append({{"rollouts": [_rollout(i)]}})
                i += 1
                time.sleep(0.01)
        print(i, flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        counts = []
        while len(set(counts) - {0}) < 3 and writer.poll() is None:
            con = warehouse.connect(path, read_only=True)
            counts.append(con.execute("select count(*) from rollouts").fetchall()[0][0])
            con.close()
        stop.touch()
        appended = int(writer.stdout.readline())
    finally:
        stop.touch()
        writer.wait()
    assert writer.returncode == 0
    assert len(set(counts) - {0}) >= 3 and counts == sorted(counts)
    assert query(path, "select count(*) from rollouts") == [(appended,)]


def test_a_warehouse_of_before_environments_migrates_on_open(tmp_path):
    """A warehouse made when 0001 was the only migration: opening it for writing applies 0002 (its eval and
    harvest runs were ToolWOZ runs; training runs have no environment) and keeps every row."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(sql.load("schema/0001_warehouse"))
    con.execute("CREATE TABLE _factory_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
    con.execute("INSERT INTO _factory_migrations VALUES ('0001_warehouse', now())")
    for run_id, kind in (("eval-1", "eval"), ("harvest-1", "harvest"), ("train-1", "train")):
        con.execute("INSERT INTO runs (run_id, kind, created_at, status, config) VALUES (?, ?, now(), 'done', '{}')",
                    [run_id, kind])
    con.execute("INSERT INTO rollouts (rollout_id, run_id, task_id, sample, status, reward, goals_total, goals_done, "
                "n_nodes, n_steps) VALUES ('harvest-1/t/0', 'harvest-1', 't', 0, 'done', 0.5, 2, 1, 1, 1)")
    con.close()
    with Writer(str(path)):
        pass
    assert query(path, "select run_id, env from runs order by run_id") == [
        ("eval-1", "toolwoz"), ("harvest-1", "toolwoz"), ("train-1", None)]
    assert query(path, "select reward, episode_reward from rollouts") == [(0.5, None)]
    assert query(path, "select count(*) from state_changes") == [(0,)]
    assert query(path, "select average_reward, goal_reward from run_scores where run_id = 'harvest-1'") == [(0.5, 0.5)]


def test_no_connection_prints_duckdbs_progress_bar(tmp_path):
    """DuckDB draws a progress bar on stdout for a query over 2 s (a loop under load printed one into its --json
    output): every warehouse connection, read or write, turns it off."""
    path = tmp_path / "w.duckdb"
    setting = "SELECT current_setting('enable_progress_bar')"
    with Writer(path, "test") as writer, writer.session() as con:
        assert con.execute(setting).fetchone() == (False,)
    with warehouse.opened(str(path), read_only=True) as con:
        assert con.execute(setting).fetchone() == (False,)
    with warehouse.opened(str(path), read_only=True, config=sandbox_config(allow_files=False)) as con:
        assert con.execute(setting).fetchone() == (False,)  # `factory sql`: still locked after that
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute("SET enable_progress_bar = true")
