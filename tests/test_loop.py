"""`factory model bootstrap` and `factory loop` end to end, on tiny sizes.

The untrained test model never earns a reward, so the first loop run stops at "M1 has no training rows"
(a user-facing outcome with a one-line error). The test then marks one branch per harvest rollout golden and
rewarded, as a successful harvest would have, and runs the loop again: it resumes the committed eval and
harvest runs and goes on to train M1 and M0' and evaluate them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import duckdb
import pytest
from transformers import AutoModelForCausalLM

from factory.jobs import bootstrap
from factory.output import err
from tests.conftest import MULTIWOZ_DIR, ROOT, mark_deepest_golden, one_line_error, query, run

SMALL = ["--eval-tasks", "2", "--harvest-split", "val_harvest", "--harvest-tasks", "2", "--beam", "2", "--max-turns",
         "2", "--max-new-tokens", "12", "--sft-steps", "2", "--sft-loss", "all", "--wise-ft", "1", "--kto-steps", "0"]


def test_bootstrap_trains_m0_on_a_teacher_run_and_records_the_budget(model_dir, wh, home, tmp_path):
    budget = dataclasses.replace(bootstrap.BUDGET, tasks=4, steps=2, max_length=512)
    start = bootstrap.init_dir(tmp_path / "m0")
    start.parent.mkdir(exist_ok=True)
    shutil.copytree(model_dir, start)  # the untrained model: skip the tokenizer training
    result = bootstrap.bootstrap(tmp_path / "m0", str(wh), str(MULTIWOZ_DIR), err, budget)

    info = json.loads((tmp_path / "m0" / "factory_model.json").read_text())
    assert info["bootstrap"]["budget"] == dataclasses.asdict(budget)
    assert info["bootstrap"]["teacher_run"] == result["teacher_run"]
    assert info["bootstrap"]["steps"] == 2 and info["bootstrap"]["rows"] == 4
    assert query(wh, "SELECT kind, agent_model, split FROM runs WHERE run_id = ?", [result["teacher_run"]]) == [
        ("eval", "teacher", "val_boot")]
    assert query(wh, "SELECT count(*) FROM runs WHERE kind = 'train'") == [(1,)]
    import torch

    trained, untrained = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (tmp_path / "m0", model_dir))
    assert trained.keys() == untrained.keys()
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)  # its 2 steps moved the weights
    assert not (tmp_path / "m0-staging").exists()


def test_a_training_recorded_before_the_trl_names_is_reused(tmp_path):
    """A loop folder whose factory.json names the recipe's fields as before (epochs, batch_size, ...) is the same
    training as today's recipe, so the loop reuses it; another value is another training."""
    from factory.jobs.loop import _same_training
    from factory.jobs.training import TrainJob
    from train import recipes

    start, w = tmp_path / "m0", str(tmp_path / "w.duckdb")
    start.mkdir()
    recipe = dataclasses.replace(recipes.get("cpu", "sft"), learning_rate=3e-4, max_steps=2, loss="calls", wise_ft=0.5)
    job = TrainJob(method="sft", recipe=recipe, out_dir=tmp_path / "m1", warehouse_path=w, model=str(start),
                   view="sft", run_ids=("harvest-1",), view_params={"min_reward": 0.01}, seed=0, force=True)
    # A real factory.json written before the rename (the shipped M0's), pointed at this job's inputs.
    manifest = json.loads((ROOT / "factory" / "m0" / "factory.json").read_text())
    old = {new: old for old, new in recipes.OLD_NAMES.items()}
    assert set(old.values()) <= set(manifest["recipe"])
    today = json.loads(json.dumps(dataclasses.asdict(recipe)))
    manifest |= {"model": str(start), "view": "sft", "seed": 0, "warehouse": w,
                 "recipe": {old.get(k, k): v for k, v in today.items()}}
    manifest["data"]["params"] = {"run_id": ["harvest-1"], "min_reward": 0.01}
    job.out_dir.mkdir()
    (job.out_dir / "factory.json").write_text(json.dumps(manifest))
    reused = _same_training(job)
    assert reused is not None and reused["reused"] and reused["run_id"] == manifest["run_id"]
    assert reused["steps"] == manifest["result"]["steps"]
    other = dataclasses.replace(recipe, num_train_epochs=2)
    assert _same_training(dataclasses.replace(job, recipe=other)) is None


