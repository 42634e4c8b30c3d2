"""τ-bench through the real CLI: `--env retail|airline` harvests and evals on a temporary warehouse, the rows they
leave (trees whose branches never see a sibling's write), kill -9 and resume, views into export and training,
an OpenAI-compatible agent and LLM user on a real local server, `factory env`, and bad input."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    FACTORY,
    ROOT,
    SHARED,
    build_warehouse,
    check_consistent,
    copy_warehouse,
    one_line_error,
    query,
    run,
    wait_for_rollouts,
)

TAUBENCH = SHARED / "taubench"
HARVEST = ("harvest", "--env", "retail", "--agent", "oracle", "--temperature", "1", "--beam", "8")


@pytest.fixture(scope="module")
def tau_template(tmp_path_factory) -> Path:
    """A warehouse with both τ-bench domains built, once; tests copy it."""
    builds = (["env", "build", "--env", env, "--taubench", str(TAUBENCH)] for env in ("retail", "airline"))
    return build_warehouse(tmp_path_factory.mktemp("tau"), *builds)


@pytest.fixture()
def tw(tau_template, tmp_path) -> Path:
    return copy_warehouse(tau_template, tmp_path)


def test_oracle_harvest_branches_keep_their_own_state(tw):
    result = run(*HARVEST, "--limit", "20", "--json", "-w", str(tw))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["env"] == "retail" and summary["rollouts"] == 20 and summary["failed"] == 0
    assert query(tw, "select distinct env from runs") == [("retail",)]
    check_consistent(tw)
    # Every write read its own path's state: its `before` is the latest `after` of the same row among the node's
    # ancestors (or the base row when none wrote it). A sibling's write seen by a branch would break this.
    stale = query(tw, """
        with w as (select c.*, n.path, n.depth from state_changes c
                   join nodes n using (rollout_id, node_id)),
        seen as (
            select w.rollout_id, w.node_id, w.pos, w.seq, w.before::varchar as before,
                   (select a.after::varchar from w as a
                    where a.rollout_id = w.rollout_id and a.table_name = w.table_name and a.key = w.key
                      and list_contains(w.path, a.node_id)
                      and (a.node_id <> w.node_id or a.pos < w.pos)
                    order by a.depth desc, a.pos desc limit 1) as ancestor_after,
                   b.doc::varchar as base
            from w left join taubench_base b on b.domain = 'retail' and b.tbl = w.table_name and b.key = w.key)
        select count(*) from seen
        where coalesce(ancestor_after, base) is distinct from before""")
    assert stale == [(0,)]
    assert query(tw, "select count(*) > 0 from state_changes")[0][0]
    # Branches of one step whose databases differ: a node's state is the writes along its path.
    differing = query(tw, """
        with states as (
            select n.rollout_id, n.node_id, n.depth,
                   coalesce(string_agg(c.key || ':' || md5(c.after::varchar), ',' order by c.node_id, c.pos, c.seq),
                            '') as state
            from nodes n left join state_changes c
              on c.rollout_id = n.rollout_id and list_contains(n.path, c.node_id)
            group by all)
        select count(*) from (select rollout_id, depth from states group by all having count(distinct state) > 1)""")
    assert differing[0][0] > 0
    # the datasets: golden paths and KTO rows of τ-bench trees, with τ-bench's tools
    assert query(tw, "select count(*) > 0 from sft")[0][0] and query(tw, "select count(*) > 0 from kto")[0][0]
    tools = json.loads(query(tw, "select tools from sft limit 1")[0][0])
    assert "cancel_pending_order" in {t["function"]["name"] for t in tools}
    # deleting the run removes every row it made, its branches' writes included
    deleted = run("runs", "delete", summary["run_id"], "--yes", "-w", str(tw))
    assert deleted.returncode == 0, deleted.stderr
    for table in ("runs", "rollouts", "nodes", "messages", "tool_calls", "rewards", "state_changes"):
        assert query(tw, f"select count(*) from {table}") == [(0,)], table


def test_oracle_eval_scores_one_and_records_both_rewards(tw):
    result = run("eval", "--env", "airline", "--agent", "oracle", "--json", "-w", str(tw))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rollouts"] == 50 and summary["average_reward"] == 1.0 and summary["success_rate"] == 1.0
    assert query(tw, "select count(*) from rollouts where episode_reward is null or reward is null") == [(0,)]
    # a gold action's call made by the oracle is credited as JOSH's turn reward
    assert query(tw, "select count(*) > 0 from rewards where credited and domain = 'airline'") == [(True,)]


@pytest.mark.slow
def test_kill_9_resumes_without_duplicates(tw):
    args = [*HARVEST, "--split", "train", "--limit", "400", "-w", str(tw)]
    proc = subprocess.Popen([*FACTORY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rollouts(tw, proc, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = query(tw, "select count(*) from rollouts")[0][0]
    assert 5 <= committed < 400
    check_consistent(tw)
    writes_before = query(tw, "select count(*) from state_changes")[0][0]
    resumed = run(*args, "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["rollouts"] == 400 and summary["resumed_skipped"] == committed
    check_consistent(tw)
    assert query(tw, "select count(*) - count(distinct (rollout_id, node_id, pos, seq)) from state_changes") == [(0,)]
    assert query(tw, "select count(*) from state_changes")[0][0] > writes_before
    assert query(tw, "select count(*) from state_changes where rollout_id not in (select rollout_id from rollouts)") \
        == [(0,)]


@pytest.mark.slow
def test_views_export_and_train(tw, tmp_path, model_dir):
    assert run(*HARVEST, "--limit", "10", "-w", str(tw)).returncode == 0
    exported = run("export", "kto", "--out", str(tmp_path / "kto"), "-w", str(tw))
    assert exported.returncode == 0, exported.stderr
    from datasets import load_dataset

    rows = load_dataset(str(tmp_path / "kto"), split="train")
    assert len(rows) == query(tw, "select count(*) from kto")[0][0] > 0
    trained = run("train", "sft", "--model", str(model_dir), "--out", str(tmp_path / "m1"), "--max-steps", "1",
                  "--json", "-w", str(tw))
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "m1" / "model.safetensors").exists()


def long_context(model: Path, out: Path, drop_response_template: bool = False) -> Path:
    """A copy of `model` with a 32k position budget: τ-bench's policy and tools (3.6k tokens in M0's tokenizer) are
    past the tiny models' 2k."""
    served = Path(shutil.copytree(model, out))
    for name, changes in (("config.json", {"max_position_embeddings": 32768}),
                          ("tokenizer_config.json", {"model_max_length": 32768})):
        config = json.loads((served / name).read_text())
        config.update(changes)
        if drop_response_template:  # malformed tool calls come back as text, not HTTP 500
            config.pop("response_template", None)
        (served / name).write_text(json.dumps(config))
    return served


