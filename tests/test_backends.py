"""Backends on real components: the tiny model through transformers, and a real `transformers serve`."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from search.backends.base import BackendError, Request, SamplingParams
from tests.conftest import free_port
from toolwoz.schemas import tool_schemas

SYSTEM = {"role": "system", "content": "You are a Cambridge travel agent."}
USERS = ["I need a train to cambridge on monday.", "Find me a cheap hotel in the east with free parking please.",
         "Hi", "Is there a museum in the centre? I would also like the phone number and postcode of it."]


@pytest.fixture(scope="session")
def backend(model_dir):
    from search.backends.transformers import TransformersBackend

    return TransformersBackend(str(model_dir), device="cpu", max_batch=16)


def _request(user: str = USERS[0], *, seed: int | None = 0, temperature: float = 1.0, max_new_tokens: int = 24,
             top_p: float = 1.0) -> Request:
    return Request([SYSTEM, {"role": "user", "content": user}], tool_schemas(),
                   SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed))


def _text(completion) -> str:
    return json.dumps(completion.message, sort_keys=True)


def test_concurrent_completes_run_as_one_batch(backend):
    requests = [_request(USERS[i % len(USERS)], seed=i) for i in range(8)]

    async def run():
        return await asyncio.gather(*(backend.complete(r) for r in requests))

    before = (backend.stats.batches, backend.stats.rows)
    completions = asyncio.run(run())
    assert (backend.stats.batches - before[0], backend.stats.rows - before[1]) == (1, 8)
    for c in completions:
        assert c.error is None and c.message["role"] == "assistant"
        assert c.prompt_tokens > 0 and 0 < c.completion_tokens <= 24 and c.latency_ms > 0
        assert c.finish_reason in ("stop", "length")
    assert [c.extra["seed"] for c in completions] == list(range(8))


def test_more_requests_than_max_batch_are_split(model_dir):
    from search.backends.transformers import TransformersBackend

    small = TransformersBackend(str(model_dir), device="cpu", max_batch=3)

    async def run():
        try:
            return await asyncio.gather(*(small.complete(_request(seed=i, max_new_tokens=4)) for i in range(7)))
        finally:
            await small.aclose()

    assert len(asyncio.run(run())) == 7 and (small.stats.batches, small.stats.rows) == (3, 7)


def test_seeds_decide_the_sample(backend):
    first = backend.generate_batch([_request(seed=s) for s in range(8)])
    again = backend.generate_batch([_request(seed=s) for s in range(8)])
    assert [_text(c) for c in first] == [_text(c) for c in again]
    assert len({_text(c) for c in first}) >= 7  # an untrained model at T=1: near-uniform tokens
    unseeded = backend.generate_batch([_request(seed=None), _request(seed=None)])
    assert unseeded[0].extra["seed"] != unseeded[1].extra["seed"]  # the drawn seed is recorded


def test_batched_rows_equal_rows_run_alone(backend):
    # Different prompt lengths (left padding), temperatures, top_p and limits in one batch.
    requests = [_request(USERS[0], seed=1), _request(USERS[1], seed=2, temperature=0.7, top_p=0.9),
                _request(USERS[2], seed=3, max_new_tokens=5), _request(USERS[3], seed=4, temperature=0),
                _request(USERS[1], seed=5, temperature=1.3, max_new_tokens=40)]
    batched = backend.generate_batch(requests)
    alone = [backend.generate_batch([r])[0] for r in requests]
    assert [_text(c) for c in batched] == [_text(c) for c in alone]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in alone]
    assert batched[2].completion_tokens <= 5 and batched[4].completion_tokens <= 40


def test_temperature_zero_is_greedy(backend):
    import torch

    from search.backends.parsing import parse_assistant

    completions = backend.generate_batch([_request(seed=s, temperature=0, max_new_tokens=12) for s in range(3)])
    assert len({_text(c) for c in completions}) == 1
    ids = backend.render(_request())
    with torch.inference_mode():  # plain transformers greedy decoding of the same prompt
        out = backend.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     do_sample=False, max_new_tokens=12, temperature=1.0, top_k=50, top_p=1.0,
                                     eos_token_id=backend.eos_ids, pad_token_id=backend.pad_id)
    new = out[0, len(ids):].tolist()
    end = next((k for k, t in enumerate(new) if t in backend.eos_ids), len(new))
    assert completions[0].completion_tokens == min(end + 1, len(new))
    text = backend.tokenizer.decode(new[:end], skip_special_tokens=True)
    assert completions[0].message == parse_assistant(text, backend.tokenizer)[0]


def test_context_overflow_is_reported_without_running(backend):
    long = " ".join(["cambridge"] * 3000)
    before = backend.stats.rows
    ok, over, tight = backend.generate_batch([_request(), _request(long), _request(max_new_tokens=2000)])
    assert backend.stats.rows - before == 1
    for c in (over, tight):
        assert c.finish_reason == "context_overflow" and c.message == {"role": "assistant", "content": ""}
        assert c.completion_tokens == 0 and c.prompt_tokens > c.extra["context_budget"]
    assert ok.finish_reason in ("stop", "length")


def _tokens(completion) -> list[int]:
    return completion.extra["token_ids"]


@pytest.fixture(scope="module")
def plain(model_dir):
    """The same model without any reuse: every prompt prefilled in full."""
    from search.backends.transformers import TransformersBackend

    return TransformersBackend(str(model_dir), device="cpu", prefix_cache_tokens=0)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_rows_tokens_do_not_depend_on_its_batch_or_the_cache(model_dir, plain, temperature):
    from search.backends.transformers import TransformersBackend

    cached = TransformersBackend(str(model_dir), device="cpu")
    target = _request(USERS[3], seed=11, temperature=temperature, max_new_tokens=20)
    alone = plain.generate_batch([target])[0]
    others = [_request(USERS[i], seed=20 + i, temperature=1.0, top_p=0.9, max_new_tokens=4 + 9 * i)
              for i in range(3)]
    in_batch = cached.generate_batch([others[0], target, others[1], others[2]])[1]  # cold cache, mixed lengths
    plain_batch = plain.generate_batch([others[2], others[0], target])[2]  # no cache, another batch
    with_twin = cached.generate_batch([_request(USERS[3], seed=12, temperature=temperature), target])[1]
    warm = cached.generate_batch([target])[0]  # the whole prompt is cached now
    assert warm.extra["cached_tokens"] == warm.prompt_tokens - 1  # only the last prompt token ran
    assert with_twin.extra["cached_tokens"] == with_twin.prompt_tokens  # its twin prefilled for it
    assert plain_batch.extra["cached_tokens"] == 0
    for completion in (in_batch, plain_batch, with_twin, warm):
        assert _tokens(completion) == _tokens(alone) and completion.message == alone.message
    assert cached.stats.cache_hits >= 2 and cached.stats.shared_rows == 1


def test_a_childs_prompt_reuses_its_parents_prompt_and_generated_tokens(model_dir, plain):
    from search.backends.transformers import TransformersBackend

    cached = TransformersBackend(str(model_dir), device="cpu")
    parent = _request(USERS[1], seed=5, max_new_tokens=12)
    first = cached.generate_batch([parent])[0]
    child_messages = [*parent.messages, first.message, {"role": "user", "content": "And one more thing."}]
    child = Request(child_messages, tool_schemas(), SamplingParams(max_new_tokens=12, seed=6))
    ids = cached.render(child)
    reused = cached.generate_batch([child])[0]
    # the parent's whole prompt, and its sampled turn as far as the re-rendered turn has the same tokens (the
    # last sampled token was never run through the model, so it has no K/V)
    prompt, fed = cached.render(parent), _tokens(first)[:-1]
    agree = next((k for k, (a, b) in enumerate(zip(ids[len(prompt):], fed)) if a != b), len(fed))
    assert reused.extra["cached_tokens"] == len(prompt) + agree
    assert _tokens(reused) == _tokens(plain.generate_batch([child])[0])


def test_finished_rows_leave_the_batch_without_changing_the_others(model_dir, plain):
    from search.backends.transformers import TransformersBackend

    backend = TransformersBackend(str(model_dir), device="cpu")
    requests = [_request(USERS[i % 4], seed=30 + i, max_new_tokens=n) for i, n in enumerate([2, 40, 3, 40, 5])]
    batched = backend.generate_batch(requests)
    assert backend.stats.compactions >= 1  # the short rows left before the long ones were done
    assert backend.stats.decode_rows < backend.stats.decode_steps * len(requests)
    for request, completion in zip(requests, batched):
        assert completion.completion_tokens == len(_tokens(completion)) <= request.params.max_new_tokens
        assert _tokens(completion) == _tokens(plain.generate_batch([request])[0])


def test_the_cache_stays_within_its_budget(model_dir, plain):
    from search.backends.transformers import TransformersBackend

    small = TransformersBackend(str(model_dir), device="cpu", prefix_cache_tokens=200)
    for round_ in range(3):
        requests = [_request(USERS[i] + " please" * round_, seed=i, max_new_tokens=8) for i in range(4)]
        completions = small.generate_batch(requests)
        assert small.loop.prefix_cache.tokens <= 200
        assert [_tokens(c) for c in completions] == [_tokens(plain.generate_batch([r])[0]) for r in requests]
    assert small.loop.prefix_cache.stats.evicted_tokens > 0 and small.stats.cache_hits > 0


def test_a_josh_tree_hits_the_cache_and_grows_as_without_it(env, model_dir, plain):
    from search.backends.transformers import TransformersBackend
    from search.josh import SearchConfig, run_rollout
    from search.runner import ToolRunner
    from toolwoz.environment import ToolWOZ
    from toolwoz.user_rule import RuleUser

    task = sorted((t for t in env.tasks.values() if "val_harvest" in t.splits), key=lambda t: t.task_id)[0]
    config = SearchConfig(beam=4, max_turns=3, max_new_tokens=16)

    def grow(backend):
        user = RuleUser(task.goal, 7)
        return asyncio.run(run_rollout(task, backend, user, ToolRunner(ToolWOZ(env)), config, rollout_id="r",
                                       run_id="x"))

    def content(result):  # every row but the timings
        return [{k: v for k, v in m.items() if k != "latency_ms"} for m in result.messages]

    cached = TransformersBackend(str(model_dir), device="cpu", max_batch=64)
    with_cache, without = grow(cached), grow(plain)
    assert with_cache.nodes == without.nodes and content(with_cache) == content(without)
    assert len(with_cache.nodes) > 6
    stats = cached.stats
    assert stats.shared_rows > 0  # siblings: byte-identical prompts, prefilled once
    assert stats.cache_hits > 0  # children: their parent's prompt and turn
    assert stats.prefill_tokens < 0.5 * stats.prompt_tokens
    assert stats.prompt_tokens == with_cache.rollout["prompt_tokens"]  # every prompt of the tree, counted once


def test_template_errors_fail_the_row_only(backend):
    bad = Request([{"role": "narrator", "content": "x"}], None, SamplingParams(max_new_tokens=4, seed=0))
    bad_row, good = backend.generate_batch([bad, _request(max_new_tokens=4)])
    assert bad_row.finish_reason == "error" and "unknown role" in bad_row.error
    assert good.error is None


def test_bad_model_path_is_a_backend_error(tmp_path):
    from search.backends.transformers import TransformersBackend

    with pytest.raises(BackendError, match="cannot load a tokenizer"):
        TransformersBackend(str(tmp_path / "no" / "such-model"))


def test_tokenizer_without_chat_template_is_a_backend_error(model_dir, tmp_path):
    from search.backends.transformers import TransformersBackend

    copy = Path(shutil.copytree(model_dir, tmp_path / "plain"))
    (copy / "chat_template.jinja").unlink()
    with pytest.raises(BackendError, match="no chat template"):
        TransformersBackend(str(copy))


# -- OpenAI-compatible endpoint -----------------------------------------------------------------------------


def test_unreachable_endpoint_is_a_completion_error():
    from search.backends.openai import OpenAIBackend

    client = OpenAIBackend("tiny", f"http://127.0.0.1:{free_port()}/v1", retries=2, backoff_s=0.01, timeout_s=2)

    async def run():
        try:
            return await asyncio.gather(client.complete(_request()), client.complete(_request(seed=1)))
        finally:
            await client.aclose()

    completions = asyncio.run(run())  # refused connections: the retries' backoff only, never the 2 s timeout
    for c in completions:
        assert c.finish_reason == "error" and "after 3 attempts" in c.error
        assert c.message == {"role": "assistant", "content": ""}


def test_a_server_without_auto_tool_choice_gets_tool_choice_none():
    """A plain `vllm serve` refuses the implied tool_choice "auto" with a 400; the backend asks again with
    "none" (tools still rendered, calls come back as text) and keeps asking that way."""
    import http.server
    import threading

    from search.backends.openai import OpenAIBackend

    bodies: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            if body.get("tool_choice") != "none":
                status, reply = 400, {"error": {"message": '"auto" tool choice requires --enable-auto-tool-choice '
                                                           'and --tool-call-parser to be set', "code": 400}}
            else:
                text = '<tool_call>{"name": "search_train", "arguments": {"day": "monday"}}</tool_call>'
                status, reply = 200, {"choices": [{"message": {"role": "assistant", "content": text},
                                                   "finish_reason": "stop"}],
                                      "usage": {"prompt_tokens": 40, "completion_tokens": 12}}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = OpenAIBackend("tiny", f"http://127.0.0.1:{server.server_address[1]}/v1", retries=0)

    async def run():
        try:
            return [await client.complete(_request(seed=s)) for s in range(2)]
        finally:
            await client.aclose()

    try:
        completions = asyncio.run(run())
    finally:
        server.shutdown()
    for c in completions:
        assert c.error is None and c.completion_tokens == 12
        (call,) = c.message["tool_calls"]
        assert call["function"]["name"] == "search_train"
    assert [b.get("tool_choice") for b in bodies] == [None, "none", "none"]
    assert all(b["tools"] for b in bodies)


@pytest.mark.slow
def test_openai_backend_against_transformers_serve(openai_server):
    from search.backends.openai import OpenAIBackend

    served, url = openai_server
    client = OpenAIBackend(served, url, concurrency=4, retries=1, backoff_s=0.1)
    history = [SYSTEM, {"role": "user", "content": USERS[0]},
               {"role": "assistant", "content": "", "tool_calls": [
                   {"type": "function", "function": {"name": "search_train", "arguments": {"day": "monday"}}}]},
               {"role": "tool", "tool_call_id": "call_0", "content": '[{"trainID": "TR7075"}]'}]

    async def run():
        try:
            first = await client.complete(_request(seed=3, max_new_tokens=16))
            again = await client.complete(_request(seed=3, max_new_tokens=16))
            rest = await asyncio.gather(
                client.complete(Request(history, tool_schemas(), SamplingParams(max_new_tokens=8, seed=1))),
                *(client.complete(_request(USERS[i], seed=i, max_new_tokens=8)) for i in range(3)))
            return first, again, rest
        finally:
            await client.aclose()

    first, again, rest = asyncio.run(run())
    for c in (first, again, *rest):
        assert c.error is None, c.error
        assert c.message["role"] == "assistant" and isinstance(c.message["content"], str)
        assert c.prompt_tokens > 0 and c.completion_tokens > 0 and c.latency_ms > 0
    assert first.completion_tokens <= 16 and all(c.completion_tokens <= 8 for c in rest)
    assert first.message == again.message  # sequential requests with one seed repeat (the server seeds globally)
