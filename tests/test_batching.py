"""The micro-batcher's schedule: each batch takes every conversation that is about to submit."""

from __future__ import annotations

import asyncio

from search.batching import MicroBatcher


def _conversations(n: int, rounds: int, hops: int, settle_rounds: int) -> list[int]:
    """`n` coroutines, each `rounds` times: a model call (a batch in a worker thread), then `hops` tool calls
    through a second batcher (as `search.runner.ToolRunner`) with varying awaits between. Returns batch sizes."""
    sizes: list[int] = []

    def model(items):  # run in a worker thread (as a model's forward pass): the loop stays free meanwhile
        sizes.append(len(items))
        return [i * 2 for i in items]

    async def main():
        llm = MicroBatcher(model, max_batch=1000, settle_rounds=settle_rounds)
        tools = MicroBatcher(lambda items: list(items), in_thread=False)

        async def conversation(k: int):
            for r in range(rounds):
                assert await llm.submit(k) == 2 * k
                for h in range((k + r) % (hops + 1)):  # conversations do different amounts of work in between
                    await tools.submit(h)
                    for _ in range(k % 3):
                        await asyncio.sleep(0)

        await asyncio.gather(*(conversation(k) for k in range(n)))

    asyncio.run(main())
    return sizes


def test_every_batch_takes_every_conversation():
    assert _conversations(n=12, rounds=5, hops=2, settle_rounds=32) == [12] * 5


def test_a_batcher_that_waits_too_little_splits_the_conversations():
    # the schedule the model backend had before: two loop turns, so tool work left conversations behind
    assert len(_conversations(n=12, rounds=5, hops=2, settle_rounds=2)) > 5


def test_a_full_batch_starts_without_waiting_and_the_rest_follows():
    sizes: list[int] = []

    async def main():
        batcher = MicroBatcher(lambda items: sizes.append(len(items)) or list(items), max_batch=4, in_thread=False,
                               settle_rounds=1000)
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert asyncio.run(main()) == list(range(10))
    assert sizes == [4, 4, 2]


def test_a_steady_trickle_cannot_hold_a_batch_back_forever():
    sizes: list[int] = []

    async def main():
        batcher = MicroBatcher(lambda items: sizes.append(len(items)) or list(items), in_thread=False,
                               settle_rounds=2)

        async def trickle(i: int):
            for _ in range(i):
                await asyncio.sleep(0)
            return await batcher.submit(i)

        return await asyncio.gather(*(trickle(i) for i in range(400)))  # one new submission per loop turn

    assert asyncio.run(main()) == list(range(400))
    assert len(sizes) > 1 and sum(sizes) == 400
