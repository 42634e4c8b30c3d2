"""The rule-based teacher agent (toolwoz.teacher) as a backend, so its conversations land in the warehouse."""

from __future__ import annotations

import time
from typing import Any

from search.backends.base import Completion, Request
from toolwoz.teacher import Teacher


class TeacherBackend:
    """Reads only the messages it is given (never the goal); ignores sampling parameters."""

    name = "teacher"

    def __init__(self, rows: dict[str, list[dict[str, Any]]]):
        self.teacher = Teacher.from_rows(rows)

    async def complete(self, request: Request) -> Completion:
        start = time.perf_counter()
        message = self.teacher.next_message(list(request.messages))
        return Completion(message=message, latency_ms=(time.perf_counter() - start) * 1e3)

    async def aclose(self) -> None:
        return None