@pytest.fixture(scope="module")
def long_context_server(tmp_path_factory):
    """`transformers serve` on the shipped M0 (it writes text; a fresh tiny model's LLM user says nothing) with a 32k
    position budget and no response template."""
    from tests.conftest import serve

    served = long_context(ROOT / "factory" / "m0", tmp_path_factory.mktemp("served_long") / "m0", True)
    with serve(served) as url:
        yield str(served), url


@pytest.mark.slow
def test_eval_with_openai_agent_and_llm_user(tw, long_context_server):
    served, url = long_context_server
    result = run("eval", "--env", "retail", "--split", "dev", "--limit", "2", "--agent", f"openai:{served}",
                 "--base-url", url, "--user", "llm", "--user-model", f"openai:{served}", "--user-base-url", url,
                 "--max-turns", "1", "--max-new-tokens", "16", "--json", "-w", str(tw))
    assert result.returncode in (0, 1), result.stderr  # 1: a rollout failed on a server error (recorded)
    summary = json.loads(result.stdout)
    assert summary["rollouts"] == 2 and summary["env"] == "retail"
    assert query(tw, "select count(*) from rollouts where episode_reward is not null and reward is not null") \
        == [(2,)]
    errors = query(tw, "select error from rollouts")
    assistant = "select count(*) > 0 from messages where role = 'assistant' and prompt_tokens > 0"
    assert query(tw, assistant) == [(True,)], errors
    system = query(tw, "select content from messages where role = 'system' limit 1")[0][0]
    assert system == (TAUBENCH / "retail" / "wiki.md").read_text()
    check_consistent(tw)


