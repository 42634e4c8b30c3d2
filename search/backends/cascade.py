"""Shared-prefix ("cascade") attention for the decode loop: every prompt token's K/V is read once per step.

JOSH's rows share most of their context: every row of a batch starts with the same system prompt, the rows of
one task share the conversation up to their branch point, siblings share everything but what they generate.
A flat buffer gives every row its own copy of that context, padded to the longest row, and each decode step
reads all of it. Here the batch's prompts become the segments of their prefix tree (a radix tree: a segment
is a run of tokens shared by exactly the same rows), each stored once; the tokens a row generates go to a
small buffer of its own. A decode step attends, per segment, from the queries of the rows under it to the
segment's keys, and per row to its own generated tokens, and merges the parts exactly with their
log-sum-exps (Hydragen; FlashInfer's cascade kernels; vLLM's cascade attention on GPU).

Segments of similar length share a `Bucket`: one padded tensor `[layers, 2, segments, heads, length, dim]`
(left-aligned, the padding masked) and one batched attention per layer; `plan_buckets` trades padding against
the fixed cost of a bucket's kernels. The model reaches `attend` through transformers' attention interface
(`install`): a forward given `cascade=` runs it, any other forward (prefill, `generate`) the model's own
attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from transformers import AttentionInterface

MIN_SHARED = 32  # tokens a shared segment holds at least (shorter runs go to each child)
BUCKET_COST_TOKENS = 1024  # a bucket's fixed cost (its kernels, per layer), in tokens of K/V read
QUERY_COST = 1 / 16  # a padded query slot per key, against reading that key (compute vs memory)
ROW_COST_TOKENS = 64  # a row's extra kernel task (its generated tokens apart from its prompt), in tokens


@dataclass
class Segment:
    """Tokens `[start, end)` of the prompts of `rows` (indices into the batch), identical in all of them."""

    start: int
    end: int
    rows: list[int]

    def __len__(self) -> int:
        return self.end - self.start


def common_prefixes(prompts: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """The batch's rows in lexicographic order of their prompts, and each adjacent pair's common prefix."""
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    if len(order) < 2:
        return order, []
    width = max(len(p) for p in prompts) + 1
    ids = -1 - torch.arange(len(order)).unsqueeze(1).repeat(1, width)  # after a prompt's end: unequal to all
    for k, i in enumerate(order):
        ids[k, :len(prompts[i])] = torch.from_numpy(np.asarray(prompts[i], dtype=np.int64))
    same = (ids[1:] == ids[:-1]).to(torch.int32)
    return order, same.cumprod(dim=1).sum(dim=1).tolist()


def distinct_tokens(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens of the prefix tree of `prompts`: what attention must read at the least (shared prefixes once)."""
    _, lcp = common_prefixes(prompts)
    return sum(len(p) for p in prompts) - sum(lcp)


def plan_segments(prompts: Sequence[Sequence[int]], min_shared: int = 0,
                  prefixes: tuple[list[int], list[int]] | None = None) -> list[Segment]:
    """The prefix tree of `prompts` as segments: every token of every prompt lies in exactly one segment
    holding that prompt's row. A shared run shorter than `min_shared` tokens is not a segment of its own: its
    tokens go to each of its children (a segment costs a kernel's fixed work per head). `prefixes`:
    `common_prefixes(prompts)`, when the caller has it."""
    order, lcp = prefixes or common_prefixes(prompts)
    lengths = [len(prompts[i]) for i in order]
    segments: list[Segment] = []
    stack = [(0, len(order), 0)] if order else []  # rows order[lo:hi] share their first `depth` tokens
    while stack:
        lo, hi, depth = stack.pop()
        shared = lengths[lo] if hi - lo == 1 else min(lcp[lo:hi - 1])
        longer = max(lengths[lo:hi]) > shared  # the run has children
        start = depth if longer and shared - depth < min_shared else shared  # where the children begin
        if shared > depth and start == shared:
            segments.append(Segment(depth, shared, sorted(order[lo:hi])))
        if hi - lo == 1:
            continue
        first = lo
        for k in range(lo, hi - 1):  # children: runs whose neighbours share more than `shared`
            if lcp[k] == shared:
                stack.append((first, k + 1, start))
                first = k + 1
        stack.append((first, hi, start))
    return segments


