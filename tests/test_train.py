"""`train/` and `factory train`: real warehouse rows (teacher + tiny-model harvests) through view -> Arrow ->
Dataset -> TRL, three steps each on the tiny model."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from tests.conftest import MULTIWOZ_DIR, mark_deepest_golden, one_line_error, run
from train import data, recipes
from train.recipes import TrainInputError

# Fast settings for the tests: a short context keeps a step around a second on the tiny model.
FAST = {"max_steps": 3, "batch_size": 2, "max_length": 512, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def home(tmp_path_factory, template) -> dict:
    """A warehouse with a teacher harvest (golden paths), a tiny-model harvest (branches, no reward) and a
    teacher eval on `test`, plus `relabelled`: a copy where the tiny model's deepest path of each rollout is
    marked golden (the untrained model never earns a reward), so the `dpo` view and KTO negatives have rows."""
    root = tmp_path_factory.mktemp("train")
    env = {"FACTORY_HOME": str(root / "home"), "FACTORY_MULTIWOZ": str(MULTIWOZ_DIR), "FACTORY_WAREHOUSE": ""}
    w = str(root / "w.duckdb")
    shutil.copy(template, w)  # ToolWOZ built once for the session
    for args in (["harvest", "--agent", "teacher", "--split", "val_harvest", "--limit", "6", "-w", w],
                 ["model", "init"],
                 ["harvest", "--agent", str(root / "home" / "models" / "tiny-toolwoz"), "--split", "val_harvest",
                  "--limit", "2", "--beam", "4", "--max-steps", "3", "--max-new-tokens", "16", "-w", w],
                 ["eval", "--agent", "teacher", "--split", "test", "--limit", "1", "-w", w]):
        result = run(*args, env=env, cwd=root)
        assert result.returncode == 0, result.stderr[-2000:]
    con = duckdb.connect(w)
    ids = dict(con.execute("SELECT kind || ':' || (agent_model = 'teacher'), run_id FROM runs").fetchall())
    con.close()
    relabelled = str(root / "relabelled.duckdb")
    shutil.copy(w, relabelled)
    tiny = ids["harvest:false"]
    mark_deepest_golden(Path(relabelled), tiny)
    return {"root": root, "env": env, "w": w, "relabelled": relabelled, "teacher": ids["harvest:true"],
            "tiny": tiny, "eval": ids["eval:true"], "model": str(root / "home" / "models" / "tiny-toolwoz")}


def _load(path: str, view: str, method: str, **kwargs):
    with duckdb.connect(path, read_only=True) as con:
        return data.load_view(con, view, method, **kwargs)


def _count(path: str, query: str) -> int:
    with duckdb.connect(path, read_only=True) as con:
        return con.execute(query).fetchall()[0][0]


def _recipe(method: str, **changes) -> recipes.Recipe:
    return replace(recipes.get("cpu", method), **{**FAST, **changes})


def _weights(folder: str) -> dict:
    from transformers import AutoModelForCausalLM

    return {k: v.detach().clone() for k, v in AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


def _assert_trained(summary: dict, base: str, out: Path) -> None:
    assert summary["steps"] == 3 and len(summary["losses"]) == 3
    assert all(math.isfinite(x) for x in summary["losses"])
    before, after = _weights(base), _weights(str(out))
    changed = [k for k in before if not (before[k] == after[k]).all()]
    assert "model.layers.0.self_attn.q_proj.weight" in changed, changed


# -- data -----------------------------------------------------------------------------------------------------

def test_views_arrive_with_json_text_and_bool_labels(home):
    ds, info = _load(home["w"], "sft", "sft")
    assert info.rows == len(ds) == _count(home["w"], "SELECT count(*) FROM sft") == 6
    assert info.runs == {home["teacher"]: 6} and info.task_splits == {"val": 6} and info.test_rows == 0
    message = ds.features["messages"].feature
    assert message["tool_calls"].feature["function"]["arguments"].dtype == "string"
    assert ds.features["tools"].dtype == "string"
    calls = [c for row in ds for m in row["messages"] for c in (m["tool_calls"] or [])]
    assert calls and all(isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls)
    kto, info = _load(home["relabelled"], "kto", "kto")
    assert kto.features["label"].dtype == "bool"
    assert info.labels["desirable"] > 0 and info.labels["undesirable"] > 0
    dpo, info = _load(home["relabelled"], "dpo", "dpo")
    assert list(dpo.column_names) == ["prompt", "chosen", "rejected", "tools"] and info.rows > 0


def test_several_runs_are_read_one_at_a_time(home):
    both, info = _load(home["w"], "kto", "kto", params={"min_reward": 0}, runs=[home["teacher"], home["eval"]])
    one, _ = _load(home["w"], "kto", "kto", params={"min_reward": 0}, runs=[home["teacher"]])
    assert info.runs[home["eval"]] > 0 and len(both) == len(one) + info.runs[home["eval"]]
    assert info.test_runs == [home["eval"]] and info.task_splits["test"] == info.test_rows


def test_struct_arguments_refused_and_lossless_types_normalised():
    con = duckdb.connect()
    message = ("[{'role': 'assistant', 'content': '', 'tool_calls': [{'id': 'c0', 'type': 'function', "
               "'function': {'name': 'search_hotel', 'arguments': %s}}], 'tool_call_id': NULL}]")
    as_struct = message % "{'area': 'north'}"
    struct = con.sql("SELECT " + as_struct + " AS messages, '[]'::JSON AS tools").to_arrow_table()
    with pytest.raises(TrainInputError, match="keep them JSON text"):
        data.to_dataset(struct, "sft")
    con.execute("SET arrow_lossless_conversion = true")  # JSON -> arrow.json, BOOLEAN -> arrow.bool8
    as_text = message % """'{"area": "north"}'"""
    table = con.sql(f"SELECT {as_text} AS prompt, {as_text} AS completion, true AS label, '[]'::JSON AS tools"
                    ).to_arrow_table()
    ds = data.to_dataset(table, "kto")
    assert ds.features["label"].dtype == "bool" and ds.features["tools"].dtype == "string"
    assert ds[0]["completion"][0]["tool_calls"][0]["function"]["arguments"] == '{"area": "north"}'


def test_bad_views_are_refused(home):
    with pytest.raises(TrainInputError, match="no view 'nosuch'"):
        _load(home["w"], "nosuch", "sft")
    with pytest.raises(TrainInputError, match="lacks the sft column"):
        _load(home["w"], "kto", "sft")


# -- trainers --------------------------------------------------------------------------------------------------

def test_sft_labels_cover_only_assistant_tokens(home, tmp_path):
    from train.sft import sft_trainer

    ds, _ = _load(home["w"], "sft", "sft")
    trainer = sft_trainer(ds, home["model"], tmp_path, _recipe("sft", loss="assistant"))
    tok = trainer.processing_class
    roles = {tok.convert_tokens_to_ids(f"<|{r}|>"): r for r in ("system", "user", "assistant", "tool")}
    end, newline = tok.convert_tokens_to_ids("<|end|>"), tok.encode("\n", add_special_tokens=False)
    assert len(newline) == 1
    for row in trainer.train_dataset:
        ids, labels = row["input_ids"], row["labels"]
        # Expected: in an assistant turn, every token after the "<|assistant|>\n" header up to and including
        # <|end|>; nothing of the system prompt, tools, user turns, tool results or role headers.
        expected, role, header, closed = [], None, 0, False
        for token in ids:
            if token in roles:
                role, header, closed = roles[token], 2, False
            inside = role == "assistant" and header == 0 and not closed
            expected.append(inside)
            header = max(header - 1, 0)
            if inside and token == end:
                closed = True
        assert ids[0] in roles and sum(expected) > 0
        assert [label != -100 for label in labels] == expected
        assert all(label == token for label, token in zip(labels, ids) if label != -100)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    for i in range(2):
        n = int(batch["attention_mask"][i].sum())
        assert batch["labels"][i, :n].tolist() == trainer.train_dataset[i]["labels"]


def test_sft_calls_loss_trains_on_user_turns_tool_results_and_calls_not_free_text(home, tmp_path):
    from train.sft import sft_trainer

    ds, _ = _load(home["w"], "sft", "sft")
    trainer = sft_trainer(ds, home["model"], tmp_path, _recipe("sft", loss="calls"))
    tok = trainer.processing_class
    roles = {tok.convert_tokens_to_ids(f"<|{r}|>"): r for r in ("system", "user", "assistant", "tool")}
    seen = {"call": 0, "text": 0}
    for row, source in zip(trainer.train_dataset, ds):
        ids, labels = row["input_ids"], row["labels"]
        whole = tok.apply_chat_template(source["messages"], tools=json.loads(source["tools"]), tokenize=True,
                                        return_dict=True)["input_ids"]
        assert ids == whole[:FAST["max_length"]]  # long rows are cut, as with the other losses
        # Each message runs from its role token to the next one; the system turn (with the tools) is context.
        starts = [i for i, token in enumerate(ids) if token in roles] + [len(ids)]
        assert starts[0] == 0
        for a, b in zip(starts, starts[1:]):
            role, trained = roles[ids[a]], [label != -100 for label in labels[a:b]]
            if role == "assistant":
                kind = "call" if "<tool_call>" in tok.decode(ids[a:b]) else "text"
                seen[kind] += 1
                assert trained == [kind == "call"] * (b - a)
            else:
                assert trained == [role in ("user", "tool")] * (b - a)
        assert all(label == token for label, token in zip(labels, ids) if label != -100)
    assert seen["call"] > 0 and seen["text"] > 0


def test_sft_calls_loss_refuses_a_template_whose_prefixes_are_not_prefixes(home):
    from train.loading import load_tokenizer
    from train.sft import calls_example

    tok = load_tokenizer(home["model"])
    tok.chat_template = "{% for m in messages | reverse %}{{ m['content'] }}|{% endfor %}"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "bye"}]
    with pytest.raises(TrainInputError, match="--loss calls needs a chat template"):
        calls_example(tok, messages, None)


def test_sft_trains(home, tmp_path):
    from train.sft import train_sft

    ds, _ = _load(home["w"], "sft", "sft")
    summary = train_sft(ds, home["model"], tmp_path, _recipe("sft"))
    _assert_trained(summary, home["model"], tmp_path)


def test_kto_trains_on_the_view_columns(home, tmp_path):
    from train.kto import train_kto

    ds, _ = _load(home["relabelled"], "kto", "kto")
    assert set(ds.column_names) == {"prompt", "completion", "label", "tools"}
    summary = train_kto(ds, home["model"], tmp_path, _recipe("kto"))
    _assert_trained(summary, home["model"], tmp_path)


def test_dpo_trains_on_the_view_columns(home, tmp_path):
    from train.dpo import train_dpo

    ds, _ = _load(home["relabelled"], "dpo", "dpo")
    summary = train_dpo(ds, home["model"], tmp_path, _recipe("dpo"))
    _assert_trained(summary, home["model"], tmp_path)


def test_lora_adapter_loads_as_a_model(home, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from train.sft import train_sft

    ds, _ = _load(home["w"], "sft", "sft")
    recipe = _recipe("sft", lora=recipes.Lora(), max_steps=2, max_length=256)
    train_sft(ds, home["model"], tmp_path, recipe)
    assert (tmp_path / "adapter_config.json").exists() and not (tmp_path / "model.safetensors").exists()
    tuned, base = AutoModelForCausalLM.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(home["model"])
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(tuned(ids).logits, base(ids).logits)


@pytest.mark.parametrize(("method", "db", "alpha"), [("sft", "w", 0.25), ("kto", "relabelled", 0.5)])
def test_wise_ft_saves_the_average_of_start_and_trained_weights(home, tmp_path, method, db, alpha):
    """--wise-ft alpha saves (1 - alpha) x start + alpha x what the same training (same seed and data) saves without
    it. KTO averages with its frozen reference (the start model, already in memory), SFT loads the start again."""
    from train.kto import train_kto
    from train.sft import train_sft

    fit = {"sft": train_sft, "kto": train_kto}[method]
    ds, _ = _load(home[db], method, method)
    fit(ds, home["model"], tmp_path / "full", _recipe(method))
    fit(ds, home["model"], tmp_path / "wise", _recipe(method, wise_ft=alpha))
    start, trained, wise = _weights(home["model"]), _weights(str(tmp_path / "full")), _weights(str(tmp_path / "wise"))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not (trained[q] == start[q]).all()
    for name in start:
        expected = (1 - alpha) * start[name] + alpha * trained[name]
        assert (wise[name] - expected).abs().max() < 1e-5, name


def test_wise_ft_with_lora_scales_the_adapter(home, tmp_path):
    """With LoRA the saved adapter's delta is alpha times the trained one (lora_B scaled; lora_A as trained)."""
    from safetensors.torch import load_file

    from train.sft import train_sft

    ds, _ = _load(home["w"], "sft", "sft")
    recipe = _recipe("sft", lora=recipes.Lora(), max_steps=2, max_length=256)
    train_sft(ds, home["model"], tmp_path / "full", recipe)
    train_sft(ds, home["model"], tmp_path / "wise", replace(recipe, wise_ft=0.5))
    full, wise = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("full", "wise"))
    assert full.keys() == wise.keys() and any("lora_B" in k for k in full)
    for name in full:
        factor = 0.5 if "lora_B" in name else 1.0
        assert (wise[name] - factor * full[name]).abs().max() < 1e-6, name


