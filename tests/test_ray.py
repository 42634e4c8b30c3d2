"""`factory harvest --ray`: the same rows as a local harvest, a killed worker, bad addresses, a missing extra."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.conftest import (
    FACTORY,
    check_consistent,
    free_port,
    one_line_error,
    query,
    read_until,
    run,
    wait_for_rollouts,
)

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'josh-factory[ray]'; make install does)")

# Columns that record when or how fast, not what: they differ between any two runs.
VOLATILE = {"created_at", "finished_at", "started_at", "latency_ms", "latency_us"}
TABLES = ("runs", "rollouts", "nodes", "messages", "tool_calls", "rewards")


def rows(path: Path, table: str) -> list[str]:
    """Every row of `table` without the volatile columns, sorted (as text, so NULLs and lists compare)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = [c for (c,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND "
                                             "schema_name = 'main' ORDER BY column_index", [table]).fetchall()
                   if c not in VOLATILE]
        return sorted(repr(r) for r in con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall())
    finally:
        con.close()


def assert_same_rows(a: Path, b: Path) -> None:
    for table in TABLES:
        left, right = rows(a, table), rows(b, table)
        assert len(left) == len(right), table
        assert left == right, f"{table} differs: {next(x for x, y in zip(left, right) if x != y)[:300]}"


def harvest_args(wh: Path, *extra: str, limit: int = 8, split: str = "val_harvest") -> list[str]:
    return ["harvest", "--agent", "teacher", "--split", split, "--limit", str(limit), "--beam", "4",
            *extra, "-w", str(wh)]


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])  # the field after the state