def plan_buckets(segments: Sequence[Segment], cost_tokens: int = BUCKET_COST_TOKENS,
                 query_cost: float = QUERY_COST) -> tuple[list[list[int]], float]:
    """Group segments (indices) into buckets minimising padded keys read, padded query slots x keys x
    `query_cost`, plus `cost_tokens` per bucket; a bucket is a run of the segments sorted by length. Returns the
    buckets and their cost (in tokens of K/V read)."""
    order = sorted(range(len(segments)), key=lambda s: -len(segments[s]))
    n = len(order)
    lengths = np.array([len(segments[s]) for s in order], dtype=np.float64)  # descending
    rows = np.array([len(segments[s].rows) for s in order], dtype=np.float64)
    best, cut = np.zeros(n + 1), np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):  # the last bucket is order[i:j] for the best i; its longest segment is order[i]
        slots = np.maximum.accumulate(rows[:j][::-1])[::-1]  # most rows of order[i:j], for every i
        cost = best[:j] + (j - np.arange(j)) * lengths[:j] * (1 + query_cost * slots) + cost_tokens
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    buckets, j = [], n
    while j > 0:
        buckets.append(order[cut[j]:j])
        j = cut[j]
    return buckets[::-1], float(best[n])


@dataclass
class Plan:
    """How a batch's prompts would be stored for a shared decode, and what a step would cost (in tokens of K/V
    read per layer, fixed costs included) against the flat buffer's."""

    segments: list[Segment]
    buckets: list[list[int]]
    cost: float
    flat_cost: float
    distinct: int  # tokens of the prompts' prefix tree (`distinct_tokens`)

    @property
    def pays(self) -> bool:
        return self.cost < self.flat_cost


def plan(prompts: Sequence[Sequence[int]]) -> Plan:
    """The segments and buckets of `prompts`; each row also pays a kernel task of its own generated tokens."""
    prefixes = common_prefixes(prompts)
    segments = plan_segments(prompts, MIN_SHARED, prefixes)
    buckets, cost = plan_buckets(segments)
    rows, tokens = len(prompts), sum(len(p) for p in prompts)
    flat = rows * max((len(p) for p in prompts), default=0) * (1 + QUERY_COST)
    return Plan(segments, buckets, cost + rows * ROW_COST_TOKENS, flat, tokens - sum(prefixes[1]))


@dataclass
class Bucket:
    kv: torch.Tensor  # [layers, 2, segments, heads, length, dim], each segment left-aligned
    bias: torch.Tensor  # [segments, 1, 1, length]: 0 on a segment's tokens, -inf on its padding
    members: torch.Tensor  # [segments, slots]: the batch row of each query slot; `rows` (a dummy) when empty
    segments: list[Segment]


