"""Batched prefill + decode over a Hugging Face causal LM's forward, with per-row sampling and prefix reuse.

One `DecodeLoop.run(rows)` answers a batch of token-id prompts:
1. identical prompts in the batch are prefilled once (JOSH siblings); every other prompt takes its longest
   cached prefix from the `PrefixCache`, so only the uncached suffix runs through the model;
2. all rows share one preallocated K/V buffer `[layers, 2, rows, kv_heads, columns, head_dim]`, right-aligned
   (every row's next token sits in the same column; left padding is masked and each row gets its true
   `position_ids`, so RoPE sees the same positions as a row alone). Rows are sorted by uncached length and
   prefilled in groups (contiguous row ranges, planned so the padding costs little); a group's queries are its
   rows' last `width` tokens, so a row with less to compute recomputes a few cached tokens rather than leave a
   hole between its cached prefix and its suffix;
3. decode reads the prompts' K/V in shared form where that pays (`cascade.py`: the segments of the prompts'
   prefix tree, each stored and read once per step, and each row's generated tokens apart; `SharedKV`), else
   from the flat buffer (`FlatKV`: one column appended per step in place). Rows that stop (eos or their own
   `max_new_tokens`) leave the batch once a quarter of it has stopped and carrying them would cost more than
   copying the others (compaction); their tokens' K/V go into the prefix cache.
A row's tokens depend only on (prompt, seed, params), up to float rounding: each row has its own seeded
Gumbel stream (argmax(logits / T + Gumbel) is an exact sample of softmax(logits / T)), drawn in chunks of
`NOISE_CHUNK` steps with one generator per row (on CPU the very numbers of one draw per step).

Models whose cache is not one full-attention K/V pair of the same shape per layer (linear attention, shared
or compressed K/V) take the same loop with transformers' own `DynamicCache` and without reuse.
"""

from __future__ import annotations

import inspect
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer, DynamicSlidingWindowLayer

from search.backends import cascade
from search.backends.cascade import Cascade, distinct_tokens
from search.backends.prefix_cache import Match, PrefixCache

NOISE_CHUNK = 8  # decode steps of Gumbel noise per generator call (fixed: a stream must not depend on the batch)


@dataclass
class Row:
    """One prompt to answer; `tokens` and the counters are filled by `DecodeLoop.run`."""

    ids: list[int]
    temperature: float
    top_p: float
    limit: int  # max new tokens, >= 1
    seed: int
    forced: list[int] | None = None  # teacher forcing: emit these tokens instead of sampling (benchmarks)
    tokens: list[int] = field(default_factory=list)
    stopped: bool = False  # ended with an eos token
    cached: int = 0  # prompt tokens not computed: from the prefix cache or an identical prompt in the batch
    computed: int = 0  # prompt tokens run through the model (recomputed cached ones included)


@dataclass
class LoopStats:
    """Token and time counters, accumulated over every `run`."""

    prompt_tokens: int = 0  # what a loop without reuse would prefill (no padding)
    prefill_tokens: int = 0  # prompt tokens run through the model
    prefill_padded: int = 0  # rows x columns of the prefill forwards (padding included)
    cached_tokens: int = 0
    cache_hits: int = 0  # rows that reused at least one cached token
    shared_rows: int = 0  # rows whose prompt an identical row in the batch prefilled
    forwards: int = 0
    decode_steps: int = 0
    decode_rows: int = 0  # rows x decode steps (finished rows still in the buffer included)
    compactions: int = 0
    shared_runs: int = 0  # decode runs that read shared prompt tokens once (cascade.py); the others read flat
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_forward_s: float = 0.0  # of decode_s: the model's forwards
    sample_s: float = 0.0  # of decode_s: sampling
    decode_cpu_s: float = 0.0  # CPU time of the decoding thread (decode_s minus this: waiting, e.g. for the GIL)
    kv_read_tokens: int = 0  # per layer, summed over decode steps: K/V tokens the attention read (padding included)
    kv_floor_tokens: int = 0  # the same for the distinct tokens of the live rows' contexts (shared prefixes once)


