"""`train/` and `factory train`: real warehouse rows (teacher + tiny-model harvests) through view -> Arrow ->
Dataset -> TRL, three steps each on the tiny model."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, fields, replace
from pathlib import Path

import click
import duckdb
import pytest
from click.testing import CliRunner

from tests.conftest import MULTIWOZ_DIR, ROOT, mark_deepest_golden, one_line_error, run
from train import data, recipes
from train.recipes import TrainInputError

# Fast settings for the tests: a short context keeps a step around a second on the tiny model.
FAST = {"max_steps": 3, "per_device_train_batch_size": 2, "max_length": 512, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def harvests(tmp_path_factory, template) -> dict:
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
                  "--limit", "2", "--beam", "4", "--max-turns", "3", "--max-new-tokens", "16", "-w", w],
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

def test_views_arrive_with_json_text_and_bool_labels(harvests):
    ds, info = _load(harvests["w"], "sft", "sft")
    assert info.rows == len(ds) == _count(harvests["w"], "SELECT count(*) FROM sft") == 6
    assert info.runs == {harvests["teacher"]: 6} and info.task_splits == {"val": 6} and info.test_rows == 0
    message = ds.features["messages"].feature
    assert message["tool_calls"].feature["function"]["arguments"].dtype == "string"
    assert ds.features["tools"].dtype == "string"
    calls = [c for row in ds for m in row["messages"] for c in (m["tool_calls"] or [])]
    assert calls and all(isinstance(json.loads(c["function"]["arguments"]), dict) for c in calls)
    kto, info = _load(harvests["relabelled"], "kto", "kto")
    assert kto.features["label"].dtype == "bool"
    assert info.labels["desirable"] > 0 and info.labels["undesirable"] > 0
    dpo, info = _load(harvests["relabelled"], "dpo", "dpo")
    assert list(dpo.column_names) == ["prompt", "chosen", "rejected", "tools"] and info.rows > 0


def test_several_runs_are_read_one_at_a_time(harvests):
    both, info = _load(harvests["w"], "kto", "kto", params={"min_reward": 0},
                       runs=[harvests["teacher"], harvests["eval"]])
    one, _ = _load(harvests["w"], "kto", "kto", params={"min_reward": 0}, runs=[harvests["teacher"]])
    assert info.runs[harvests["eval"]] > 0 and len(both) == len(one) + info.runs[harvests["eval"]]
    assert info.test_runs == [harvests["eval"]] and info.task_splits["test"] == info.test_rows


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


def test_bad_views_are_refused(harvests):
    with pytest.raises(TrainInputError, match="no view 'nosuch'"):
        _load(harvests["w"], "nosuch", "sft")
    with pytest.raises(TrainInputError, match="lacks the sft column"):
        _load(harvests["w"], "kto", "sft")


# -- trainers --------------------------------------------------------------------------------------------------

def test_sft_labels_cover_only_assistant_tokens(harvests, tmp_path):
    from train.sft import sft_trainer

    ds, _ = _load(harvests["w"], "sft", "sft")
    trainer = sft_trainer(ds, harvests["model"], tmp_path, _recipe("sft", loss="assistant"))
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
    batch = trainer.data_collator.__wrapped__([trainer.train_dataset[i] for i in range(2)])  # TRL's, with its mask
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    for i in range(2):
        n = int(batch["attention_mask"][i].sum())
        assert batch["labels"][i, :n].tolist() == trainer.train_dataset[i]["labels"]


def test_sft_calls_loss_trains_on_user_turns_tool_results_and_calls_not_free_text(harvests, tmp_path):
    from train.sft import sft_trainer

    ds, _ = _load(harvests["w"], "sft", "sft")
    trainer = sft_trainer(ds, harvests["model"], tmp_path, _recipe("sft", loss="calls"))
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


def test_sft_calls_loss_refuses_a_template_whose_prefixes_are_not_prefixes(harvests):
    from train.loading import load_tokenizer
    from train.sft import calls_example

    tok = load_tokenizer(harvests["model"])
    tok.chat_template = "{% for m in messages | reverse %}{{ m['content'] }}|{% endfor %}"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "bye"}]
    with pytest.raises(TrainInputError, match="--loss calls needs a chat template"):
        calls_example(tok, messages, None)


def test_sft_trains(harvests, tmp_path):
    from train.sft import train_sft

    ds, _ = _load(harvests["w"], "sft", "sft")
    summary = train_sft(ds, harvests["model"], tmp_path, _recipe("sft"))
    _assert_trained(summary, harvests["model"], tmp_path)


def test_sft_batches_without_a_mask_train_the_same_weights(harvests, tmp_path):
    """`causal_batches` drops the right-padded batch's attention mask: every weight comes out bit for bit as
    with TRL's masked batches, over batches whose rows differ in length (so there are pads)."""
    import torch

    from train.sft import sft_trainer

    ds, _ = _load(harvests["w"], "sft", "sft")
    trained = []
    for masked in (True, False):
        trainer = sft_trainer(ds, harvests["model"], tmp_path / str(masked),
                              _recipe("sft", loss="calls", max_length=2048))
        if masked:
            trainer.data_collator = trainer.data_collator.__wrapped__  # TRL's own
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
        assert ("attention_mask" in batch) == masked and ("position_ids" in batch) != masked
        trainer.train()
        trained.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    assert len(set(lengths)) > 1  # pads in some batch
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
    assert any(not torch.equal(trained[0][k], _weights(harvests["model"])[k]) for k in trained[0])


