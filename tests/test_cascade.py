"""Shared-prefix (cascade) decode: the prefix-tree plan, the exact attention merge, and the same trees."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search.backends.cascade import Cascade, distinct_tokens, plan, plan_segments

# Prompts that share prefixes the way JOSH's do: a common start, a few branches, tails of their own.
prompts_st = st.lists(st.integers(0, 3), min_size=0, max_size=12).flatmap(
    lambda base: st.lists(
        st.tuples(st.integers(0, len(base)), st.lists(st.integers(0, 3), min_size=0, max_size=10)).map(
            lambda cut: (base[:cut[0]] + cut[1]) or [1]),
        min_size=1, max_size=8))


@given(prompts_st, st.sampled_from([0, 2, 5, 100]))
@settings(max_examples=200, deadline=None)
def test_every_prompt_token_lies_in_exactly_one_segment_of_identical_tokens(prompts, min_shared):
    covered = [[0] * len(p) for p in prompts]
    for seg in plan_segments(prompts, min_shared):
        assert len({tuple(prompts[r][seg.start:seg.end]) for r in seg.rows}) == 1
        assert all(len(prompts[r]) >= seg.end for r in seg.rows) and len(seg) > 0
        for r in seg.rows:
            for t in range(seg.start, seg.end):
                covered[r][t] += 1
    assert all(c == 1 for row in covered for c in row)


@given(prompts_st)
@settings(max_examples=200, deadline=None)
def test_distinct_tokens_is_the_size_of_the_prefix_tree(prompts):
    nodes = {tuple(p[:k]) for p in prompts for k in range(1, len(p) + 1)}
    assert distinct_tokens(prompts) == plan(prompts).distinct == len(nodes)
    # Without a minimum length, the segments are that tree: each distinct token stored once.
    assert sum(len(s) for s in plan_segments(prompts)) == len(nodes)


def _flat_buffer(prompts, heads, dim, extra, seed=0):
    """K/V `[1, 2, rows, heads, width + extra, dim]` with prompts right-aligned; a token's K/V depends only on
    its prefix (as a model's does), so shared tokens are identical in every row."""
    gen = torch.Generator().manual_seed(seed)
    width = max(len(p) for p in prompts)
    kv = torch.zeros((1, 2, len(prompts), heads, width + extra, dim))
    by_prefix: dict[tuple[int, ...], torch.Tensor] = {}
    for r, p in enumerate(prompts):
        for t in range(len(p)):
            key = tuple(p[:t + 1])
            if key not in by_prefix:
                by_prefix[key] = torch.randn((2, heads, dim), generator=gen)
            kv[0, :, r, :, width - len(p) + t] = by_prefix[key]
    return kv, width


def _reference(query, prompt_kv, generated_k, generated_v, scale):
    """Plain softmax attention of each row over its prompt's K/V and its generated tokens."""
    rows, q_heads, _, dim = query.shape
    heads = generated_k.shape[1]
    out = torch.empty((rows, 1, q_heads, dim), dtype=query.dtype)
    for r in range(rows):
        k = torch.cat([prompt_kv[r][0], generated_k[r]], dim=1).repeat_interleave(q_heads // heads, dim=0)
        v = torch.cat([prompt_kv[r][1], generated_v[r]], dim=1).repeat_interleave(q_heads // heads, dim=0)
        weights = torch.softmax(query[r] @ k.transpose(-1, -2) * scale, dim=-1)  # [q_heads, 1, keys]
        out[r, 0] = (weights @ v)[:, 0]
    return out


@pytest.mark.parametrize("group,dtype", [(1, torch.float32), (2, torch.float32), (2, torch.float64)])
def test_cascade_attention_equals_attention_over_each_rows_whole_context(group, dtype):
    """float32 on CPU runs the fused kernel; float64 the matmul path other devices and dtypes take."""
    base = list(range(3, 60))
    prompts = [base + [7, 8, 9], base + [7, 8, 9], base + [7, 5], base[:20] + [4] * 30, base + [7, 8, 9, 10, 11],
               [2] * 40]
    heads, dim, generated = 2, 8, 3
    kv, width = _flat_buffer(prompts, heads, dim, extra=8)
    kv = kv.to(dtype)
    cascade = Cascade(kv, prompts, width, limit=8)
    stored = sum(len(seg) for bucket in cascade.buckets for seg in bucket.segments)
    assert stored < sum(map(len, prompts))  # shared tokens stored once
    gen = torch.Generator().manual_seed(1)
    query = torch.randn((len(prompts), heads * group, 1, dim), generator=gen, dtype=dtype)
    gk, gv = (torch.randn((len(prompts), heads, generated, dim), generator=gen, dtype=dtype) for _ in range(2))
    prompt_kv = [kv[0, :, r, :, width - len(p):width] for r, p in enumerate(prompts)]
    got = cascade.attend(0, query, gk, gv, scale=1 / math.sqrt(dim))
    torch.testing.assert_close(got, _reference(query, prompt_kv, gk, gv, 1 / math.sqrt(dim)), atol=1e-5, rtol=1e-5)

    keep = [5, 0, 3]  # rows leave the batch: the rest attend as before, segments nobody needs are dropped
    segments_before = sum(len(b.segments) for b in cascade.buckets)
    cascade.keep(keep)
    assert sum(len(b.segments) for b in cascade.buckets) < segments_before
    got = cascade.attend(0, query[keep], gk[keep], gv[keep], scale=1 / math.sqrt(dim))
    want = _reference(query[keep], [prompt_kv[k] for k in keep], gk[keep], gv[keep], 1 / math.sqrt(dim))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for row, k in enumerate(keep):  # what the prefix cache stores: the row's own tokens, in order
        torch.testing.assert_close(cascade.columns(row, 0, len(prompts[k])), prompt_kv[k].unsqueeze(0))


def test_a_plan_pays_for_many_rows_sharing_a_long_prefix_and_not_for_a_few_short_rows():
    system = list(range(3, 400))
    assert plan([system + [t] * 20 for t in range(40)]).pays
    assert not plan([[t] * 30 for t in range(3)]).pays


def _loop(model_dir, share: bool):
    from transformers import AutoModelForCausalLM

    from search.backends.decoding import DecodeLoop

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    return DecodeLoop(model, eos_ids=[model.config.eos_token_id], pad_id=0, cache_tokens=100_000, share_prefix=share)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_decode_generates_what_flat_decode_does_and_caches_the_same_blocks(model_dir, temperature):
    from search.backends.decoding import LoopStats, Row

    system = [(7 * i) % 500 + 3 for i in range(300)]
    prompts = [system + [(k * 13 + i) % 500 + 3 for i in range(20 + 17 * k)] for k in range(12)]
    prompts += [list(prompts[0]), list(prompts[3])]  # siblings: identical prompts
    outcomes = {}
    for share in (False, True):
        loop, stats = _loop(model_dir, share), LoopStats()
        rows = [Row(list(p), temperature, 1.0, limit=4 + 3 * (k % 5), seed=k) for k, p in enumerate(prompts)]
        loop.run(rows, stats)
        outcomes[share] = ([r.tokens for r in rows], stats, sorted(loop.prefix_cache._index))
    (flat_tokens, flat, flat_blocks), (shared_tokens, shared, shared_blocks) = outcomes[False], outcomes[True]
    assert shared.shared_runs == 1 and flat.shared_runs == 0
    differing = sum(a != b for a, b in zip(flat_tokens, shared_tokens))
    assert differing == 0, f"{differing} of {len(prompts)} rows differ between flat and shared decode"
    assert shared_blocks == flat_blocks
    assert shared.kv_floor_tokens == flat.kv_floor_tokens
    assert shared.kv_read_tokens < 0.5 * flat.kv_read_tokens <= flat.kv_read_tokens


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_harvest_builds_the_same_trees_with_shared_and_flat_decode(env, model_dir, temperature):
    from search.backends.transformers import TransformersBackend
    from search.josh import SearchConfig, run_rollout
    from search.runner import ToolRunner
    from toolwoz.environment import ToolWOZ
    from toolwoz.user_rule import RuleUser

    tasks = sorted((t for t in env.tasks.values() if "val_harvest" in t.splits), key=lambda t: t.task_id)[:4]
    config = SearchConfig(beam=4, max_turns=3, max_new_tokens=16, temperature=temperature)

    def harvest(backend):
        async def all_tasks():
            return await asyncio.gather(*(
                run_rollout(task, backend, RuleUser(task.goal, 7), ToolRunner(ToolWOZ(env)), config,
                            rollout_id=f"r{k}", run_id="x") for k, task in enumerate(tasks)))
        return asyncio.run(all_tasks())

    def nodes(results):  # every node's messages, timings aside
        return [[{k: v for k, v in m.items() if k != "latency_ms"} for m in r.messages] for r in results]

    shared = TransformersBackend(str(model_dir), device="cpu", max_batch=64)
    flat = TransformersBackend(str(model_dir), device="cpu", max_batch=64, share_prefix=False)
    with_sharing, without = harvest(shared), harvest(flat)
    assert shared.stats.shared_runs > 0 and flat.stats.shared_runs == 0
    assert [r.nodes for r in with_sharing] == [r.nodes for r in without]
    a, b = nodes(with_sharing), nodes(without)
    differing = sum(x != y for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    assert differing == 0 and sum(map(len, a)) > 20, f"{differing} messages differ"
    assert shared.stats.kv_read_tokens < flat.stats.kv_read_tokens


def test_a_model_whose_attention_cannot_be_routed_decodes_flat(model_dir):
    from transformers import AutoModelForCausalLM

    from search.backends.decoding import DecodeLoop, LoopStats, Row

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    loop = DecodeLoop(model, eos_ids=[model.config.eos_token_id], pad_id=0, cache_tokens=1000)
    assert not loop.shared and model.config._attn_implementation == "eager"
    stats = LoopStats()
    loop.run([Row([5] * 300 + [k], 0.0, 1.0, limit=3, seed=k) for k in range(20)], stats)
    assert stats.shared_runs == 0 and stats.decode_steps > 0