def test_loop_lr_is_a_deprecated_spelling_of_learning_rate():
    from click.testing import CliRunner

    from factory.cli import cli

    result = CliRunner().invoke(cli, ["loop", "--lr", "1e-3", "--beam", "1"])
    assert result.exit_code == 2 and "beam 1 both are the same run" in result.output
    assert result.stderr.splitlines()[0] == "Warning: --lr is deprecated; use --learning-rate"
    assert "--lr " not in CliRunner().invoke(cli, ["loop", "--help"]).output


@pytest.mark.slow
def test_loop_stops_without_golden_paths_then_resumes_and_reports(model_dir, wh, tmp_path):
    out = tmp_path / "loop"
    args = ["loop", "--model", str(model_dir), "--out", str(out), *SMALL, "-w", str(wh)]
    first = run(*args)
    assert first.returncode == 2, first.stderr[-2000:]
    assert "M1 has no training rows" in one_line_error(first)
    kinds = dict(query(wh, "SELECT kind || ':' || beam, run_id FROM runs"))
    assert set(kinds) >= {"eval:1", "harvest:2", "harvest:1"}  # eval M0, harvest, control: committed

    assert mark_deepest_golden(wh, kinds["harvest:2"]) == 2
    second = run(*args, "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming run" in second.stderr  # the eval and harvest runs of the first attempt
    result = json.loads(second.stdout)
    assert result["runs"]["harvest M0"] == kinds["harvest:2"]
    assert set(result["scores"]) == {"M0", "M0'", "M1"}
    assert result["training"]["M1"]["steps"] == result["training"]["M0'"]["steps"] == 2
    assert result["training"]["M1"]["view"] == "sft" and result["training"]["M0'"]["view"] == "sft_unfiltered"
    for label in ("M1 - M0", "M1 - M0'"):
        c = result["comparisons"][label]
        assert c["tasks"] == 2 and c["low"] <= c["diff"] <= c["high"]
    assert set(result["seconds"]) >= {"eval M0", "harvest M0", "train M1", "train M0'", "eval M1", "eval M0'"}
    assert set(result["peak_rss_mb"]) == set(result["seconds"]) and min(result["peak_rss_mb"].values()) > 100
    assert set(result["cpu"]) == set(result["seconds"])  # CPU of the process tree per stage
    assert result["cpu"]["train M1"]["user_s"] > 0 and result["cpu"]["eval M0"]["cpu_percent"] > 0
    # Every model evaluated on the same two test tasks; the trained models are loadable folders.
    evals = [result["runs"][f"eval {m}"] for m in ("M0", "M0'", "M1")]
    for run_id in evals:
        assert query(wh, "SELECT count(*), min(split) FROM rollouts JOIN runs USING (run_id) WHERE run_id = ?",
                     [run_id]) == [(2, "test")]
    for name in ("m1", "m0-control"):
        manifest = json.loads((out / name / "factory.json").read_text())
        assert manifest["data"]["test_rows"] == 0
    assert json.loads((out / "loop.json").read_text())["runs"] == result["runs"]

    # Run again: every rollout run resumes with nothing to do, both trainings are reused (same data and
    # recipe), and M1's and M0''s eval runs are the same ones (named after their training runs).
    table = run(*args)
    assert table.returncode == 0, table.stderr[-2000:]
    assert "M1 - M0'" in table.stdout and "wall time per stage" in table.stdout and "peak RSS" in table.stdout \
        and "system % of user" in table.stdout
    assert f"Everything above is in {out / 'loop.json'}" in table.stdout  # and what to run next:
    assert f"-p run_id {result['runs']['harvest M0']} -p min_reward 0.01" in table.stdout
    assert "nothing left to run" in table.stderr and "0/0" not in table.stderr  # no empty progress bars
    again = json.loads((out / "loop.json").read_text())
    assert again["runs"] == result["runs"]
    assert again["training"]["M1"]["reused"] and again["training"]["M0'"]["reused"]
    assert query(wh, "SELECT count(*) FROM runs WHERE kind = 'train'") == [(2,)]

    # --sft-loss calls --wise-ft 0.5 (in a folder of its own): both trainings use them, on the same harvest and
    # control.
    calls_out = tmp_path / "loop-calls"
    calls = run("loop", "--model", str(model_dir), "--out", str(calls_out), *SMALL, "-w", str(wh),
                "--sft-loss", "calls", "--wise-ft", "0.5", "--json")
    assert calls.returncode == 0, calls.stderr[-3000:]
    with_calls = json.loads(calls.stdout)
    assert with_calls["runs"]["harvest M0"] == result["runs"]["harvest M0"]
    for name, folder in (("M1", "m1"), ("M0'", "m0-control")):
        assert not with_calls["training"][name].get("reused")
        recipe = json.loads((calls_out / folder / "factory.json").read_text())["recipe"]
        assert (recipe["loss"], recipe["wise_ft"]) == ("calls", 0.5)
    assert (with_calls["config"]["sft_loss"], with_calls["config"]["wise_ft"]) == ("calls", 0.5)
    assert with_calls["runs"]["eval M1"] != result["runs"]["eval M1"]

    # --harvest-split synth: the harvest and the control take the first synth tasks (the untrained model earns
    # nothing there either, so it stops before training); M0's eval run is the same one.
    synth = run("loop", "--model", str(model_dir), "--out", str(tmp_path / "loop-synth"), *SMALL, "-w", str(wh),
                "--harvest-split", "synth")
    assert synth.returncode == 2 and "M1 has no training rows" in one_line_error(synth)
    assert query(wh, "SELECT beam, count(*) FROM runs JOIN rollouts USING (run_id) WHERE split = 'synth' "
                     "GROUP BY beam ORDER BY beam") == [(1, 2), (2, 2)]

    # KTO after M1's SFT: M1 becomes the KTO model and is evaluated in a run of its own.
    kto = run(*args, "--kto-steps", "1", "--json")
    assert kto.returncode == 0, kto.stderr[-3000:]
    with_kto = json.loads(kto.stdout)
    assert with_kto["models"]["M1"] == str(out / "m1-kto")
    assert with_kto["training"]["M1 (kto)"]["steps"] == 1
    assert with_kto["runs"]["eval M1"] == f"eval-{with_kto['training']['M1 (kto)']['run_id']}"
    assert with_kto["runs"]["eval M1"] != result["runs"]["eval M1"]

    # A second iteration: M1 harvests the next two val_harvest tasks (fresh ones) and becomes M2, against M1'.
    # The first iteration is resumed and reused; M1's harvest earns nothing either, until it is marked.
    two = [*args, "--iterations", "2"]
    stopped = run(*two)
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    assert "M2 has no training rows" in one_line_error(stopped)
    m1_harvest = f"harvest-{result['training']['M1']['run_id']}"
    harvested = query(wh, "SELECT task_id FROM rollouts WHERE run_id = ? ORDER BY task_id", [m1_harvest])
    first_tasks = query(wh, "SELECT task_id FROM rollouts WHERE run_id = ? ORDER BY task_id",
                        [result["runs"]["harvest M0"]])
    val_harvest = [r[0] for r in query(wh, "SELECT task_id FROM tasks WHERE list_contains(splits, 'val_harvest') "
                                           "ORDER BY task_id LIMIT 4")]
    assert [r[0] for r in first_tasks] == val_harvest[:2] and [r[0] for r in harvested] == val_harvest[2:]
    assert mark_deepest_golden(wh, m1_harvest) == 2
    done = run(*two, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    looped = json.loads(done.stdout)
    assert list(looped["scores"]) == ["M0", "M0'", "M1", "M1'", "M2"]
    assert looped["runs"]["harvest M1"] == m1_harvest and looped["runs"]["eval M1"] == result["runs"]["eval M1"]
    assert looped["training"]["M1"]["reused"] and looped["training"]["M2"]["steps"] == 2
    assert looped["models"]["M2"] == str(out / "m2") and looped["models"]["M1'"] == str(out / "m1-control")
    assert [it["label"] for it in looped["iterations"]] == ["iteration 1", "iteration 2"]
    assert [it["harvest_tasks"] for it in looped["iterations"]] == [[0, 1], [2, 3]]
    assert set(looped["iterations"][1]["comparisons"]) == {"M2 - M1", "M2 - M1'", "M2 - M0"}  # M0: the last's
    whole = looped["comparisons"]["M2 - M0"]
    assert (whole["run_a"], whole["run_b"]) == (looped["runs"]["eval M2"], looped["runs"]["eval M0"])
    assert (out / "loop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    short = run("loop", "--model", str(model_dir), "--out", str(out), *SMALL, "--iterations", "999", "-w", str(wh))
    assert short.returncode == 2 and "val_harvest tasks and there are" in one_line_error(short)


def test_loop_refuses_a_missing_model_folder_and_a_beam_of_one(wh, tmp_path):
    missing = run("loop", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "loop"), "-w", str(wh))
    assert missing.returncode == 2
    assert "no model folder" in one_line_error(missing)
    beam = run("loop", "--beam", "1", "-w", str(wh))
    assert beam.returncode == 2 and "--beam" in beam.stderr
    assert query(wh, "SELECT count(*) FROM runs") == [(0,)]  # nothing recorded


def test_loop_workers_run_the_rollout_stages_in_ray_processes_with_the_same_runs_and_rows(model_dir, template,
                                                                                          tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'josh-factory[ray]'; make install does)")
    from tests.conftest import copy_warehouse

    rows = ("SELECT run_id, task_id, n_nodes, reward, completion_tokens, end_reason FROM rollouts ORDER BY ALL",
            "SELECT m.rollout_id, m.node_id, m.role, m.content FROM messages m ORDER BY ALL")
    outcome = {}
    for workers in ("1", "2"):
        (tmp_path / workers).mkdir()
        wh = copy_warehouse(template, tmp_path / workers)
        stopped = run("loop", "--model", str(model_dir), "--out", str(tmp_path / workers / "loop"), *SMALL,
                      "--workers", workers, "-w", str(wh))
        assert stopped.returncode == 2 and "M1 has no training rows" in one_line_error(stopped)
        assert ("2 Ray workers" in stopped.stderr) == (workers == "2"), stopped.stderr[-2000:]
        outcome[workers] = [query(wh, sql) for sql in rows]
    assert outcome["1"] == outcome["2"] and len(outcome["2"][0]) == 6  # eval M0, harvest, control: 2 tasks each
    again = run("loop", "--model", str(model_dir), "--out", str(tmp_path / "2" / "loop"), *SMALL, "--workers", "2",
                "-w", str(tmp_path / "2" / "warehouse.duckdb"))
    assert "nothing left to run" in again.stderr and "0/0" not in again.stderr, again.stderr[-2000:]
    retail = run("loop", "--env", "retail", "--workers", "2", "-w", str(tmp_path / "1" / "warehouse.duckdb"))
    assert retail.returncode == 2 and "--workers" in one_line_error(retail)


def test_loop_rft_baseline_samples_at_josh_compute_and_trains_on_the_successful_samples(model_dir, wh, tmp_path):
    """--baseline rft: K beam-1 runs of the harvest tasks (the control is the first; K = JOSH's generated tokens /
    the control's, measured), a baseline without successful samples reported and not trained, then (samples marked
    as a successful harvest would have left them) M0^rft trained with M1's steps on `sft` and KTO on
    `kto_samples`, evaluated, and compared with M1."""
    out = tmp_path / "loop"
    args = ["loop", "--model", str(model_dir), "--out", str(out), *SMALL, "--baseline", "rft", "-w", str(wh)]
    first = run(*args)
    assert first.returncode == 2 and "M1 has no training rows" in one_line_error(first)
    harvest = query(wh, "SELECT run_id FROM runs WHERE beam = 2")[0][0]
    mark_deepest_golden(wh, harvest)

    empty = run(*args, "--json")
    assert empty.returncode == 0, empty.stderr[-3000:]
    assert "rejection sampling found no training rows" in " ".join(empty.stderr.split()), empty.stderr[-3000:]
    result = json.loads(empty.stdout)
    rft = result["iterations"][0]["data"]["RFT"]
    tokens = dict(query(wh, "SELECT run_id, sum(completion_tokens) FROM rollouts GROUP BY run_id"))
    control = result["runs"]["control M0"]
    assert rft["samples_per_task"] == max(1, round(tokens[harvest] / tokens[control]))
    assert rft["runs"][0] == control and len(rft["runs"]) == rft["samples_per_task"]
    assert query(wh, "SELECT seed, count(*) FROM runs JOIN rollouts USING (run_id) WHERE list_contains(?, run_id) "
                     "GROUP BY seed ORDER BY seed", [rft["runs"]]) == [(s, 2) for s in range(len(rft["runs"]))]
    assert rft["generated_tokens"] == sum(tokens[r] for r in rft["runs"]) and rft["sft_rows"] == 0
    assert "M0^rft" not in result["scores"] and set(result["comparisons"]) == {"M1 - M0", "M1 - M0'"}
    josh = result["iterations"][0]["data"]["JOSH"]
    assert (josh["generated_tokens"], josh["sft_rows"], josh["kept"], josh["tasks_kept"], josh["full_successes"]) \
        == (tokens[harvest], 2, 2, 2, 2)
    assert (rft["kept"], rft["tasks_kept"], rft["full_successes"]) == (0, 0, 0)
    assert josh["sft_rows_per_1000_tokens"] == round(2000 / tokens[harvest], 4)

    # Every sample succeeds but one rollout per run: those are KTO's negatives.
    for run_id in rft["runs"]:
        mark_deepest_golden(wh, run_id)
    con = duckdb.connect(str(wh))
    con.execute("UPDATE rollouts SET reward = 0 WHERE rollout_id IN (SELECT min(rollout_id) FROM rollouts "
                "WHERE list_contains($runs, run_id) GROUP BY run_id)", {"runs": rft["runs"]})
    con.close()
    done = run(*args, "--kto-steps", "1", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    looped = json.loads(done.stdout)
    trained = looped["training"]["M0^rft"]
    assert (trained["view"], trained["steps"], trained["rows"]) == ("sft", looped["training"]["M1"]["steps"],
                                                                     len(rft["runs"]))
    kto = looped["training"]["M0^rft (kto)"]
    assert kto["view"] == "kto_samples" and looped["models"]["M0^rft"] == str(out / "m0-rft-kto")
    con = duckdb.connect(str(wh), read_only=True)
    con.execute("SET VARIABLE min_reward = 0.01")
    labels: dict[bool, int] = {}
    for run_id in rft["runs"]:  # as the trainer reads it: one run at a time
        con.execute("SET VARIABLE run_id = $run", {"run": run_id})
        for label, n in con.execute("SELECT label, count(*) FROM kto_samples GROUP BY label").fetchall():
            labels[label] = labels.get(label, 0) + n
    con.close()
    assert labels[True] > 0 and labels[False] > 0 and sum(labels.values()) == kto["rows"]
    assert looped["runs"]["eval M0^rft"] == f"eval-{kto['run_id']}"
    assert set(looped["iterations"][0]["comparisons"]) == {"M1 - M0", "M1 - M0'", "M1 - M0^rft"}
    data = looped["iterations"][0]["data"]["RFT"]
    assert data["sft_rows"] == data["kept"] == data["full_successes"] == len(rft["runs"]) and data["tasks_kept"] == 1
    assert data["kto_rows"] == kto["rows"]
    table = run(*args, "--kto-steps", "1")
    assert "training data per generated token" in table.stdout and "M1 - M0^rft" in table.stdout, table.stdout
    assert f"M0^rft: {len(rft['runs'])} samples per task" in " ".join(table.stderr.split())