def test_kto_trains_on_the_view_columns(harvests, tmp_path):
    from train.kto import train_kto

    ds, _ = _load(harvests["relabelled"], "kto", "kto")
    assert set(ds.column_names) == {"prompt", "completion", "label", "tools"}
    summary = train_kto(ds, harvests["model"], tmp_path, _recipe("kto"))
    _assert_trained(summary, harvests["model"], tmp_path)


def test_dpo_trains_on_the_view_columns(harvests, tmp_path):
    from train.dpo import train_dpo

    ds, _ = _load(harvests["relabelled"], "dpo", "dpo")
    summary = train_dpo(ds, harvests["model"], tmp_path, _recipe("dpo"))
    _assert_trained(summary, harvests["model"], tmp_path)


def test_lora_adapter_loads_as_a_model(harvests, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from train.sft import train_sft

    ds, _ = _load(harvests["w"], "sft", "sft")
    recipe = _recipe("sft", lora=recipes.Lora(), max_steps=2, max_length=256)
    train_sft(ds, harvests["model"], tmp_path, recipe)
    assert (tmp_path / "adapter_config.json").exists() and not (tmp_path / "model.safetensors").exists()
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path)
    base = AutoModelForCausalLM.from_pretrained(harvests["model"])
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(tuned(ids).logits, base(ids).logits)


@pytest.mark.parametrize(("method", "db", "alpha"), [("sft", "w", 0.25), ("kto", "relabelled", 0.5)])
def test_wise_ft_saves_the_average_of_start_and_trained_weights(harvests, tmp_path, method, db, alpha):
    """--wise-ft alpha saves (1 - alpha) x start + alpha x what the same training (same seed and data) saves without
    it. KTO averages with its frozen reference (the start model, already in memory), SFT loads the start again."""
    from train.kto import train_kto
    from train.sft import train_sft

    fit = {"sft": train_sft, "kto": train_kto}[method]
    ds, _ = _load(harvests[db], method, method)
    fit(ds, harvests["model"], tmp_path / "full", _recipe(method))
    fit(ds, harvests["model"], tmp_path / "wise", _recipe(method, wise_ft=alpha))
    start = _weights(harvests["model"])
    trained, wise = _weights(str(tmp_path / "full")), _weights(str(tmp_path / "wise"))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not (trained[q] == start[q]).all()
    for name in start:
        expected = (1 - alpha) * start[name] + alpha * trained[name]
        assert (wise[name] - expected).abs().max() < 1e-5, name


def test_wise_ft_with_lora_scales_the_adapter(harvests, tmp_path):
    """With LoRA the saved adapter's delta is alpha times the trained one (lora_B scaled; lora_A as trained)."""
    from safetensors.torch import load_file

    from train.sft import train_sft

    ds, _ = _load(harvests["w"], "sft", "sft")
    recipe = _recipe("sft", lora=recipes.Lora(), max_steps=2, max_length=256)
    train_sft(ds, harvests["model"], tmp_path / "full", recipe)
    train_sft(ds, harvests["model"], tmp_path / "wise", replace(recipe, wise_ft=0.5))
    full, wise = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("full", "wise"))
    assert full.keys() == wise.keys() and any("lora_B" in k for k in full)
    for name in full:
        factor = 0.5 if "lora_B" in name else 1.0
        assert (wise[name] - factor * full[name]).abs().max() < 1e-6, name