class SlotLayer(DynamicLayer):
    """One layer's K/V: a view of rows of the shared buffer, written in place (no regrowth per step)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self._k, self._v, self.length = keys, values, length
        self.device, self.is_initialized = keys.device, True
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[-2]
        self._k[:, :, self.length:end] = key_states
        self._v[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_max_length(self) -> int:
        return self._k.shape[-2]


class Sampler:
    """Per-row temperature, top-p and seeded Gumbel noise for a batch whose rows all sit at the same step."""

    def __init__(self, rows: Sequence[Row], vocab: int, device: torch.device):
        self.temperature = torch.tensor([r.temperature if r.temperature > 0 else 1.0 for r in rows],
                                        device=device).unsqueeze(1)
        self.top_p = torch.tensor([r.top_p for r in rows], device=device).unsqueeze(1)
        self.nucleus = [i for i, r in enumerate(rows) if r.top_p < 1]  # rows that need a sort per step
        self.generators = [torch.Generator(device=device).manual_seed(int(r.seed) & 0xFFFF_FFFF_FFFF_FFFF)
                           if r.temperature > 0 else None for r in rows]
        self.noisy = torch.tensor([g is not None for g in self.generators], device=device)
        self.noise = (torch.zeros(len(rows), NOISE_CHUNK, vocab, device=device)
                      if any(g is not None for g in self.generators) else None)

    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        scores = logits.float() / self.temperature
        if self.nucleus:
            scores[self.nucleus] = self._top_p(scores[self.nucleus], self.top_p[self.nucleus])
        if self.noise is not None:
            if step % NOISE_CHUNK == 0:
                self._draw()
            scores = scores + self.noise[:, step % NOISE_CHUNK]
        return scores.argmax(dim=-1)

    def _draw(self) -> None:
        """The next NOISE_CHUNK steps of every sampling row's stream: Gumbel(0, 1) = -log(-log(U))."""
        assert self.noise is not None
        for row, generator in enumerate(self.generators):
            if generator is not None:
                torch.rand(self.noise.shape[1:], generator=generator, device=self.noise.device, out=self.noise[row])
        gumbel = -torch.log(-torch.log(self.noise.clamp_(min=1e-20, max=1 - 1e-7)))
        self.noise = torch.where(self.noisy[:, None, None], gumbel, 0.0)  # greedy rows: no noise

    @staticmethod
    def _top_p(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
        # As transformers' TopPLogitsWarper, with one threshold per row; the top token always survives.
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[:, -1] = False
        return scores.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))

    def keep(self, index: list[int]) -> None:
        """Only the rows at `index` stay in the batch."""
        self.temperature, self.top_p = self.temperature[index], self.top_p[index]
        self.nucleus = [k for k, i in enumerate(index) if i in set(self.nucleus)]
        self.generators = [self.generators[i] for i in index]
        self.noisy = self.noisy[index]
        if self.noise is not None:
            self.noise = self.noise[index]


@dataclass(frozen=True)
class Layout:
    """The K/V shape of one token, identical in every layer: `[layers, 2, kv_heads, head_dim]`."""

    layers: int
    heads: int
    head_dim: int
    dtype: torch.dtype

    def bytes_per_token(self) -> int:
        return self.layers * 2 * self.heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()


