"""A scripted agent an environment offers (τ-bench's `oracle`) as a backend: one per task, since it knows the
task; its next message is a function of the conversation, the request's seed and temperature."""

from __future__ import annotations

import time
from typing import Any, Callable

from search.backends.base import Completion, Message, Request

NextMessage = Callable[[list[Message], int, float], Message]  # (messages, seed, temperature) -> assistant message


class ScriptedBackend:
    """`complete` asks the scripted agent for its next message; it never fails and counts no tokens."""

    def __init__(self, name: str, next_message: NextMessage):
        self.name, self.next_message = name, next_message

    async def complete(self, request: Request) -> Completion:
        start = time.perf_counter()
        params = request.params
        message: dict[str, Any] = self.next_message(list(request.messages), params.seed or 0, params.temperature)
        return Completion(message={"role": "assistant", **message}, latency_ms=(time.perf_counter() - start) * 1e3)

    async def aclose(self) -> None:
        return None