class Cascade:
    """The K/V of one decode run in shared form: prompt segments once, each row's generated tokens apart."""

    def __init__(self, kv: torch.Tensor, prompts: Sequence[Sequence[int]], width: int, limit: int,
                 planned: Plan | None = None):
        """`kv`: the prefilled flat buffer `[layers, 2, rows, heads, columns, dim]`, row r's prompt right-aligned
        to end at column `width`; `limit`: the most tokens a row generates; `planned`: `plan(prompts)`."""
        layers, _, rows, heads, _, dim = kv.shape
        self.prompts = [list(p) for p in prompts]
        self.rows, self.heads = rows, heads
        planned = planned or plan(self.prompts)
        segments = planned.segments
        self.path: list[list[Segment]] = [[] for _ in range(rows)]  # each batch row's segments
        for seg in segments:
            for r in seg.rows:
                self.path[r].append(seg)
        self.buckets = []
        for members in planned.buckets:
            segs = [segments[s] for s in members]
            length, slots = max(len(s) for s in segs), max(len(s.rows) for s in segs)
            store = kv.new_empty((layers, 2, len(segs), heads, length, dim))
            bias = kv.new_full((len(segs), 1, 1, length), float("-inf"))
            for k, seg in enumerate(segs):
                source = seg.rows[0]
                start = width - len(self.prompts[source])
                store[:, :, k, :, :len(seg)] = kv[:, :, source, :, start + seg.start:start + seg.end]
                store[:, :, k, :, len(seg):] = 0  # masked, but must be finite (0 x NaN is NaN)
                bias[k, ..., :len(seg)] = 0
            index = torch.tensor([s.rows + [rows] * (slots - len(s.rows)) for s in segs], dtype=torch.long)
            self.buckets.append(Bucket(store, bias, index.to(kv.device), segs))
        self.generated = kv.new_empty((layers, 2, rows, heads, limit, dim))
        self.live = list(range(rows))  # batch row of each current row
        self.keep(list(range(rows)))

    def keep(self, index: list[int]) -> None:
        """Only the current rows at `index` stay; segments no kept row needs are dropped."""
        device = self.generated.device
        self.live = [self.live[k] for k in index]
        if len(index) != self.generated.shape[2]:
            self.generated = self.generated.index_select(2, torch.tensor(index, dtype=torch.long, device=device))
        current = torch.full((self.rows + 1,), len(index), dtype=torch.long)  # batch row -> current row
        current[torch.tensor(self.live, dtype=torch.long)] = torch.arange(len(index))
        current = current.to(device)
        alive, buckets = set(self.live), []
        for bucket in self.buckets:
            used = [k for k, seg in enumerate(bucket.segments) if alive.intersection(seg.rows)]
            if len(used) < len(bucket.segments) and used:
                pick = torch.tensor(used, device=device)
                bucket = Bucket(bucket.kv.index_select(2, pick), bucket.bias[pick], bucket.members[pick],
                                [bucket.segments[k] for k in used])
            if used:
                buckets.append(bucket)
        self.buckets = buckets
        self.where = {id(seg): (bucket, k) for bucket in buckets for k, seg in enumerate(bucket.segments)}
        self.queries = [current[bucket.members] for bucket in buckets]  # [segments, slots] current rows
        self.gather = torch.cat([q.reshape(-1) for q in self.queries]) if buckets else None
        self._targets: tuple[int, torch.Tensor] | None = None

    def columns(self, row: int, start: int, end: int) -> torch.Tensor:
        """K/V `[layers, 2, heads, end - start, dim]` of tokens `[start, end)` of current row `row` (its prompt,
        then what it generated and fed), a copy."""
        batch_row, parts = self.live[row], []
        for seg in self.path[batch_row]:
            a, b = max(start, seg.start), min(end, seg.end)
            if a < b:
                bucket, k = self.where[id(seg)]
                parts.append((a, bucket.kv[:, :, k, :, a - seg.start:b - seg.start]))
        prompt = len(self.prompts[batch_row])
        if end > prompt:
            parts.append((max(start, prompt), self.generated[:, :, row, :, max(start, prompt) - prompt:end - prompt]))
        parts.sort(key=lambda p: p[0])
        return torch.cat([p for _, p in parts], dim=3)

    def read_tokens(self, steps: int) -> int:
        """Tokens of K/V per layer a decode step reads after `steps` fed tokens (padding included)."""
        return sum(b.kv.shape[2] * b.kv.shape[4] for b in self.buckets) + len(self.live) * (steps + 1)

    def attend(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scale: float) -> torch.Tensor:
        """One decode step's attention: `query` `[rows, q_heads, 1, dim]`, `key`/`value` the rows' generated
        tokens `[rows, kv_heads, steps + 1, dim]`. Returns `[rows, 1, q_heads, dim]`."""
        rows, q_heads, _, dim = query.shape
        heads = key.shape[1]
        group = q_heads // heads  # query heads per K/V head
        query = query.reshape(rows, heads, group, dim)
        out, lse = _attention(query, key, value, None, scale)
        outs, lses = [out.reshape(-1, dim)], [lse.reshape(-1)]
        if self.gather is not None:  # every bucket's query slots in one gather (the dummy row's query is 0)
            slots_q = torch.cat([query, query.new_zeros((1, heads, group, dim))])[self.gather]
            start = 0
            for bucket, members in zip(self.buckets, self.queries):
                segs, slots = members.shape
                q = slots_q[start:start + segs * slots].view(segs, slots, heads, group, dim).transpose(1, 2)
                o, l = _attention(q.reshape(segs, heads, slots * group, dim), bucket.kv[layer, 0],
                                  bucket.kv[layer, 1], bucket.bias, scale)
                outs.append(o.reshape(-1, dim))
                lses.append(l.reshape(-1))
                start += segs * slots
        merged = _merge(torch.cat(outs), torch.cat(lses), self._merge_targets(group), rows * heads * group,
                        (rows + 1) * heads * group)
        return merged.view(rows, 1, q_heads, dim)

    def _merge_targets(self, group: int) -> torch.Tensor:
        """Where each attention part lands, as an index into `[rows + 1 (the dummy), heads, group]` flattened:
        the generated part in `(row, head, g)` order, then each bucket's output in `(segment, head, slot, g)`."""
        if self._targets is None or self._targets[0] != group:
            rows, heads, device = len(self.live), self.heads, self.generated.device
            parts = [torch.arange(rows * heads * group, device=device)]
            h = torch.arange(heads, device=device)[None, :, None, None]
            g = torch.arange(group, device=device)[None, None, None, :]
            for members in self.queries:
                parts.append(((members[:, None, :, None] * heads + h) * group + g).reshape(-1))
            self._targets = (group, torch.cat(parts))
        return self._targets[1]


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
               scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of `q` `[b, heads, queries, dim]` over `k`/`v` `[b, heads, keys, dim]` and the
    log-sum-exp of each query's scores."""
    if q.device.type == "cpu" and q.dtype == torch.float32:  # the fused kernel returns the log-sum-exp
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias,
                                                                             scale=scale)[:2]
        return out, lse
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if bias is not None:
        scores = scores + bias
    lse = torch.logsumexp(scores, dim=-1)
    return torch.matmul(torch.exp(scores - lse[..., None]).to(v.dtype), v), lse


