"""JOSH tree invariants over random reward sequences (hypothesis), with real tools and rewards.

The agent here is a scripted policy, not a model: on each turn it flips a seeded coin and either makes a
goal-satisfying call (the task's own goal constraints, through the real DuckDB tools) or just talks. That
makes rewards land at random places in the tree, which is what the invariants are about.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.backends.base import Completion, Request
from search.batching import MicroBatcher
from search.josh import PARITY, SearchConfig, run_rollout
from search.runner import ToolRunner, max_batch, run_all
from toolwoz.audit import fixed_oracle_calls
from toolwoz.environment import ToolWOZ


class CoinAgent:
    """Per turn: with probability `p` call a random goal's oracle call, else say something."""

    name = "coin"

    def __init__(self, oracle: list[tuple[str, dict]], p: float):
        self.oracle, self.p = oracle, p

    async def complete(self, request: Request) -> Completion:
        rng = random.Random(request.params.seed)
        last = request.messages[-1]
        if last["role"] != "tool" and self.oracle and rng.random() < self.p:
            name, args = rng.choice(self.oracle)
            call = {"id": "c0", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            return Completion({"role": "assistant", "content": "", "tool_calls": [call]}, completion_tokens=5)
        return Completion({"role": "assistant", "content": f"ok {rng.randint(0, 9)}"}, completion_tokens=2)

    async def aclose(self) -> None:
        return None


class EchoUser:
    def __init__(self, turns: int):
        self.turns = turns

    def reply(self, history):
        n = sum(m["role"] == "user" for m in history)
        return "END_CONVERSATION" if n >= self.turns else f"please continue ({n})"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(beam=st.sampled_from([1, 2, 4, 8]), p=st.floats(0.0, 1.0), seed=st.integers(0, 10_000),
       task_index=st.integers(0, 1597), user_turns=st.integers(1, 12), collapse=st.sampled_from(
           ["first", "fewest-tokens", "random"]))
def test_tree_invariants(env, beam, p, seed, task_index, user_turns, collapse):
    task = sorted(env.tasks.values(), key=lambda t: t.task_id)[task_index]
    oracle = [(c.name, c.normalised) for c in fixed_oracle_calls(env, task) if c.ok]
    cfg = SearchConfig(beam=beam, max_turns=8, seed=seed, collapse=collapse)
    result = asyncio.run(run_rollout(task, CoinAgent(oracle, p), EchoUser(user_turns), ToolRunner(ToolWOZ(env)), cfg,
                                     rollout_id="r", run_id="run"))
    nodes = {n["node_id"]: n for n in result.nodes}
    rollout = result.rollout
    assert rollout["status"] == "done" and rollout["n_nodes"] == len(nodes)

    # structure: parents exist, paths follow parents, depth = len(path) - 1
    for n in nodes.values():
        if n["parent_id"] is None:
            assert n["node_id"] == 0 and n["path"] == [0]
        else:
            assert n["path"] == nodes[n["parent_id"]]["path"] + [n["node_id"]]
        assert n["depth"] == len(n["path"]) - 1
    # width: at most `beam` nodes are created per step; the first steps double 1 -> 2 -> 4 ...
    per_step = Counter(n["created_step"] for n in nodes.values() if n["created_step"] > 0)
    assert all(count <= beam for count in per_step.values())
    # golden nodes form one root-to-node path; golden implies successful
    golden = [n for n in nodes.values() if n["is_golden"]]
    if golden:
        deepest = max(golden, key=lambda n: n["depth"])
        assert {n["node_id"] for n in golden} == set(deepest["path"])
    assert all(n["is_successful"] for n in golden)
    # credited rewards = goals removed = goals_done; each credited on a golden node, each goal once
    credited = [r for r in result.rewards if r["credited"]]
    assert len(credited) == rollout["goals_done"] == len({r["goal"] + r["domain"] for r in credited})
    assert all(nodes[r["node_id"]]["is_golden"] for r in credited)
    assert rollout["reward"] == rollout["goals_done"] / rollout["goals_total"]
    assert {(r["domain"], r["goal"]) for r in credited} <= set(task.goals())
    # every matched reward sits on a successful node; pruned nodes are leaves; live leaves are all ended
    assert all(nodes[r["node_id"]]["is_successful"] for r in result.rewards)
    children = Counter(n["parent_id"] for n in nodes.values())
    assert all(children[n["node_id"]] == 0 for n in nodes.values() if n["end_reason"] == "pruned")
    assert all(n["ended"] for n in nodes.values() if children[n["node_id"]] == 0)
    # messages are deltas: the root opens with the system prompt and the user's first message
    root_messages = [m for m in result.messages if m["node_id"] == 0]
    assert [m["role"] for m in root_messages] == ["system", "user"]
    # siblings sample with distinct seeds
    seeds = Counter((n["parent_id"], n["seed"]) for n in nodes.values())
    assert max(seeds.values()) == 1


def test_beam_one_is_a_single_conversation(env):
    task = env.tasks["MUL0003.json"]
    oracle = [(c.name, c.normalised) for c in fixed_oracle_calls(env, task) if c.ok]
    cfg = SearchConfig(beam=1, max_turns=10, seed=1, finish_dialogue=True)
    result = asyncio.run(run_rollout(task, CoinAgent(oracle, 0.7), EchoUser(6), ToolRunner(ToolWOZ(env)), cfg,
                                     rollout_id="r", run_id="run"))
    assert [n["path"] for n in result.nodes] == [list(range(i + 1)) for i in range(len(result.nodes))]
    assert result.rollout["end_reason"] == "user_ended"
    assert not any(n["end_reason"] == "pruned" for n in result.nodes)


class TwoGoalAgent:
    """Meets every goal of the first domain in ONE turn (search + book), then talks."""

    name = "two-goals"

    def __init__(self, calls: list[tuple[str, dict]]):
        self.calls = calls

    async def complete(self, request: Request) -> Completion:
        done = any(m["role"] == "tool" for m in request.messages)
        if done:
            return Completion({"role": "assistant", "content": "booked"}, completion_tokens=1)
        tool_calls = [{"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                      for i, (n, a) in enumerate(self.calls)]
        return Completion({"role": "assistant", "content": "", "tool_calls": tool_calls}, completion_tokens=4)

    async def aclose(self) -> None:
        return None


def _two_goal_task(env):
    task = env.tasks["MUL0003.json"]  # hotel search + book, restaurant search + book
    calls = [(c.name, c.arguments) for c in fixed_oracle_calls(env, task) if c.name.endswith("_hotel")]
    return task, [(n, a) for n, a in calls]


def test_parity_preset_shares_seeds_credits_first_goal_and_drops_unrewarded(env):
    task, calls = _two_goal_task(env)
    truth = task.ground_truth["hotel"]["success"]
    parity_calls = [("search_hotel", {k: v for k, v in truth["search_hotel"]["parameters"].items() if v}),
                    ("book_hotel", truth["book_hotel"]["parameters"])]
    reference = SearchConfig(beam=4, max_turns=3, seed=5, **PARITY)
    tools = ToolRunner(ToolWOZ(env))
    result = asyncio.run(run_rollout(task, TwoGoalAgent(parity_calls), EchoUser(10), tools, reference,
                                     rollout_id="r", run_id="run"))
    nodes = result.nodes
    siblings = Counter((n["parent_id"], n["seed"]) for n in nodes if n["parent_id"] is not None)
    assert all(count == 2 for count in siblings.values())  # both children of a node sample with one seed
    matched = [r for r in result.rewards if r["node_id"] == 1]
    assert {r["goal"] for r in matched} == {"search_hotel", "book_hotel"}  # the turn met two goals ...
    assert [r["goal"] for r in matched if r["credited"]] == ["search_hotel"]  # ... the reference credits one
    last_credit = max(r["step"] for r in result.rewards if r["credited"])
    assert all(n["created_step"] <= last_credit or n["is_golden"] for n in nodes)  # unrewarded tail dropped

    ours = SearchConfig(beam=4, max_turns=3, seed=5)
    fixed = asyncio.run(run_rollout(task, TwoGoalAgent(calls), EchoUser(10), ToolRunner(ToolWOZ(env)), ours,
                                    rollout_id="r", run_id="run"))
    assert sorted(r["goal"] for r in fixed.rewards if r["credited"] and r["node_id"] == 1) == \
        ["book_hotel", "search_hotel"]
    assert len({n["seed"] for n in fixed.nodes if n["parent_id"] == 0}) == 2
    assert fixed.rollout["n_nodes"] > result.rollout["n_nodes"]


class BatchedTalker:
    """Always just talks (one model call per leaf per step), through the same MicroBatcher a local model uses,
    and records the size of every batch it runs."""

    name = "talker"

    def __init__(self, max_batch: int):
        self.batches: list[int] = []
        self.batcher = MicroBatcher(self._run, max_batch=max_batch, in_thread=False)

    def _run(self, requests: list[Request]) -> list[Completion]:
        self.batches.append(len(requests))
        return [Completion({"role": "assistant", "content": "ok"}, completion_tokens=1) for _ in requests]

    async def complete(self, request: Request) -> Completion:
        return await self.batcher.submit(request)

    async def aclose(self) -> None:
        return None


def test_a_wide_beam_is_one_batch_per_step(env):
    """`--beam 16` with 3 rollouts in flight: the product's batch size holds every live leaf of a step."""
    tasks = sorted(env.tasks.values(), key=lambda t: t.task_id)[:3]
    config = SearchConfig(beam=16, max_turns=5)

    def harvest(cap: int) -> list[int]:
        agent = BatchedTalker(cap)
        jobs = [lambda t=t: run_rollout(t, agent, EchoUser(10), ToolRunner(ToolWOZ(env)), config, rollout_id=t.task_id,
                                        run_id="r") for t in tasks]
        asyncio.run(run_all(jobs, concurrency=len(tasks), on_result=lambda result: None))
        return agent.batches

    assert harvest(max_batch(len(tasks), config.beam)) == [6, 12, 24, 48, 48]  # leaves: 2, 4, 8, 16, 16 each
    assert len(harvest(len(tasks) * 8)) == 7  # the old cap (concurrency x 8) split the last two steps