def test_wise_ft_out_of_range_is_refused():
    with pytest.raises(TrainInputError, match="--wise-ft must be in"):
        recipes.check(_recipe("sft", wise_ft=0.0))


def test_kto_needs_a_batch_of_two(home, tmp_path):
    from train.kto import train_kto

    ds, _ = _load(home["relabelled"], "kto", "kto")
    with pytest.raises(TrainInputError, match="batch of at least 2"):
        train_kto(ds, home["model"], tmp_path, _recipe("kto", batch_size=1))


def test_chat_template_without_generation_markers(home):
    from trl.chat_template_utils import has_generation_markers, llama3_chat_template

    from train.sft import load_tokenizer, training_template

    tok = load_tokenizer(home["model"])
    assert training_template(tok, "tiny") is None  # ours has the markers
    tok.chat_template = llama3_chat_template  # a template TRL knows: its training copy is used
    assert has_generation_markers(training_template(tok, "llama3"))
    plain = load_tokenizer(home["model"])
    plain.chat_template = plain.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(TrainInputError, match="--chat-template FILE"):
        training_template(plain, "custom")


def test_sft_default_loss_covers_every_token(home, tmp_path):
    from train.sft import sft_trainer

    ds, _ = _load(home["w"], "sft", "sft")
    trainer = sft_trainer(ds, home["model"], tmp_path, _recipe("sft"))
    assert recipes.get("cpu", "sft").loss == recipes.get("paper", "sft").loss == "all"
    for row in trainer.train_dataset:  # labels are the ids (the collator masks padding only)
        assert row.get("labels", row["input_ids"]) == row["input_ids"]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    mask = batch["attention_mask"] == 1
    assert (batch["labels"][mask] == batch["input_ids"][mask]).all()
    assert (batch["labels"][~mask] == -100).all()


