"""The rule-based teacher agent (toolwoz.teacher) as a backend, so its conversations land in the warehouse.

At temperature 0 the teacher is deterministic. At temperature T > 0 it explores like a sampled policy: with
probability `min(0.5, EXPLORE * T)`, drawn from the request's seed, a tool call it makes is perturbed (one
argument dropped, or a booking slot changed). JOSH siblings then differ, some fail, and a teacher harvest
yields KTO negatives and DPO pairs as well as golden paths.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from search.backends.base import Completion, Request
from toolwoz.schemas import DAYS
from toolwoz.teacher import Teacher

EXPLORE = 0.2  # perturbation probability per tool call at temperature 1


def perturb(message: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same message with its first tool call's arguments changed: a slot altered or one dropped."""
    call = message["tool_calls"][0]
    args = json.loads(call["function"]["arguments"] or "{}")
    slots = [k for k in ("people", "day", "stay") if k in args]
    if slots and rng.random() < 0.5:
        key = rng.choice(slots)
        args[key] = rng.choice([d for d in DAYS if d != args[key]]) if key == "day" else str(int(args[key]) % 8 + 1)
    elif len(args) > 1:
        del args[rng.choice(sorted(args))]
    else:
        return message
    changed = {**call, "function": {**call["function"], "arguments": json.dumps(args)}}
    return {**message, "tool_calls": [changed, *message["tool_calls"][1:]]}


class TeacherBackend:
    """Reads only the messages it is given (never the goal)."""

    name = "teacher"

    def __init__(self, rows: dict[str, list[dict[str, Any]]]):
        self.teacher = Teacher.from_rows(rows)

    async def complete(self, request: Request) -> Completion:
        start = time.perf_counter()
        message = self.teacher.next_message(list(request.messages))
        params = request.params
        if message.get("tool_calls") and params.temperature > 0 and params.seed is not None:
            rng = random.Random(params.seed)
            if rng.random() < min(0.5, EXPLORE * params.temperature):
                message = perturb(message, rng)
        return Completion(message=message, latency_ms=(time.perf_counter() - start) * 1e3)

    async def aclose(self) -> None:
        return None
