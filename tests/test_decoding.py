"""The decode loop on the real tiny model: same samples as transformers' `generate`, every cache layout alike."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from search.backends.decoding import DecodeLoop, Row, plan_groups

PROMPTS = ["I need a train to cambridge on monday.", "Hi", "Find me a cheap hotel in the east with free parking.",
           "Is there a museum in the centre? I would also like the phone number and postcode of it."]


@pytest.fixture(scope="module")
def tiny(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                         return_dict=True)["input_ids"] for p in PROMPTS]
    return model, tokenizer, [list(i) for i in ids]


def _loop(model, tokenizer, **kwargs) -> DecodeLoop:
    return DecodeLoop(model, eos_ids=[tokenizer.eos_token_id], pad_id=tokenizer.pad_token_id, **kwargs)


def _rows(ids, temperature=1.0, top_p=1.0, limit=16):
    return [Row(list(p), temperature, top_p, limit, seed=100 + k) for k, p in enumerate(ids)]


class GumbelPerRow(LogitsProcessor):
    """The backend's sampler when it ran on `model.generate`: per-row temperature and top-p, then per step
    one `torch.rand(vocab)` from each row's own seeded generator turned into Gumbel noise (greedy decoding
    then samples exactly)."""

    def __init__(self, rows):
        self.t = torch.tensor([r.temperature for r in rows]).unsqueeze(1)
        self.p = torch.tensor([r.top_p for r in rows]).unsqueeze(1)
        self.generators = [torch.Generator().manual_seed(r.seed) for r in rows]

    def __call__(self, input_ids, scores):
        scores = scores.float() / self.t
        ordered, index = torch.sort(scores)
        remove = ordered.softmax(-1).cumsum(-1) <= 1 - self.p
        remove[:, -1] = False
        scores = scores.masked_fill(remove.scatter(1, index, remove), float("-inf"))
        noise = torch.stack([-torch.log(-torch.log(torch.rand(scores.shape[-1], generator=g).clamp(1e-20, 1 - 1e-7)))
                             for g in self.generators])
        return scores + noise


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_samples_equal_generate_with_the_per_row_gumbel_sampler(tiny, temperature, top_p):
    model, tokenizer, ids = tiny
    rows = _rows(ids, temperature, top_p)
    _loop(model, tokenizer).run(rows)
    width = max(map(len, ids))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in ids])
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(),
                             generation_config=GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=None,
                                                                pad_token_id=tokenizer.pad_token_id),
                             logits_processor=LogitsProcessorList([GumbelPerRow(_rows(ids, temperature, top_p))]))
    for k, row in enumerate(rows):
        assert row.tokens == out[k, width:width + len(row.tokens)].tolist()
        assert len(row.tokens) == 16 or row.stopped


def test_the_transformers_cache_fallback_gives_the_same_tokens(tiny):
    model, tokenizer, ids = tiny
    packed, fallback = _loop(model, tokenizer), _loop(model, tokenizer)
    fallback.layout = None  # what a model with linear attention or shared K/V layers gets
    limits = [3, 16, 5, 16]
    a = [Row(list(p), 1.0, 1.0, n, seed=k) for k, (p, n) in enumerate(zip(ids, limits))]
    b = [Row(list(p), 1.0, 1.0, n, seed=k) for k, (p, n) in enumerate(zip(ids, limits))]
    packed.run(a)
    fallback.run(b)
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert fallback.stats.compactions >= 1 and fallback.prefix_cache.tokens == 0


def test_forced_tokens_stop_at_eos_and_their_kv_is_cached(tiny):
    model, tokenizer, ids = tiny
    loop = _loop(model, tokenizer, cache_tokens=10_000)
    turn = tokenizer("Sure, which day?", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id, 7, 7]
    short = Row(list(ids[0]), 1.0, 1.0, 32, seed=1, forced=turn)
    long_ = Row(list(ids[1]), 1.0, 1.0, 32, seed=2)
    loop.run([short, long_])
    assert short.stopped and short.tokens == turn[:turn.index(tokenizer.eos_token_id) + 1]
    child = ids[0] + short.tokens + [5, 6]
    # the prompt and the forced turn up to its eos (sampled last, so never run: the row left the batch at once)
    assert loop.prefix_cache.match(child, len(child) - 1).length == len(ids[0]) + len(short.tokens) - 1
    assert loop.stats.compactions == 1


def test_prefill_groups_split_where_padding_costs_more_than_a_forward():
    assert plan_groups([100, 98, 10, 9, 8], forward_cost=50, max_tokens=10_000) == [(0, 2), (2, 5)]
    assert plan_groups([100, 98, 10, 9, 8], forward_cost=10_000, max_tokens=10_000) == [(0, 5)]
    assert plan_groups([5, 5, 5], forward_cost=1, max_tokens=10_000) == [(0, 3)]