def test_paper_recipe_configs_build_on_cpu(tmp_path):
    from train.dpo import dpo_config
    from train.kto import kto_config
    from train.sft import sft_config

    sft, kto = recipes.get("paper", "sft"), recipes.get("paper", "kto")
    config = sft_config(sft, tmp_path)
    assert (config.learning_rate, config.num_train_epochs, config.per_device_train_batch_size,
            config.gradient_accumulation_steps, config.assistant_only_loss) == (2e-5, 3, 1, 16, False)
    lora = recipes.lora_config(sft)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (64, 64, 0.05) and "down_proj" in lora.target_modules
    assert recipes.quantization_config(sft).load_in_4bit
    config = kto_config(kto, tmp_path)
    assert (config.beta, config.desirable_weight, config.undesirable_weight, config.learning_rate,
            config.per_device_train_batch_size, config.gradient_accumulation_steps) == (0.1, 1.0, 2.71, 5e-7, 2, 8)
    assert dpo_config(recipes.get("paper", "dpo"), tmp_path).beta == 0.1
    if not recipes.cuda():
        assert config.use_cpu and not config.bf16
        with pytest.raises(TrainInputError, match=r"josh-factory\[gpu\]"):
            recipes.check(sft)


# -- the command -----------------------------------------------------------------------------------------------

