"""The prefix cache as a data structure: longest-prefix matches, the K/V it hands back, bounded eviction."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search.backends.prefix_cache import PrefixCache


def _kv_of(sequence: list[int]):
    """K/V whose every entry names the token it belongs to (position and id), so gathers can be checked."""
    def kv_of(start: int, end: int) -> torch.Tensor:
        values = torch.tensor([[pos, sequence[pos]] for pos in range(start, end)], dtype=torch.float32)
        return values.T.reshape(1, 2, 1, end - start, 1).clone()  # [layers, K/V, heads, tokens, dim]
    return kv_of


def _store(cache: PrefixCache, sequence: list[int]) -> int:
    return cache.store(sequence, _kv_of(sequence))


def _lcp(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_longest_prefix_inside_a_block_and_across_blocks():
    cache = PrefixCache(max_tokens=1000, block_size=4)
    parent = list(range(10))  # blocks [0..3] [4..7] [8, 9]
    assert _store(cache, parent) == 10
    child = parent + [50, 51, 52]  # a child's prompt: the parent's sequence and more
    found = cache.match(child, len(child) - 1)
    assert found.length == 10
    sibling = parent[:6] + [99, 98, 97]  # diverges inside the second block
    assert cache.match(sibling).length == 6
    kv = cache.gather(cache.match(sibling), 6)
    assert kv.shape == (1, 2, 1, 6, 1) and kv[0, 0, 0, :, 0].tolist() == list(range(6))
    assert cache.match([1, 2, 3]).length == 0  # a prefix must start at the first token
    assert cache.match(parent, 7).length == 7  # the limit caps the match (the last token is always run)
    assert cache.stats.hits == 4 and cache.stats.lookups == 5


def test_shared_prefixes_are_stored_once_and_the_parent_block_is_part_of_the_key():
    cache = PrefixCache(max_tokens=1000, block_size=4)
    a = [1, 2, 3, 4, 5, 6, 7, 8]
    b = [9, 9, 9, 9, 5, 6, 7, 8]  # same second block, other first block
    assert _store(cache, a) == 8
    assert _store(cache, a + [10, 11]) == 2  # only the new tail
    assert _store(cache, b) == 8
    assert cache.tokens == 18
    assert cache.match([9, 9, 9, 9, 5, 6, 7, 8, 0]).length == 8
    assert cache.gather(cache.match(b))[0, 1, 0, :, 0].tolist() == b  # b's own K/V, not a's second block
    assert cache.match([5, 6, 7, 8]).length == 0


def test_eviction_is_bounded_and_keeps_recent_chains_whole():
    cache = PrefixCache(max_tokens=12, block_size=4)
    old, new = [1] * 8, [2] * 8
    _store(cache, old)
    _store(cache, new)
    assert cache.tokens <= 12 and cache.stats.evicted_tokens == 4
    assert cache.match(new).length == 8  # the most recent sequence is whole
    assert cache.match(old).length == 4  # the older one lost its deepest block only: no stranded blocks
    cache.match(old)  # touching `old` makes `new` the least recent
    _store(cache, [3] * 8)
    assert cache.tokens <= 12
    assert cache.match(old).length == 4 and cache.match(new).length == 0


def test_a_zero_budget_caches_nothing():
    cache = PrefixCache(max_tokens=0)
    assert _store(cache, list(range(100))) == 0
    assert cache.match(list(range(100))).length == 0 and cache.tokens == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=30), min_size=1, max_size=8),
       st.lists(st.integers(0, 3), min_size=1, max_size=30), st.integers(1, 6))
def test_match_is_the_longest_common_prefix_and_gathers_its_values(stored, prompt, block_size):
    cache = PrefixCache(max_tokens=1 << 30, block_size=block_size)
    for sequence in stored:
        _store(cache, sequence)
    found = cache.match(prompt)
    best = max(_lcp(prompt, s) for s in stored)
    assert found.length == best
    if best:
        kv = cache.gather(found)
        assert kv[0, 0, 0, :, 0].tolist() == list(range(best))
        assert kv[0, 1, 0, :, 0].tolist() == prompt[:best]
