"""Calls requested ahead at JOSH's step barrier (`search/ahead.py`) change the schedule, never the tree.

Each harvest runs twice, with `ahead=True` (the product) and `ahead=False`, and every row of every table
must be equal (timings aside): over random scripted agents (hypothesis), and with the shipped M0 through the
real transformers backend, where the guesses must also have been requested and taken.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.backends.base import Completion, Request
from search.batching import MicroBatcher
from search.josh import Rollout, RolloutResult, SearchConfig
from search.runner import ToolRunner, max_batch, run_all
from toolwoz.audit import fixed_oracle_calls
from toolwoz.environment import ToolWOZ
from toolwoz.user_rule import RuleUser

TIMINGS = {"started_at", "finished_at", "latency_ms", "latency_us"}


class BatchedCoinAgent:
    """A scripted agent behind a real micro-batcher: per call, with probability `p` a goal's oracle call
    (or a call that meets no goal), else a reply; its answer depends only on the request, as a model's."""

    name = "coin"
    batched = True

    def __init__(self, oracle: list[tuple[str, dict]], p: float, beam: int):
        self.oracle, self.p = oracle, p
        self.batcher = MicroBatcher(self._answer_all, max_batch=max_batch(4, beam), in_thread=False)

    def _answer_all(self, requests: list[Request]) -> list[Completion]:
        return [self._answer(r) for r in requests]

    def _answer(self, request: Request) -> Completion:
        rng = random.Random(f"{request.params.seed}|{len(request.messages)}")
        if request.messages[-1]["role"] != "tool" and self.oracle and rng.random() < self.p:
            name, args = rng.choice(self.oracle)
            if rng.random() < 0.7:  # most calls meet no goal: the tree lives on, and so do the guesses
                args = {**args, "name": "nowhere"}
            call = {"id": "c0", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            return Completion({"role": "assistant", "content": "", "tool_calls": [call]}, completion_tokens=5)
        return Completion({"role": "assistant", "content": f"ok {rng.randint(0, 9)}"}, completion_tokens=2)

    async def complete(self, request: Request) -> Completion:
        return await self.batcher.submit(request)

    async def aclose(self) -> None:
        return None


def rows(results: list[RolloutResult]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for result in sorted(results, key=lambda r: r.rollout["rollout_id"]):
        for table, table_rows in result.tables().items():
            out.setdefault(table, []).extend({k: v for k, v in row.items() if k not in TIMINGS} for row in table_rows)
    return out


def harvest(env, tasks, make_agent, config: SearchConfig, ahead: bool) -> tuple[dict[str, list], list[Rollout]]:
    """Every row of one harvest of `tasks` (timings aside), and its rollouts."""
    agent = make_agent()
    results: list[RolloutResult] = []
    rollouts = []

    async def one(task):
        rollout = Rollout(task, agent, RuleUser(task.goal, 7), ToolRunner(ToolWOZ(env)), config,
                          rollout_id=task.task_id,
                          run_id="r", ahead=ahead)
        rollouts.append(rollout)
        return await rollout.run()

    jobs = [lambda t=t: one(t) for t in tasks]
    asyncio.run(run_all(jobs, concurrency=len(tasks), on_result=results.append))
    return rows(results), rollouts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(beam=st.sampled_from([2, 4, 8]), p=st.floats(0.0, 0.9), seed=st.integers(0, 10_000),
       first=st.integers(0, 1590))
def test_requests_ahead_leave_every_row_as_it_was(env, beam, p, seed, first):
    tasks = sorted(env.tasks.values(), key=lambda t: t.task_id)[first:first + 3]
    oracle = [(c.name, c.normalised) for t in tasks for c in fixed_oracle_calls(env, t) if c.ok]
    config = SearchConfig(beam=beam, max_turns=6, seed=seed)
    with_ahead, rollouts = harvest(env, tasks, lambda: BatchedCoinAgent(oracle, p, beam), config, True)
    without, _ = harvest(env, tasks, lambda: BatchedCoinAgent(oracle, p, beam), config, False)
    assert with_ahead == without
    for r in rollouts:
        assert r.ahead.used <= r.ahead.requested and not r.ahead._ahead  # nothing left running


def test_requests_ahead_with_the_shipped_m0_are_taken_and_change_nothing(env):
    """The transformers backend (prefix cache, per-row seeds) and a model that calls tools, so siblings wait
    at the barrier: guesses are requested and taken, and the rows are those of the harvest without them (how
    much fuller the batches are: bench/harvest.py)."""
    from factory.jobs.default_model import SHIPPED
    from search.backends.transformers import TransformersBackend

    tasks = sorted((t for t in env.tasks.values() if "val_harvest" in t.splits), key=lambda t: t.task_id)[:4]
    config = SearchConfig(beam=4, max_turns=4, max_new_tokens=48, results="compact")
    make = lambda: TransformersBackend(str(SHIPPED), device="cpu", max_batch=16)  # noqa: E731
    with_ahead, rollouts = harvest(env, tasks, make, config, True)
    without, _ = harvest(env, tasks, make, config, False)
    assert with_ahead == without
    requested, used = sum(r.ahead.requested for r in rollouts), sum(r.ahead.used for r in rollouts)
    assert requested > 0 and used > 0, (requested, used)