def _invoke(home, *args: str):
    from factory.cli import cli

    return CliRunner().invoke(cli, ["train", *args], env=home["env"])


def test_help_has_examples():
    from factory.cli import cli

    for args in (["train"], ["train", "sft"], ["train", "kto"], ["train", "dpo"]):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output


def test_empty_view_is_a_user_error(home, tmp_path):
    result = _invoke(home, "sft", "-w", home["w"], "--model", home["model"], "--out", str(tmp_path / "o"),
                     "--min-reward", "2")
    assert result.exit_code == 2
    assert "Error: no rows in view sft: harvest first or lower --min-reward" in result.output


def test_test_tasks_are_refused(home, tmp_path):
    result = _invoke(home, "sft", "-w", home["w"], "--model", home["model"], "--out", str(tmp_path / "o"),
                     "--run", home["eval"])
    assert result.exit_code == 2
    assert f"1 of 1 rows in view sft come from test tasks (run {home['eval']})" in result.output
    assert "--allow-test-tasks" in result.output


def test_missing_model_and_full_out_are_user_errors(home, tmp_path):
    result = _invoke(home, "sft", "-w", home["w"], "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "Error: no model folder at" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    result = _invoke(home, "sft", "-w", home["w"], "--model", home["model"], "--out", str(tmp_path / "full"),
                     "--force")
    assert result.exit_code == 2 and "was not written by `factory train`" in result.output
    assert (tmp_path / "full" / "notes.txt").exists()


