"""`factory eval` end to end: real CLI subprocesses, a real warehouse, the teacher, the tiny model, a real
OpenAI-compatible server; kill -9, Ctrl-C and a second writer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import duckdb
import pytest

from factory.store.writer import Writer
from tests.conftest import FACTORY, check_consistent, one_line_error, query, run, wait_for, wait_for_rollouts


@pytest.mark.slow
def test_teacher_eval_fills_the_warehouse(wh):
    result = run("eval", "--agent", "teacher", "--user", "rule", "--split", "val", "--limit", "10", "--json",
                 "-w", str(wh))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rollouts"] == 10 and summary["average_reward"] >= 0.8
    run_id = summary["run_id"]
    assert query(wh, "select kind, agent_model, backend, beam, status from runs") == \
        [("eval", "teacher", "teacher", 1, "done")]
    # beam 1: every rollout is one chain of nodes; the root holds the system prompt and the user's opening
    assert query(wh, "select count(*) from nodes where path <> range(depth + 1)") == [(0,)]
    assert query(wh, "select role from messages where node_id = 0 order by rollout_id, pos limit 2") == \
        [("system",), ("user",)]
    calls = query(wh, "select count(*), count(*) filter (ok) from tool_calls")[0]
    assert calls[0] > 10 and calls[1] > 0
    credited = query(wh, "select sum(goals_done) from rollouts")[0][0]
    assert query(wh, "select count(*) from rewards where credited") == [(credited,)]
    # the summary printed is the eval_summary view
    sql = run("sql", "select average_reward from eval_summary", "--format", "json", "-w", str(wh))
    assert json.loads(sql.stdout) == [{"average_reward": summary["average_reward"]}]
    again = run("eval", "--agent", "teacher", "--user", "rule", "--split", "val", "--limit", "10", "--json",
                "-w", str(wh))
    assert json.loads(again.stdout)["new_rollouts"] == 0 and json.loads(again.stdout)["run_id"] == run_id
    check_consistent(wh)


def _start(wh: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*FACTORY, "eval", "--agent", "teacher", "--user", "rule", "--split", "val",
                             "-w", str(wh), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FACTORY_DEBUG": ""})


@pytest.mark.slow
def test_kill_9_loses_nothing_committed_and_resumes(wh):
    proc = _start(wh, "--limit", "300")
    wait_for_rollouts(wh, proc, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = query(wh, "select count(*) from rollouts")[0][0]
    assert 5 <= committed < 300  # grouped writes commit up to 10 s of rollouts at once
    check_consistent(wh)
    resumed = run("eval", "--agent", "teacher", "--user", "rule", "--split", "val", "--limit", "300", "--json",
                  "-w", str(wh))
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["rollouts"] == 300
    assert summary["resumed_skipped"] == committed and summary["new_rollouts"] == 300 - committed
    check_consistent(wh)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_second_writer_is_refused(wh):
    # 2000 tasks one at a time: on a quiet machine the teacher does all of `val` in ~16 s at concurrency 16
    proc = _start(wh, "--split", "synth", "--concurrency", "1")
    wait_for_rollouts(wh, proc, 2)
    second = run("eval", "--agent", "teacher", "--split", "val", "--limit", "3", "-w", str(wh))
    assert second.returncode == 2
    assert "is being written by `factory eval" in one_line_error(second)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("Error: interrupted")  # the progress bar closed first
    assert "run the same command again to resume" in stderr and "Warning" not in stderr
    assert query(wh, "select status from runs") == [("interrupted",)]
    check_consistent(wh)


def test_a_stop_that_duckdb_swallows_still_stops_the_commits(wh):
    # A signal during a query: DuckDB turns the handler's KeyboardInterrupt into RuntimeError("Query
    # interrupted"), which a rollout would keep as a failed tool call. The request is remembered all the same.
    from factory import signals
    from factory.jobs import rollouts

    previous = signal.signal(signal.SIGUSR1, signals.stop_requested)
    try:
        con = duckdb.connect()
        # DuckDB tracks (without printing) the query's progress from its start: the signal goes once it runs, and
        # the query runs for seconds, far longer than DuckDB takes to look at the signal
        con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false; "
                    "SET progress_bar_time = 0")

        def stop_once_running() -> None:
            wait_for(lambda: con.query_progress() >= 0, "the query to start", timeout=60, poll_s=0.001)
            os.kill(os.getpid(), signal.SIGUSR1)

        threading.Thread(target=stop_once_running, daemon=True).start()
        with pytest.raises(RuntimeError, match="interrupted"):
            con.execute("select count(*) from range(1000000000) t(x) where x % 7 = 3").fetchall()
        assert signals.STOP_REQUESTED.is_set()
        with Writer(str(wh)) as writer, pytest.raises(KeyboardInterrupt):
            rollouts.commit(writer, {"rollouts": [{"rollout_id": "r-1"}]}, "r-1", set())
        assert query(wh, "select count(*) from rollouts") == [(0,)]
    finally:
        signals.STOP_REQUESTED.clear()
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.slow
def test_eval_against_a_real_openai_compatible_server(wh, openai_server):
    served, url = openai_server
    result = run("eval", "--agent", f"openai:{served}", "--base-url", url, "--split", "test", "--limit", "2",
                 "--max-turns", "2", "--max-new-tokens", "24", "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rollouts"] == 2
    assert query(wh, "select backend from runs") == [("openai",)]
    assert query(wh, "select count(*) > 0 from messages where role = 'assistant' and prompt_tokens > 0") == [(True,)]
    check_consistent(wh)


@pytest.mark.slow
def test_tiny_model_eval_batched(wh, model_dir):
    result = run("eval", "--agent", str(model_dir), "--split", "test", "--limit", "4", "--concurrency", "4",
                 "--max-turns", "2", "--max-new-tokens", "24", "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rollouts"] == 4
    check_consistent(wh)


def test_bad_input_is_one_line_exit_2(wh, tmp_path, model_dir):
    no_template = Path(shutil.copytree(model_dir, tmp_path / "no_template"))
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    cases = [
        (["--agent", "openai:x", "--base-url", "http://127.0.0.1:9/v1"], "cannot reach"),
        (["--agent", str(tmp_path / "no_such_model")], "no model folder"),
        (["--agent", str(no_template)], "chat template"),
        (["--agent", "teacher", "--split", "nope"], "unknown split 'nope'"),
        (["--agent", "teacher", "--user", "llm"], "--user llm needs --user-model"),
        (["--agent", "teacher", "-w", str(tmp_path / "missing" / "w.duckdb")], "does not exist"),
        (["--agent", "teacher", "--split", "train"], "split train has no tasks"),
        (["--agent", "teacher", "--protocol", "react"], "tools` protocol only"),
    ]
    for args, fragment in cases:
        full = ["eval", "--limit", "1", *args]
        if "-w" not in args:
            full += ["-w", str(wh)]
        result = run(*full)
        assert result.returncode == 2, (args, result.stderr)
        assert fragment in one_line_error(result), (args, result.stderr)


@pytest.mark.slow
def test_compare_two_runs(wh):
    for seed in ("0", "1"):
        assert run("eval", "--agent", "teacher", "--split", "val", "--limit", "6", "--seed", seed, "-w",
                   str(wh)).returncode == 0
    runs = [r[0] for r in query(wh, "select run_id from runs order by created_at")]
    result = run("eval", "compare", runs[0], runs[1], "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["tasks"] == 6 and stats["low"] <= stats["diff"] <= stats["high"]
    assert run("eval", "compare", runs[0], "nope", "-w", str(wh)).returncode == 2
