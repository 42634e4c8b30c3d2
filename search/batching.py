"""Gather requests from many coroutines into one batched call.

Every rollout is a coroutine; when several of them need the same kind of work at the same time (a model
turn, a tool lookup), each awaits `submit(item)`. The batcher lets the event loop run every coroutine
that is ready, then hands all pending items to `run_batch` at once (in a worker thread when the work
blocks, so the loop keeps accepting the next batch meanwhile).
"""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, Sequence, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """`await submit(x)` -> result of `run_batch([..., x, ...])[i]`, batches of at most `max_batch`."""

    def __init__(self, run_batch: Callable[[Sequence[In]], Sequence[Out]], *, max_batch: int = 64,
                 in_thread: bool = True, settle_rounds: int = 2):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.in_thread = in_thread
        self.settle_rounds = settle_rounds  # loop turns to wait so that every ready coroutine can submit
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
            for _ in range(self.settle_rounds):
                await asyncio.sleep(0)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
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

