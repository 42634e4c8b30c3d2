"""Run many rollouts at once: a concurrency limit, batched tool calls, results handed to a writer."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterable, Sequence

from search.batching import MicroBatcher
from search.environment import Environment
from search.josh import RolloutResult


def max_batch(concurrency: int, beam: int) -> int:
    """Rows per batched model call for `concurrency` rollouts in flight: each has at most `beam` live leaves
    waiting on the model, so every step of a harvest is ONE `generate` (the product and bench/harvest.py)."""
    return max(concurrency, 1) * max(beam, 1)


class ToolRunner:
    """Async tool execution: the calls of every rollout that are pending together go as one `call_many` of the
    environment (in submission order, so one branch's calls run in the order it made them)."""

    def __init__(self, env: Environment, max_batch: int = 256):
        self.env = env
        # DuckDB answers a batch in a few ms; running it on the loop thread avoids a thread hop per batch.
        self.batcher: MicroBatcher[Any, Any] = MicroBatcher(env.call_many, max_batch=max_batch, in_thread=False)

    async def __call__(self, requests: Sequence[Any]) -> list[Any]:
        return list(await asyncio.gather(*(self.batcher.submit(r) for r in requests)))


async def run_all(jobs: Iterable[Callable[[], Awaitable[RolloutResult]]], *, concurrency: int,
                  on_result: Callable[[RolloutResult], None]) -> int:
    """Run rollout jobs with at most `concurrency` in flight; `on_result` (blocking) runs in a thread.

    Results are handed over one at a time in completion order; returns how many finished.
    """
    semaphore = asyncio.Semaphore(max(concurrency, 1))
    write_lock = asyncio.Lock()
    finished = 0

    async def one(job: Callable[[], Awaitable[RolloutResult]]) -> None:
        nonlocal finished
        async with semaphore:
            result = await job()
        async with write_lock:
            await asyncio.to_thread(on_result, result)
            finished += 1

    await asyncio.gather(*(one(job) for job in jobs))
    return finished