@pytest.mark.slow
def test_loop_on_retail(tw, model_dir, tmp_path):
    """`factory loop --env retail`: the untrained model earns no reward, so (as in test_loop) the first run stops at
    "no training rows"; one branch per harvest rollout marked golden, the loop resumes, trains and evaluates."""
    from tests.conftest import mark_deepest_golden

    model = long_context(model_dir, tmp_path / "tiny-long")
    args = ["loop", "--env", "retail", "--model", str(model), "--out", str(tmp_path / "loop"), "--eval-tasks", "2",
            "--harvest-tasks", "2", "--beam", "2", "--max-turns", "1", "--max-new-tokens", "8", "--sft-steps", "1",
            "--sft-loss", "all", "--wise-ft", "1", "--kto-steps", "0", "-w", str(tw)]
    first = run(*args)
    assert first.returncode == 2 and "M1 has no training rows" in one_line_error(first), first.stderr[-2000:]
    runs = dict(query(tw, "select kind || ':' || beam, run_id from runs where env = 'retail'"))
    assert query(tw, "select distinct split from runs where kind = 'harvest'") == [("train",)]
    mark_deepest_golden(tw, runs["harvest:2"])
    second = run(*args, "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    result = json.loads(second.stdout)
    assert result["config"]["env"] == "retail" and set(result["scores"]) == {"M0", "M0'", "M1"}
    assert query(tw, "select count(distinct env) from runs where kind in ('eval', 'harvest')") == [(1,)]
    airline = run("loop", "--env", "airline", "--out", str(tmp_path / "x"), "-w", str(tw))
    assert airline.returncode == 2 and "only a test split" in airline.stderr


def test_env_commands(tw, tmp_path):
    info = run("env", "info", "--env", "retail", "--json", "-w", str(tw))
    assert info.returncode == 0, info.stderr
    splits = {s["split"]: s["tasks"] for s in json.loads(info.stdout)["splits"]}
    assert splits == {"train": 500, "dev": 20, "test": 115}
    called = run("env", "call", "--env", "retail", "find_user_id_by_email", '{"email": "nope@example.com"}',
                 "-w", str(tw))
    assert called.returncode == 2 and one_line_error(called) == "Error: user not found"
    gold = json.loads(query(tw, "select actions from taubench_tasks where task_id = 'retail/test/0'")[0][0])
    actions = tmp_path / "gold.json"
    actions.write_text(json.dumps(gold))
    replayed = run("env", "replay", str(actions), "--env", "retail", "--split", "test", "--task", "0", "--json",
                   "-w", str(tw))
    assert replayed.returncode == 0, replayed.stderr
    out = json.loads(replayed.stdout)
    assert out["reward"] == 1.0 and out["goals_met"] == out["goals_total"] > 0
    actions.write_text(json.dumps(gold[:-1]))  # the last gold action dropped
    assert json.loads(run("env", "replay", str(actions), "--env", "retail", "--task", "retail/test/0", "--json",
                          "-w", str(tw)).stdout)["goals_met"] == out["goals_total"] - 1


def test_bad_input_is_one_line_exit_2(tw, tmp_path):
    broken = tmp_path / "taubench"
    shutil.copytree(TAUBENCH, broken)
    (broken / "retail" / "tasks_dev.json").write_text("[{not json")
    not_json = tmp_path / "not.json"
    not_json.write_text("[{")
    unknown_tool = tmp_path / "unknown.json"
    unknown_tool.write_text(json.dumps([{"name": "launch_rocket", "kwargs": {}}]))
    cases = [
        (("eval", "--env", "retail", "--agent", "oracle", "--taubench", str(tmp_path / "none"), "-w",
          str(tmp_path / "new.duckdb")), "--taubench"),
        (("env", "build", "--env", "retail", "--taubench", str(broken), "-w", str(tmp_path / "b.duckdb")),
         "tasks_dev.json"),
        (("eval", "--env", "mars", "-w", str(tw)), "Invalid value for '--env'"),
        (("eval", "--env", "retail", "--agent", "oracle", "--split", "val", "-w", str(tw)), "no split 'val'"),
        (("eval", "--env", "retail", "--agent", "teacher", "-w", str(tw)), "ToolWOZ's scripted agent"),
        (("eval", "--agent", "oracle", "-w", str(tw)), "τ-bench agent"),
        (("eval", "--env", "retail", "--agent", "oracle", "--protocol", "react", "-w", str(tw)), "`tools` protocol"),
        (("env", "replay", str(unknown_tool), "--env", "retail", "--task", "0", "-w", str(tw)), "unknown tool"),
        (("env", "replay", str(tmp_path / "missing.json"), "--env", "retail", "--task", "0", "-w", str(tw)),
         "no such file"),
        (("env", "replay", str(not_json), "--env", "retail", "--task", "0", "-w", str(tw)), "does not parse"),
    ]
    for args, fragment in cases:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert fragment in one_line_error(result), (args, result.stderr)
    assert query(tw, "select count(*) from runs") == [(0,)]
