"""A bounded cache of attention keys/values keyed by token-id prefixes (as vLLM's automatic prefix caching).

JOSH siblings send byte-identical prompts, and a child's prompt starts with its parent's prompt and the
parent's generated turn, so most of every prompt was already computed by an earlier row. Finished rows are
stored as a trie of fixed-size token blocks: a block is found by the exact key (parent block id, its token
ids), so a prompt's longest cached prefix takes one dict lookup per block, and the last, partly matching
block is compared token by token against the children of the last full match (a block holds any number of
tokens up to `block_size`; shorter ones are the tails of stored rows). Every block holds its own tokens' K/V
for all layers as one tensor `[layers, 2, kv_heads, tokens, head_dim]`; a row's cached prefix is the
concatenation of its blocks. Shared prefixes are stored once.

Eviction is least-recently-used by block, bounded by the number of stored tokens. A lookup or store touches a
chain from its deepest block up to the root, so an ancestor is always more recent than its descendants and
the least recent block is a leaf: eviction never strands a reachable block.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

ROOT = 0


@dataclass(eq=False)
class Block:
    block_id: int
    parent: int  # block id of the previous block, ROOT for the first
    ids: tuple[int, ...]
    kv: torch.Tensor  # [layers, 2, kv_heads, len(ids), head_dim]


@dataclass
class Match:
    """The longest cached prefix of a prompt: `length` tokens, the K/V of `blocks` (the last maybe sliced)."""

    length: int = 0
    blocks: list[Block] = field(default_factory=list)
    last: int = 0  # tokens used of the last block


@dataclass
class PrefixCacheStats:
    lookups: int = 0
    hits: int = 0  # lookups that found at least one token
    hit_tokens: int = 0
    stored_tokens: int = 0  # tokens of new blocks
    evicted_tokens: int = 0


class PrefixCache:
    """Token-id prefix -> K/V, at most `max_tokens` tokens, in blocks of `block_size` tokens."""

    def __init__(self, max_tokens: int, block_size: int = 32):
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.max_tokens = max_tokens
        self.block_size = block_size
        self.tokens = 0
        self.stats = PrefixCacheStats()
        self._index: dict[tuple[int, tuple[int, ...]], Block] = {}
        self._lru: OrderedDict[int, Block] = OrderedDict()  # least recently used first
        self._children: dict[int, list[Block]] = {ROOT: []}
        self._next_id = ROOT + 1

    def __len__(self) -> int:
        return len(self._lru)

    def match(self, ids: Sequence[int], limit: int | None = None) -> Match:
        """The longest cached prefix of `ids[:limit]`."""
        limit = len(ids) if limit is None else min(limit, len(ids))
        self.stats.lookups += 1
        found = Match()
        if self.max_tokens <= 0:
            return found
        size, parent, pos = self.block_size, ROOT, 0
        while pos + size <= limit:
            block = self._index.get((parent, tuple(ids[pos:pos + size])))
            if block is None:
                break
            found.blocks.append(block)
            parent, pos = block.block_id, pos + size
        rest = ids[pos:min(pos + size, limit)]
        best, best_n = None, 0
        for child in self._children.get(parent, ()):
            n = _common_prefix(child.ids, rest)
            if n > best_n:
                best, best_n = child, n
        if best is not None:
            found.blocks.append(best)
            found.last = best_n
        elif found.blocks:
            found.last = size
        found.length = pos + best_n
        self._touch(found.blocks)
        if found.length:
            self.stats.hits += 1
            self.stats.hit_tokens += found.length
        return found

    def gather(self, found: Match, length: int | None = None) -> torch.Tensor | None:
        """The K/V of the first `length` (default all) tokens of `found`: `[layers, 2, heads, length, dim]`."""
        length = found.length if length is None else min(length, found.length)
        if length <= 0:
            return None
        parts, pos = [], 0
        for block in found.blocks:
            take = min(len(block.ids), length - pos)
            if take <= 0:
                break
            parts.append(block.kv if take == len(block.ids) else block.kv[:, :, :, :take])
            pos += take
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=3)

    def store(self, ids: Sequence[int], kv_of: Callable[[int, int], torch.Tensor]) -> int:
        """Cache `ids`; `kv_of(start, end)` returns the K/V of tokens `[start, end)` (only called for new
        blocks, and must return a tensor the cache may keep). Returns the number of tokens newly stored."""
        if self.max_tokens <= 0 or not ids:
            return 0
        size, parent, chain, new = self.block_size, ROOT, [], 0
        for pos in range(0, len(ids), size):
            key = (parent, tuple(ids[pos:pos + size]))
            block = self._index.get(key)
            if block is None:
                block = Block(self._next_id, parent, key[1], kv_of(pos, pos + len(key[1])))
                self._next_id += 1
                self._index[key] = block
                self._children.setdefault(parent, []).append(block)
                self._lru[block.block_id] = block
                self.tokens += len(block.ids)
                new += len(block.ids)
            chain.append(block)
            if len(block.ids) < size:
                break
            parent = block.block_id
        self._touch(chain)
        self.stats.stored_tokens += new
        while self.tokens > self.max_tokens and self._lru:
            self._evict(next(iter(self._lru.values())))
        return new

    def clear(self) -> None:
        """Drop every block."""
        self.__init__(self.max_tokens, self.block_size)  # type: ignore[misc]

    def _touch(self, chain: list[Block]) -> None:
        for block in reversed(chain):  # deepest first: ancestors end up more recent than descendants
            if block.block_id in self._lru:
                self._lru.move_to_end(block.block_id)

    def _evict(self, block: Block) -> None:
        for child in list(self._children.get(block.block_id, ())):  # none by the LRU order; kept for safety
            self._evict(child)
        self._children.pop(block.block_id, None)
        del self._index[(block.parent, block.ids)]
        del self._lru[block.block_id]
        siblings = self._children.get(block.parent)
        if siblings is not None:
            siblings.remove(block)
        self.tokens -= len(block.ids)
        self.stats.evicted_tokens += len(block.ids)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