def test_wise_ft_out_of_range_is_refused():
    with pytest.raises(TrainInputError, match="--wise-ft must be in"):
        recipes.check(_recipe("sft", wise_ft=0.0))


def test_kto_needs_a_batch_of_two(harvests, tmp_path):
    from train.kto import train_kto

    ds, _ = _load(harvests["relabelled"], "kto", "kto")
    with pytest.raises(TrainInputError, match="batch of at least 2"):
        train_kto(ds, harvests["model"], tmp_path, _recipe("kto", per_device_train_batch_size=1))


def test_chat_template_without_generation_markers(harvests):
    from trl.chat_template_utils import has_generation_markers, llama3_chat_template

    from train.sft import load_tokenizer, training_template

    tok = load_tokenizer(harvests["model"])
    assert training_template(tok, "tiny") is None  # ours has the markers
    tok.chat_template = llama3_chat_template  # a template TRL knows: its training copy is used
    assert has_generation_markers(training_template(tok, "llama3"))
    plain = load_tokenizer(harvests["model"])
    plain.chat_template = plain.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(TrainInputError, match="--chat-template FILE"):
        training_template(plain, "custom")


def test_sft_default_loss_covers_every_token(harvests, tmp_path):
    from train.sft import sft_trainer

    ds, _ = _load(harvests["w"], "sft", "sft")
    trainer = sft_trainer(ds, harvests["model"], tmp_path, _recipe("sft"))
    assert recipes.get("cpu", "sft").loss == recipes.get("paper", "sft").loss == "all"
    for row in trainer.train_dataset:  # labels are the ids (the collator masks padding only)
        assert row.get("labels", row["input_ids"]) == row["input_ids"]
    batch = trainer.data_collator.__wrapped__([trainer.train_dataset[i] for i in range(2)])  # TRL's, with its mask
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


def test_recipe_fields_named_after_trl_reach_its_configs_by_name(tmp_path):
    """Every Recipe field but ours is a field of TRL's configs under the same name: the TrainingArguments ones of
    all three, the method ones of those that have them; each config built from a recipe carries its values."""
    from trl import DPOConfig, KTOConfig, SFTConfig

    from train.dpo import dpo_config
    from train.kto import kto_config
    from train.sft import sft_config

    classes = {"sft": (SFTConfig, sft_config), "kto": (KTOConfig, kto_config), "dpo": (DPOConfig, dpo_config)}
    config_fields = {m: {f.name for f in fields(c)} for m, (c, _) in classes.items()}
    trl_named = [f.name for f in fields(recipes.Recipe) if f.name not in recipes.OURS]
    assert set(trl_named) <= set.union(*config_fields.values())
    assert {"learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps"} <= set.intersection(
        *config_fields.values())
    assert set(recipes.OURS).isdisjoint(set.intersection(*config_fields.values()))
    for name in recipes.RECIPES:
        for method, (config_class, build) in classes.items():
            recipe = recipes.get(name, method)
            given = {k: getattr(recipe, k) for k in trl_named if k in config_fields[method]}
            direct = config_class(output_dir=str(tmp_path), use_cpu=True, bf16=False, **given)
            built = build(recipe, tmp_path)
            assert {k: getattr(direct, k) for k in given} == {k: getattr(built, k) for k in given} == given


def test_a_recipe_recorded_with_the_old_field_names_reads_as_today():
    """The shipped M0's factory.json predates the TRL names (epochs, batch_size, ...): `upgrade` maps them."""
    recorded = json.loads((ROOT / "factory" / "m0" / "factory.json").read_text())["recipe"]
    assert {"epochs", "batch_size", "grad_accum", "lr_scheduler", "warmup"} <= set(recorded)
    recipe = recipes.Recipe(**recipes.upgrade(recorded))
    assert (recipe.num_train_epochs, recipe.per_device_train_batch_size, recipe.gradient_accumulation_steps,
            recipe.lr_scheduler_type, recipe.warmup_steps, recipe.max_steps) == (3, 4, 1, "linear", 0.05, 1200)
    today = json.loads(json.dumps(asdict(recipes.get("cpu", "sft"))))
    assert recipes.upgrade(today) == today