def _merge(out: torch.Tensor, lse: torch.Tensor, target: torch.Tensor, size: int, total: int) -> torch.Tensor:
    """Combine attention parts `out` `[parts, dim]` with log-sum-exps `lse` `[parts]` at their `target`s (below
    `size`, or a dummy below `total`): each part weighs exp(lse - its target's log-sum-exp)."""
    top = lse.new_full((total,), float("-inf")).scatter_reduce_(0, target, lse, "amax")
    weight = torch.exp(lse - top[target])
    norm = lse.new_zeros((total,)).index_add_(0, target, weight)
    merged = out.new_zeros((total, out.shape[1])).index_add_(0, target, out * weight[:, None].to(out.dtype))
    return merged[:size] / norm[:size, None].to(out.dtype)


def install(model: Any) -> bool:
    """Route `model`'s attention through `Cascade.attend` whenever a forward passes `cascade=`, and through its
    own attention otherwise. False (nothing changed) when that is not one of transformers' registered
    attentions (e.g. `eager`, which each model defines for itself), or when a probe forward shows that the
    model does not hand `cascade=` to every layer's attention."""
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
        own = model.config._attn_implementation
        if own not in AttentionInterface._global_mapping or own not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
            return False
        own_attention, name = AttentionInterface._global_mapping[own], f"josh_cascade_{own}"

        def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, *args: Any, cascade: Any = None,
                      **kwargs: Any) -> tuple[torch.Tensor, None]:
            if cascade is None:
                return own_attention(module, query, key, value, attention_mask, *args, **kwargs)
            return cascade.attend(module.layer_idx, query, key, value, kwargs.get("scaling") or module.scaling), None

        AttentionInterface.register(name, attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[own])
        model.set_attn_implementation(name)
        if model.config._attn_implementation == name and _reaches_every_layer(model):
            return True
        model.set_attn_implementation(own)
    except (AttributeError, ImportError, NotImplementedError, TypeError, ValueError):
        pass
    return False


class _Probe:
    """Stands in for a Cascade in one forward: records which layers' attention it reached."""

    def __init__(self) -> None:
        self.layers: set[int] = set()

    def attend(self, layer: int, query: torch.Tensor, *args: Any) -> torch.Tensor:
        self.layers.add(layer)
        rows, heads, length, dim = query.shape
        return query.new_zeros((rows, length, heads, dim))


def _reaches_every_layer(model: Any) -> bool:
    probe = _Probe()
    with torch.inference_mode():
        model(input_ids=torch.ones((1, 1), dtype=torch.long, device=model.device), use_cache=False, cascade=probe)
    return probe.layers == set(range(model.config.num_hidden_layers))