@pytest.mark.slow
def test_cli_sft_end_to_end(home, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    result = run("train", "sft", "-w", home["w"], "--model", home["model"], "--out", str(out), "--max-steps", "2",
                 "--max-length", "256", "--batch-size", "2", "--json", env=home["env"], cwd=home["root"])
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["rows"] == 6 and math.isfinite(summary["final_loss"])
    manifest = json.loads((out / "factory.json").read_text())
    assert manifest["run_id"] == summary["run_id"] and manifest["view"] == "sft"
    assert manifest["data"]["runs"] == {home["teacher"]: 6} and manifest["data"]["task_splits"] == {"val": 6}
    assert manifest["view_sql"]["sft"].count("CREATE OR REPLACE VIEW sft") == 1
    assert {"dataset_rollouts", "trajectories", "chat_messages"} <= set(manifest["view_sql"])
    assert [r["run_id"] for r in manifest["source_runs"]] == [home["teacher"]]
    assert manifest["recipe"]["max_steps"] == 2 and manifest["result"]["steps"] == 2
    AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).chat_template
    with duckdb.connect(home["w"], read_only=True) as con:
        row = con.execute("SELECT kind, status, agent_model, split FROM runs WHERE run_id = ?",
                          [summary["run_id"]]).fetchall()
    assert row == [("train", "done", str(out), "val_harvest")]
    again = run("train", "sft", "-w", home["w"], "--model", home["model"], "--out", str(out), env=home["env"])
    assert again.returncode == 2 and "--force" in one_line_error(again)
    # --force replaces the folder only once the new data has been checked
    again = _invoke(home, "sft", "-w", home["w"], "--model", home["model"], "--out", str(out), "--force",
                    "--min-reward", "2")
    assert again.exit_code == 2 and (out / "factory.json").exists()


@pytest.mark.slow
def test_cli_lora_adapter_runs_in_eval(home, tmp_path):
    out = tmp_path / "lora"
    result = run("train", "sft", "-w", home["w"], "--model", home["model"], "--out", str(out), "--lora",
                 "--max-steps", "1", "--max-length", "256", "--batch-size", "2", env=home["env"], cwd=home["root"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "adapter_config.json").exists() and (out / "factory.json").exists()
    w = str(tmp_path / "eval.duckdb")
    shutil.copy(home["w"], w)
    result = run("eval", "--agent", str(out), "--split", "val", "--limit", "1", "--max-steps", "1",
                 "--max-new-tokens", "4", "-w", w, "--json", env=home["env"], cwd=home["root"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["agent_model"] == str(out)