# -- the command -----------------------------------------------------------------------------------------------

def _invoke(harvests, *args: str):
    from factory.cli import cli

    return CliRunner().invoke(cli, ["train", *args], env=harvests["env"])


def test_help_has_examples():
    from factory.cli import cli

    for args in (["train"], ["train", "sft"], ["train", "kto"], ["train", "dpo"]):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output


def test_empty_view_is_a_user_error(harvests, tmp_path):
    result = _invoke(harvests, "sft", "-w", harvests["w"], "--model", harvests["model"], "--out", str(tmp_path / "o"),
                     "--min-reward", "2")
    assert result.exit_code == 2
    assert "Error: no rows in view sft: harvest first or lower --min-reward" in result.output


def test_test_tasks_are_refused(harvests, tmp_path):
    result = _invoke(harvests, "sft", "-w", harvests["w"], "--model", harvests["model"], "--out", str(tmp_path / "o"),
                     "--from-run", harvests["eval"])
    assert result.exit_code == 2
    assert f"1 of 1 rows in view sft come from test tasks (run {harvests['eval']})" in result.output
    assert "--allow-test-tasks" in result.output


def test_missing_model_and_full_out_are_user_errors(harvests, tmp_path):
    result = _invoke(harvests, "sft", "-w", harvests["w"], "--model", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "Error: no model folder at" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    result = _invoke(harvests, "sft", "-w", harvests["w"], "--model", harvests["model"],
                     "--out", str(tmp_path / "full"), "--force")
    assert result.exit_code == 2 and "was not written by `factory train`" in result.output
    assert (tmp_path / "full" / "notes.txt").exists()


def test_old_flag_spellings_still_work_with_one_deprecation_line(harvests, tmp_path):
    # --batch-size reaches the recipe: KTO refuses a per-device batch of 1 (before any model loads)
    result = _invoke(harvests, "kto", "-w", harvests["relabelled"], "--model", harvests["model"],
                     "--out", str(tmp_path / "o"), "--batch-size", "1")
    assert result.exit_code == 2, result.output
    assert "KTO needs a per-device batch of at least 2 (got 1)" in result.output
    assert result.stderr.splitlines()[0] == "Warning: --batch-size is deprecated; use --per-device-train-batch-size"
    # --run still filters the rows by run; --lr, --epochs and --grad-accum are still accepted
    result = _invoke(harvests, "sft", "-w", harvests["w"], "--model", harvests["model"], "--out", str(tmp_path / "o"),
                     "--run", harvests["eval"], "--lr", "1e-4", "--epochs", "2", "--grad-accum", "2")
    assert result.exit_code == 2 and f"1 of 1 rows in view sft come from test tasks (run {harvests['eval']})" in \
        result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert sorted(warnings) == ["Warning: --epochs is deprecated; use --num-train-epochs",
                                "Warning: --grad-accum is deprecated; use --gradient-accumulation-steps",
                                "Warning: --lr is deprecated; use --learning-rate",
                                "Warning: --run is deprecated; use --from-run"]
    assert "--grad-accum" not in _invoke(harvests, "sft", "--help").output


def test_deprecated_alias_sets_the_new_parameter():
    """Values of an old spelling land in the new option's parameter; the new spelling wins, a repeatable one adds."""
    from factory.cli.options import deprecated_alias

    seen = {}

    @click.command()
    @click.option("--learning-rate", type=float, default=3e-4)
    @deprecated_alias("--lr", "--learning-rate", "learning_rate", type=float)
    @click.option("--from-run", "run_ids", multiple=True)
    @deprecated_alias("--run", "--from-run", "run_ids", multiple=True)
    def command(learning_rate: float, run_ids: tuple[str, ...]) -> None:
        seen.update(learning_rate=learning_rate, run_ids=run_ids)

    for args, expected, warned in (([], (3e-4, ()), 0), (["--lr", "1e-3", "--run", "a"], (1e-3, ("a",)), 2),
                                   (["--learning-rate", "2e-3", "--lr", "1e-3"], (2e-3, ()), 1),
                                   (["--from-run", "a", "--run", "b"], (3e-4, ("a", "b")), 1)):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 0, result.output
        assert (seen["learning_rate"], seen["run_ids"]) == expected
        assert len(result.stderr.splitlines()) == warned


def test_rows_all_dropped_by_trl_is_one_user_error(harvests, tmp_path):
    """Cut to 16 tokens, no row keeps an assistant token: refused before TRL's first step, nothing recorded."""
    trained = _count(harvests["w"], "SELECT count(*) FROM runs WHERE kind = 'train'")
    result = _invoke(harvests, "sft", "-w", harvests["w"], "--model", harvests["model"], "--out", str(tmp_path / "o"),
                     "--max-length", "16", "--loss", "assistant")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: every one of the 6 rows of view sft was dropped before training: each is longer than --max-length "
        "16 tokens, or keeps no trainable token once cut; raise --max-length")
    assert not (tmp_path / "o").exists()
    assert _count(harvests["w"], "SELECT count(*) FROM runs WHERE kind = 'train'") == trained


