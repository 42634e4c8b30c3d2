"""Gather requests from many coroutines into one batched call.

Every rollout is a coroutine; when several of them need the same kind of work at the same time (a model
turn, a tool lookup), each awaits `submit(item)`. The batcher lets the event loop run every coroutine
that is ready, then hands all pending items to `run_batch` at once (in a worker thread when the work
blocks, so the loop keeps accepting submissions meanwhile).

Before each batch, including right after the previous one returned, the batcher waits until the loop has
settled: no new submission for `settle_rounds` consecutive loop turns. A batch's results wake every rollout
that waited on it; they run their tool calls and user turns and submit again within a few turns, so the next
batch takes all of them instead of splitting the rollouts into groups that alternate.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Generic, Sequence, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """`await submit(x)` -> result of `run_batch([..., x, ...])[i]`, batches of at most `max_batch`."""

    def __init__(self, run_batch: Callable[[Sequence[In]], Sequence[Out]], *, max_batch: int = 64,
                 in_thread: bool = True, settle_rounds: int = 2, settle_s: float = 0.0):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.in_thread = in_thread
        self.settle_rounds = settle_rounds  # quiet loop turns before a batch starts
        self.settle_s = settle_s  # and at least this long without a new submission (for I/O-bound submitters)
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            await self._settle()
            self._pending = [(item, future) for item, future in self._pending if not future.cancelled()]
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            if not batch:
                continue
            items = [item for item, _ in batch]
            try:
                if self.in_thread:
                    results = await asyncio.to_thread(self.run_batch, items)
                else:
                    results = self.run_batch(items)
            except BaseException as e:  # hand the failure to every waiter; the batcher itself survives
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                if not isinstance(e, Exception):
                    raise
                continue
            self.batches += 1
            self.items += len(items)
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    async def _settle(self) -> None:
        """Yield until no submission arrived for `settle_rounds` turns and `settle_s` seconds, or a full batch
        is pending (bounded, so a steady trickle of submissions cannot hold a batch back for long)."""
        quiet, seen, last = 0, len(self._pending), time.monotonic()
        for _ in range(64 * max(self.settle_rounds, 1)):
            if len(self._pending) >= self.max_batch:
                return
            waited = time.monotonic() - last
            if quiet >= self.settle_rounds and waited >= self.settle_s:
                return
            await asyncio.sleep(0 if quiet < self.settle_rounds else self.settle_s - waited)
            if len(self._pending) != seen:
                quiet, seen, last = 0, len(self._pending), time.monotonic()
            else:
                quiet += 1