def worker_pids(driver: int) -> list[int]:
    """The driver's descendants whose title Ray set to `ray::HarvestWorker...` (our actors, not anyone else's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(b"ray::HarvestWorker"):
                continue
            pid = int(entry.name)
            while pid > 1 and pid != driver:
                pid = _parent(pid)
        except (OSError, ValueError):
            continue
        if pid == driver:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_ray_harvest_writes_the_rows_of_a_local_harvest(wh, tmp_path):
    local = tmp_path / "local.duckdb"
    shutil.copy(wh, local)
    by_ray = run(*harvest_args(wh, "--ray", "--ray-workers", "2", "--json"))
    assert by_ray.returncode == 0, by_ray.stderr
    alone = run(*harvest_args(local, "--json"))
    assert alone.returncode == 0, alone.stderr
    summary = json.loads(by_ray.stdout)
    assert summary["run_id"] == json.loads(alone.stdout)["run_id"] and summary["rollouts"] == 8
    assert_same_rows(wh, local)  # run ids, seeds, every node, message, call and reward
    assert query(wh, "select count(distinct seed) = count(*) from nodes") == [(True,)]
    check_consistent(wh)
    # resume: the same command again finds the run complete and adds nothing
    again = run(*harvest_args(wh, "--ray", "--ray-workers", "2", "--json"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed_skipped"] == 8 and json.loads(again.stdout)["new_rollouts"] == 0
    assert_same_rows(wh, local)


@pytest.mark.slow
def test_killed_worker_loses_only_its_rollouts_and_a_rerun_completes(wh, template, tmp_path):
    limit = 24
    args = harvest_args(wh, "--ray", "--ray-workers", "2", "--concurrency", "2", "--beam", "8", limit=limit,
                        split="synth")
    proc = subprocess.Popen([*FACTORY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FACTORY_DEBUG": ""})
    try:
        # Printed once both workers are up, before any rollout is handed out: one of them is frozen from here on,
        # so the two rollouts it is handed (the queue is longer than both workers' shares) never come back.
        read_until(proc.stderr, "Ray workers,", timeout=600)
        victims = worker_pids(proc.pid)
        assert len(victims) == 2, victims
        os.kill(victims[0], signal.SIGSTOP)
        wait_for_rollouts(wh, proc, 3, timeout=600)  # the other worker carries on
        os.kill(victims[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    error = one_line_error(subprocess.CompletedProcess(args, proc.returncode, "", stderr))
    assert "1 of 2 Ray workers died" in error and "; 2 rollouts of run" in error
    assert "run the same command again" in error
    committed = query(wh, "select count(*) from rollouts")[0][0]
    assert committed == limit - 2  # the survivor did the rest of the queue; the victim's two in flight are missing
    assert query(wh, "select status from runs") == [("failed",)]
    check_consistent(wh)
    rerun = run(*args, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["resumed_skipped"] == committed
    assert query(wh, "select count(*), count(distinct task_id) from rollouts") == [(limit, limit)]
    check_consistent(wh)
    local = tmp_path / "local.duckdb"  # the same settings without Ray, in one go
    shutil.copy(template, local)
    alone = run(*harvest_args(local, "--concurrency", "2", "--beam", "8", limit=limit, split="synth"))
    assert alone.returncode == 0, alone.stderr
    assert_same_rows(wh, local)


def test_ray_address_that_does_not_answer_is_a_one_line_error(wh):
    port = free_port()  # nothing listens there; ray.init alone would retry for a minute, the preflight fails at once
    result = run(*harvest_args(wh, "--ray", f"127.0.0.1:{port}"), timeout=60)
    assert result.returncode == 2
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in one_line_error(result)
    assert query(wh, "select count(*) from runs") == [(0,)]


def test_missing_ray_names_the_extra(wh, tmp_path):
    shadow = tmp_path / "no-ray" / "ray"  # a `ray` that fails to import, first on the path: as if not installed
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    path = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    result = run(*harvest_args(wh, "--ray"), env={"PYTHONPATH": path})
    assert result.returncode == 2
    assert one_line_error(result) == "Error: --ray needs Ray, which is not installed: pip install 'josh-factory[ray]'"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_worker_pool_returns_arrow_rows_equal_to_a_local_rollout(local_ray, env):
    from functools import partial

    from factory.store.writer import to_arrow
    from search.backends import load_backend
    from search.josh import SearchConfig, branch_seed, run_rollout
    from search.ray_runner import Finished, Job, WorkerPool, WorkerSetup
    from search.runner import ToolRunner
    from toolwoz import tables
    from toolwoz.environment import ToolWOZ
    from toolwoz.user_rule import RuleUser

    search = SearchConfig(beam=4, max_turns=6, temperature=1.0)
    setup = WorkerSetup(agent="teacher", base_url=None, search=search, toolwoz=tables.export_arrow(env.con),
                        make_users=partial(_rule_users, search.seed), concurrency=4)
    tasks = sorted((t for t in env.tasks.values() if "val_harvest" in t.splits), key=lambda t: t.task_id)[:6]
    jobs = [Job(f"r/{t.task_id}/0", "r", t.task_id, 0) for t in tasks]
    pool = WorkerPool(setup, workers=2)
    try:
        assert len({i["pid"] for i in pool.infos}) == 2 and pool.engine == {}
        events = list(pool.run(jobs, inflight=2))
    finally:
        pool.shutdown()
    assert all(isinstance(e, Finished) for e in events) and {e.worker for e in events} == {0, 1}
    assert sorted(e.job.rollout_id for e in events) == sorted(j.rollout_id for j in jobs)
    agent, tools = load_backend("teacher", rows=env.rows), ToolRunner(ToolWOZ(env))
    for event in events:
        task = env.tasks[event.job.task_id]
        local = asyncio.run(run_rollout(task, agent, RuleUser(task.goal, branch_seed(0, task.task_id, 0, -2)), tools,
                                        search, rollout_id=event.job.rollout_id, run_id="r", sample=0)).tables()
        for name, table in event.tables.items():  # what the worker sent == what the writer builds locally
            expected = to_arrow(local[name])
            assert table.schema == expected.schema, name
            drop = [c for c in table.column_names if c in VOLATILE]
            assert table.drop_columns(drop).to_pylist() == expected.drop_columns(drop).to_pylist(), name


def _rule_users(seed: int, user_backend):
    from search.josh import branch_seed
    from toolwoz.user_rule import RuleUser

    return lambda task, sample: RuleUser(task.goal, branch_seed(seed, task.task_id, sample, -2))