@pytest.mark.slow
def test_cli_sft_end_to_end(harvests, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    result = run("train", "sft", "-w", harvests["w"], "--model", harvests["model"], "--out", str(out),
                 "--max-steps", "2", "--max-length", "256", "--per-device-train-batch-size", "2", "--json",
                 env=harvests["env"], cwd=harvests["root"])
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and summary["rows"] == 6 and math.isfinite(summary["final_loss"])
    manifest = json.loads((out / "factory.json").read_text())
    assert manifest["run_id"] == summary["run_id"] and manifest["view"] == "sft"
    assert manifest["data"]["runs"] == {harvests["teacher"]: 6} and manifest["data"]["task_splits"] == {"val": 6}
    assert manifest["view_sql"]["sft"].count("CREATE OR REPLACE VIEW sft") == 1
    assert {"dataset_rollouts", "trajectories", "chat_messages"} <= set(manifest["view_sql"])
    assert [r["run_id"] for r in manifest["source_runs"]] == [harvests["teacher"]]
    assert manifest["recipe"]["max_steps"] == 2 and manifest["result"]["steps"] == 2
    AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).chat_template
    with duckdb.connect(harvests["w"], read_only=True) as con:
        row = con.execute("SELECT kind, status, agent_model, split FROM runs WHERE run_id = ?",
                          [summary["run_id"]]).fetchall()
    assert row == [("train", "done", str(out), "val_harvest")]
    again = run("train", "sft", "-w", harvests["w"], "--model", harvests["model"], "--out", str(out),
                env=harvests["env"])
    assert again.returncode == 2 and "--force" in one_line_error(again)
    # --force replaces the folder only once the new data has been checked
    again = _invoke(harvests, "sft", "-w", harvests["w"], "--model", harvests["model"], "--out", str(out), "--force",
                    "--min-reward", "2")
    assert again.exit_code == 2 and (out / "factory.json").exists()


@pytest.mark.slow
def test_cli_lora_adapter_runs_in_eval(harvests, tmp_path):
    out = tmp_path / "lora"
    result = run("train", "sft", "-w", harvests["w"], "--model", harvests["model"], "--out", str(out), "--lora",
                 "--max-steps", "1", "--max-length", "256", "--per-device-train-batch-size", "2", env=harvests["env"],
                 cwd=harvests["root"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "adapter_config.json").exists() and (out / "factory.json").exists()
    w = str(tmp_path / "eval.duckdb")
    shutil.copy(harvests["w"], w)
    result = run("eval", "--agent", str(out), "--split", "val", "--limit", "1", "--max-turns", "1",
                 "--max-new-tokens", "4", "-w", w, "--json", env=harvests["env"], cwd=harvests["root"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["agent_model"] == str(out)


def test_cpu_training_projects_the_lm_head_in_tiles_that_fit_the_heap():
    """train/cpu.py shrinks TRL's token tile (a module constant of the installed TRL: renamed, this fails)."""
    from trl.kernels import chunked_logprob

    from train.cpu import CPU_TOKEN_TILE, heap_sized_tiles

    heap_sized_tiles()
    assert chunked_logprob.TOKEN_CHUNK_SIZE == CPU_TOKEN_TILE
