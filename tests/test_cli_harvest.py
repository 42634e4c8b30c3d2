"""`factory harvest` end to end: real CLI, real warehouse, teacher and tiny model, kill -9 and resume."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import datasets
import duckdb
import pytest
from transformers import AutoTokenizer

from tests.conftest import FACTORY, check_consistent, one_line_error, query, run, wait_for_rollouts


@pytest.mark.slow
def test_teacher_harvest_fills_tree_tables_and_views(wh, model_dir):
    result = run("harvest", "--agent", "teacher", "--user", "rule", "--split", "val_harvest", "--limit", "20",
                 "--beam", "8", "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rollouts"] == 20 and summary["average_reward"] >= 0.8
    assert query(wh, "select kind, beam, semantics from runs") == [("harvest", 8, "fixed")]
    # the tree widens 1 -> 2 -> 4 -> 8 and never beyond the beam
    widths = dict(query(wh, "select step, max(width) from branch_stats group by step"))
    assert widths[1] == 2 and widths[2] == 4 and max(widths.values()) <= 8
    assert query(wh, "select count(*) from nodes where end_reason = 'pruned'")[0][0] > 0
    # messages are deltas: a path's messages are never stored twice
    assert query(wh, "select count(*) from (select rollout_id, node_id, pos from messages group by all "
                     "having count(*) > 1)") == [(0,)]
    n_full = query(wh, "select count(*) from rollouts where reward = 1")[0][0]
    assert query(wh, "select count(*) from sft") == [(n_full,)]
    assert query(wh, "select count(*) > 0 from kto where label") == [(True,)]
    # the teacher explores at temperature 1 (perturbed calls), so some siblings fail: negatives and pairs
    assert query(wh, "select count(*) > 0 from kto where not label") == [(True,)]
    assert query(wh, "select count(*) > 0, count(*) filter (chosen = rejected) from dpo") == [(True, 0)]
    assert query(wh, "select count(*) from dpo where prompt[-1].role <> 'user'") == [(0,)]
    # every sft conversation starts with the system prompt, then the user, and ends with the agent
    roles = query(wh, "select messages[1].role, messages[2].role, messages[-1].role from sft")
    assert set(roles) == {("system", "user", "assistant")}
    # the sft rows load into datasets and render with the tiny model's template, assistant spans masked
    con = duckdb.connect(str(wh), read_only=True)
    table = con.sql("select messages, tools from sft limit 3").to_arrow_table()
    con.close()
    ds = datasets.Dataset(table)
    assert len(ds) == 3
    tok = AutoTokenizer.from_pretrained(model_dir)
    row = ds[0]
    rendered = tok.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), return_dict=True,
                                       return_assistant_tokens_mask=True)
    assert 0 < sum(rendered["assistant_masks"]) < len(rendered["input_ids"])
    check_consistent(wh)


@pytest.mark.slow
def test_a_finished_run_resumes_without_loading_its_model(wh, model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    args = ["harvest", "--agent", str(model), "--split", "val_harvest", "--limit", "2", "--beam", "2",
            "--max-turns", "2", "--max-new-tokens", "8", "-w", str(wh)]
    assert run(*args).returncode == 0
    rows = query(wh, "select count(*) from nodes")
    for weights in model.glob("*.safetensors"):  # the run is done: re-running it loads no model (a loop's
        weights.unlink()  # resume passes every finished stage)
    again = run(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert "nothing left to run" in " ".join(again.stderr.split())
    assert json.loads(again.stdout)["resumed_skipped"] == 2
    assert query(wh, "select count(*) from nodes") == rows and query(wh, "select status from runs") == [("done",)]
    other = run(*args[:-2], "--beam", "4", "--run", query(wh, "select run_id from runs")[0][0], "-w", str(wh))
    assert other.returncode == 2 and "exists with other settings (beam differ" in one_line_error(other)


@pytest.mark.slow
def test_tiny_model_harvest_branches_and_stores_every_node(wh, model_dir):
    result = run("harvest", "--agent", str(model_dir), "--split", "val_harvest", "--limit", "2", "--beam", "4",
                 "--max-turns", "3", "--max-new-tokens", "16", "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rollouts"] == 2
    # untrained, the model earns nothing, so nothing collapses: 1 root + 2 + 4 + 4 nodes per rollout
    per_rollout = query(wh, "select rollout_id, count(*) from nodes group by all")
    assert all(n == 11 for _, n in per_rollout), per_rollout
    seeds = query(wh, "select count(*), count(distinct seed) from nodes")[0]
    assert seeds[0] == seeds[1]
    assert query(wh, "select count(*) from messages where role = 'assistant'")[0][0] >= 20
    check_consistent(wh)


@pytest.mark.slow
def test_killed_harvest_resumes_without_duplicates(wh):
    args = ["harvest", "--agent", "teacher", "--split", "val_harvest", "--limit", "150", "--beam", "4",
            "--concurrency", "4", "-w", str(wh)]
    proc = subprocess.Popen([*FACTORY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rollouts(wh, proc, 3)
    # a reader from another process gets in during the harvest (the writer commits a group now and then)
    reader = run("sql", "--json", "select count(*) as n from rollouts", "-w", str(wh))
    assert reader.returncode == 0, reader.stderr
    assert json.loads(reader.stdout)[0]["n"] >= 3
    assert proc.poll() is None  # still harvesting
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = query(wh, "select count(*) from rollouts")[0][0]
    assert 3 <= committed < 150
    check_consistent(wh)
    resumed = run(*args, "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["rollouts"] == 150 and summary["resumed_skipped"] == committed
    assert query(wh, "select count(*), count(distinct task_id) from rollouts") == [(150, 150)]
    check_consistent(wh)


def test_parity_preset_conflicts_and_bad_flags(wh):
    conflict = run("harvest", "--agent", "teacher", "--parity", "--semantics", "fixed", "--limit", "1", "-w", str(wh))
    assert conflict.returncode == 2
    assert "--parity sets" in one_line_error(conflict)
    bad = run("harvest", "--agent", "teacher", "--beam", "0", "-w", str(wh))
    assert bad.returncode == 2


@pytest.mark.slow
def test_parity_harvest_records_the_resolved_settings(wh):
    result = run("harvest", "--agent", "teacher", "--parity", "--limit", "3", "--beam", "4", "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    config = json.loads(query(wh, "select config from runs")[0][0])
    assert config["search"]["semantics"] == "parity"
    # recorded under the flags' names: --seed-policy shared, --credit first, --unrewarded drop
    assert {"seed_policy": "shared", "credit": "first", "unrewarded": "drop"}.items() <= config["search"].items()
    assert query(wh, "select semantics from runs") == [("parity",)]
    assert query(wh, "select distinct semantics from tool_calls where ok") == [("parity",)]