class Buffers:
    """Large per-batch tensors (the prefilled K/V buffer, its compacted copies) in memory kept from batch to batch.
    On CPU a fresh tensor of hundreds of MB is a fresh `mmap` whose every page faults in on first write (glibc
    maps any block above 32 MB itself); reusing the same memory spares the kernel that work. Off: plain
    `torch.empty` (a GPU's caching allocator already reuses its memory)."""

    def __init__(self, reuse: bool):
        self.reuse = reuse
        self._kept: dict[str, torch.Tensor] = {}

    def empty(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of `shape`; the last one taken under `name` is no longer valid."""
        if not self.reuse:
            return torch.empty(tuple(shape), dtype=dtype, device=device)
        size = math.prod(shape)
        kept = self._kept.get(name)
        if kept is None or kept.numel() < size or kept.dtype != dtype or kept.device != device:
            self._kept.pop(name, None)  # freed before the larger one is taken
            kept = self._kept[name] = torch.empty(size, dtype=dtype, device=device)
        return kept[:size].view(tuple(shape))


def probe_layout(model: Any, cache_kw: str) -> Layout | None:
    """The packed layout when every layer keeps one plain K/V pair of the same shape, else None."""
    with torch.inference_mode():
        out = model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=model.device),
                    **{cache_kw: DynamicCache(config=model.config)}, use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers):
        return None
    shapes = {(tuple(layer.keys.shape), tuple(layer.values.shape)) for layer in layers if layer.keys is not None}
    if len(shapes) != 1 or any(layer.keys is None for layer in layers):
        return None
    (k, v), = shapes
    if k != v or k[0] != 1 or k[2] != 2:
        return None
    return Layout(len(layers), k[1], k[3], layers[0].keys.dtype)


def plan_groups(widths: Sequence[int], forward_cost: int, max_tokens: int) -> list[tuple[int, int]]:
    """Split rows sorted by descending width into contiguous groups minimising sum(rows x group width) plus
    `forward_cost` per forward (a group of `n` rows runs ceil(n x width / max_tokens) forwards)."""
    n = len(widths)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cells = (j - i) * widths[i]
            cost = best[i] + cells + forward_cost * max(1, math.ceil(cells / max_tokens))
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append((cut[j], j))
        j = cut[j]
    return groups[::-1]


class DecodeLoop:
    """Batched generation over `model`'s forward (any HF causal LM, CPU or CUDA)."""

    def __init__(self, model: Any, *, eos_ids: Sequence[int], pad_id: int, cache_tokens: int = 0,
                 block_size: int = 32, max_prefill_tokens: int = 16384, forward_cost_tokens: int = 256,
                 share_prefix: bool | None = None):
        self.model = model
        self.device = model.device
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.2x
        self.keep_kw = "logits_to_keep" in params
        self.eos = set(eos_ids)
        self.pad_id = pad_id
        self.max_prefill_tokens = max_prefill_tokens
        self.forward_cost = forward_cost_tokens
        self.layout = probe_layout(model, self.cache_kw)
        self.prefix_cache = PrefixCache(cache_tokens if self.layout else 0, block_size)
        # Decode reads shared prompt tokens once (cascade.py) where the K/V is packed and the attention is one
        # of transformers' registered ones. None: on CPU, where it was measured (docs/scaling.md); on a GPU the
        # flat buffer, unless True (its kernels are the matmul path, correct but not yet timed there).
        if share_prefix is None:
            share_prefix = self.device.type == "cpu"
        self.shared = self.layout is not None and share_prefix and cascade.install(model)
        self.buffers = Buffers(reuse=self.device.type == "cpu")
        self._running = threading.Lock()  # one batch at a time: its buffers are the loop's
        self.stats = LoopStats()  # replaced by the caller's counters in `run`

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor, cache: Cache,
                 **extra: Any) -> torch.Tensor:
        if self.keep_kw:
            extra["logits_to_keep"] = 1
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{self.cache_kw: cache}, **extra)
        self.stats.forwards += 1
        return out.logits[:, -1]

    def run(self, rows: Sequence[Row], stats: LoopStats | None = None) -> None:
        """Generate for every row (fills `tokens`, `stopped`, `cached`, `computed`); counters go to `stats`."""
        if stats is not None:
            self.stats = stats
        if rows:
            with self._running, torch.inference_mode():
                self._run(list(rows))

    def _run(self, rows: list[Row]) -> None:
        t0 = time.perf_counter()
        packed = self.layout is not None
        reuse = packed and self.prefix_cache.max_tokens > 0
        # Identical prompts (JOSH siblings): the first one computes, its twins copy its K/V and logits.
        first: dict[tuple[int, ...], int] = {}
        twin_of = [first.setdefault(tuple(r.ids), i) if reuse else i for i, r in enumerate(rows)]
        uniques = [i for i, t in enumerate(twin_of) if t == i]
        matches = {i: self.prefix_cache.match(rows[i].ids, len(rows[i].ids) - 1) if reuse else Match()
                   for i in uniques}
        suffix = {i: len(rows[i].ids) - matches[i].length for i in uniques}
        uniques.sort(key=lambda i: -suffix[i])
        if packed:
            groups = plan_groups([suffix[i] for i in uniques], self.forward_cost, self.max_prefill_tokens)
        else:
            groups = [(0, len(uniques))]  # one transformers cache holds the whole batch
        order = uniques + [i for i, t in enumerate(twin_of) if t != i]  # buffer row -> index in `rows`
        n, width = len(order), max(len(r.ids) for r in rows)
        capacity = width + max(r.limit for r in rows) - 1  # the last token sampled is never fed
        lens = torch.tensor([len(rows[i].ids) for i in order], device=self.device)
        mask = torch.arange(capacity, device=self.device)[None, :] >= (width - lens)[:, None]
        kv = hf_cache = None
        if self.layout is not None:
            kv = self.buffers.empty("prompts", (self.layout.layers, 2, n, self.layout.heads, capacity,
                                                self.layout.head_dim), self.layout.dtype, self.device)
            for s, i in enumerate(order):  # masked, but must be finite (0 x NaN is NaN); the rest gets written
                kv[:, :, s, :, :width - len(rows[i].ids)] = 0
        else:
            hf_cache = DynamicCache(config=self.model.config)
        logits: list[torch.Tensor] = []
        for a, b in groups:
            group_width = suffix[uniques[a]] if packed else width
            logits += self._prefill([rows[i] for i in order[a:b]], [matches[i] for i in order[a:b]], a,
                                    group_width, width, mask[a:b], kv, hf_cache)
        slot = {row: s for s, row in enumerate(order)}
        twins = list(range(len(uniques), n))
        prompts = [rows[i].ids for i in order]
        planned = cascade.plan(prompts) if kv is not None and self.shared else None
        if twins:
            sources = [slot[twin_of[order[s]]] for s in twins]
            # A shared decode reads each prompt segment from its first row, never a twin (it comes after its
            # source): only the flat buffer needs the twins' copies.
            if kv is not None and not (planned and planned.pays):
                for twin, source in zip(twins, sources):
                    kv[:, :, twin].copy_(kv[:, :, source])
            logits += [logits[s] for s in sources]
            for s in twins:
                rows[order[s]].cached = len(rows[order[s]].ids)
        self.stats.shared_rows += len(twins)
        self.stats.cache_hits += sum(matches[i].length > 0 for i in uniques)
        for r in rows:
            self.stats.prompt_tokens += len(r.ids)
            self.stats.prefill_tokens += r.computed
            self.stats.cached_tokens += r.cached
        t1 = time.perf_counter()
        self.stats.prefill_s += t1 - t0
        self._decode([rows[i] for i in order], torch.stack(logits), kv, hf_cache, mask, lens, width, planned)
        self.stats.decode_s += time.perf_counter() - t1

    def _prefill(self, rows: list[Row], matches: list[Match], first_slot: int, group_width: int, width: int,
                 mask: torch.Tensor, kv: torch.Tensor | None, hf_cache: Cache | None) -> list[torch.Tensor]:
        """Run the last `group_width` tokens of each row (buffer rows from `first_slot` on); the tokens before
        them come from the prefix cache. Returns each row's next-token logits."""
        count = len(rows)
        ids = torch.full((count, group_width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((count, group_width), dtype=torch.long)
        for k, (row, found) in enumerate(zip(rows, matches)):
            run = min(group_width, len(row.ids))
            start = len(row.ids) - run  # tokens [0, start) are cached: start <= the matched length
            ids[k, group_width - run:] = torch.tensor(row.ids[start:], dtype=torch.long)
            positions[k, group_width - run:] = torch.arange(start, len(row.ids))
            row.computed, row.cached = run, start
            if start and kv is not None:
                kv[:, :, first_slot + k, :, width - len(row.ids):width - run] = self.prefix_cache.gather(found, start)
        self.stats.prefill_padded += count * group_width
        ids, positions = ids.to(self.device), positions.to(self.device)
        if kv is not None:
            cache = slot_cache(kv[:, :, first_slot:first_slot + count], width - group_width)
        else:
            cache = hf_cache  # type: ignore[assignment]
        chunk = max(1, self.max_prefill_tokens // count)
        for c0 in range(0, group_width, chunk):
            c1 = min(group_width, c0 + chunk)
            last = self._forward(ids[:, c0:c1], mask[:, :width - group_width + c1], positions[:, c0:c1], cache)
        return list(last.unbind(0))

    def _decode(self, rows: list[Row], logits: torch.Tensor, kv: torch.Tensor | None, hf_cache: Cache | None,
                mask: torch.Tensor, lens: torch.Tensor, width: int, planned: cascade.Plan | None) -> None:
        """Sample until every row is finished; `rows` are in buffer order; `planned`: their prompts' shared
        layout (None: flat)."""
        cpu0 = time.thread_time()
        sampler = Sampler(rows, logits.shape[-1], self.device)
        live = list(range(len(rows)))  # current row -> index in `rows`
        fed = [0] * len(rows)  # generated tokens of each row whose K/V are in the buffer
        prompts = [r.ids for r in rows]
        layout: FlatKV | SharedKV = FlatKV(kv, hf_cache, mask, lens, width, self.buffers)
        if planned is not None and planned.pays:  # reading shared prompt tokens once pays for its extra kernels
            layout = SharedKV(Cascade(kv, prompts, width, max(r.limit for r in rows), planned), lens)
            self.stats.shared_runs += 1
        floor = planned.distinct if planned else distinct_tokens(prompts)  # the live rows' prompts' prefix tree
        steps = 0
        while True:
            t0 = time.perf_counter()
            sampled = sampler(logits, steps).tolist()
            self.stats.sample_s += time.perf_counter() - t0
            for i, token in zip(live, sampled):
                row = rows[i]
                if not _finished(row):
                    if row.forced is not None:
                        token = row.forced[len(row.tokens)]
                    row.tokens.append(token)
                    row.stopped = token in self.eos
            kept = [k for k, i in enumerate(live) if not _finished(rows[i])]
            if not kept:
                break
            dropped = len(live) - len(kept)
            remaining = max(_limit(rows[live[k]]) - len(rows[live[k]].tokens) for k in kept)  # an upper bound
            # Compact when carrying the finished rows would cost more than copying the others, and at least a
            # quarter of the batch finished (`remaining` is an upper bound; this bounds the number of copies).
            if dropped and dropped * remaining >= 2 * len(kept) and 4 * dropped >= len(live):
                gone = [k for k in range(len(live)) if k not in set(kept)]
                self._store([rows[live[k]] for k in gone], [fed[live[k]] for k in gone], layout, gone)
                layout.keep(kept, steps, remaining)
                sampler.keep(kept)
                live = [live[k] for k in kept]
                floor = distinct_tokens([rows[i].ids for i in live])
                self.stats.compactions += 1
            # Each row's own last token (a finished row's is never stored: only its first `fed` tokens are).
            inputs = torch.tensor([rows[i].tokens[-1] for i in live], dtype=torch.long, device=self.device)[:, None]
            t0 = time.perf_counter()
            logits = self._forward(inputs, layout.mask_for(steps), (layout.lens + steps).unsqueeze(1), layout.cache,
                                   **layout.inputs())
            self.stats.decode_forward_s += time.perf_counter() - t0
            self.stats.kv_read_tokens += layout.read_tokens(steps)
            self.stats.kv_floor_tokens += floor + len(live) * (steps + 1)
            steps += 1
            for i in live:
                fed[i] = min(fed[i] + 1, len(rows[i].tokens))
            self.stats.decode_steps += 1
            self.stats.decode_rows += len(live)
        self._store([rows[i] for i in live], [fed[i] for i in live], layout, list(range(len(live))))
        self.stats.decode_cpu_s += time.thread_time() - cpu0

    def _store(self, rows: list[Row], fed: list[int], layout: FlatKV | SharedKV, index: list[int]) -> None:
        """Cache each row's prompt and fed tokens (`index`: the rows' current places in `layout`)."""
        if not layout.packed or self.prefix_cache.max_tokens <= 0:
            return
        for row, count, k in zip(rows, fed, index):
            self.prefix_cache.store(row.ids + row.tokens[:count], lambda a, b, k=k: layout.columns(k, a, b))


class FlatKV:
    """Every row's whole context in one buffer, right-aligned (every row's next token in the same column; left
    padding masked), or in transformers' own cache for models the loop cannot pack. Column c of the prompt
    space is buffer column c - left once `left` columns of padding were dropped."""

    def __init__(self, kv: torch.Tensor | None, hf_cache: Cache | None, mask: torch.Tensor, lens: torch.Tensor,
                 width: int, buffers: Buffers | None = None):
        self.kv, self.hf_cache, self.mask, self.lens, self.width, self.left = kv, hf_cache, mask, lens, width, 0
        self.buffers = buffers or Buffers(reuse=False)
        self.compactions = 0
        self.packed = kv is not None
        self.cache = hf_cache if kv is None else slot_cache(kv, width)

    def mask_for(self, steps: int) -> torch.Tensor | None:
        return self.mask[:, :self.width + steps - self.left + 1]

    def inputs(self) -> dict[str, Any]:
        return {}

    def keep(self, index: list[int], steps: int, remaining: int) -> None:
        """Only the current rows at `index` stay; the buffer keeps room for `remaining` more steps."""
        rows = torch.tensor(index, device=self.mask.device)
        self.lens = self.lens[rows]
        columns = self.width + steps - self.left  # in use
        if self.kv is not None:  # right-aligned: the first `drop` columns are padding for every kept row
            drop = self.width - self.left - int(self.lens.max())
            kept = self.kv[:, :, :, :, drop:columns + remaining]
            shape = (*kept.shape[:2], len(index), *kept.shape[3:])  # into the buffer the source is not in
            into = self.buffers.empty(f"compacted {self.compactions % 2}", shape, kept.dtype, kept.device)
            self.kv = torch.index_select(kept, 2, rows, out=into)
            self.compactions += 1
            self.mask = self.mask[rows, drop:columns + remaining]
            self.left += drop
            self.cache = slot_cache(self.kv, columns - drop)
        else:
            self.hf_cache.batch_select_indices(rows)  # type: ignore[union-attr]
            self.mask = self.mask[rows]

    def columns(self, row: int, start: int, end: int) -> torch.Tensor:
        """K/V of tokens `[start, end)` of current row `row` (prompt, then generated), a copy."""
        assert self.kv is not None
        first = self.width - self.left - int(self.lens[row])
        return self.kv[:, :, row, :, first + start:first + end].clone()

    def read_tokens(self, steps: int) -> int:
        """Tokens of K/V per layer the attention reads this step (padding included)."""
        return len(self.lens) * (self.width + steps - self.left + 1)


class SharedKV:
    """The shared-prefix layout (`cascade.Cascade`) behind the loop's interface."""

    packed = True

    def __init__(self, cascade: Cascade, lens: torch.Tensor):
        self.cascade, self.lens = cascade, lens
        self.cache = slot_cache(cascade.generated, 0)  # the rows' generated tokens: the forward appends here

    def mask_for(self, steps: int) -> torch.Tensor | None:
        return None  # no padding: the cascade masks its segments' padding itself

    def inputs(self) -> dict[str, Any]:
        return {"cascade": self.cascade}

    def keep(self, index: list[int], steps: int, remaining: int) -> None:
        self.lens = self.lens[torch.tensor(index, device=self.lens.device)]
        self.cascade.keep(index)
        self.cache = slot_cache(self.cascade.generated, steps)

    def columns(self, row: int, start: int, end: int) -> torch.Tensor:
        return self.cascade.columns(row, start, end)

    def read_tokens(self, steps: int) -> int:
        return self.cascade.read_tokens(steps)


def _limit(row: Row) -> int:
    return row.limit if row.forced is None else min(row.limit, len(row.forced))


def _finished(row: Row) -> bool:
    return row.stopped or len(row.tokens) >= _limit(row)


def slot_cache(kv: torch.Tensor, length: int) -> DynamicCache:
    """A transformers cache whose layers are views of `kv` (`[layers, 2, rows, heads, columns, dim]`)."""
    cache = DynamicCache()
    cache.layers = [SlotLayer(kv[layer, 0], kv[layer, 1], length) for layer in range(kv.shape[0])]
    cache.layer_class_to_replicate = None
    return cache
