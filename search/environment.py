"""What the JOSH engine needs from an environment (ToolWOZ, τ-bench retail, τ-bench airline, ...).

An environment is what a conversation runs in: tasks with goals, the agent's system prompt and tool schemas,
tool calls run against a branch's state, JOSH's turn reward (which open goals a turn's calls met), the episode
reward, and the user simulators and scripted agents it offers. `search/` sees environments only through this
interface; each environment package implements it without importing `search/` (structural typing).

A tool call runs on a `Branch`: the rollout and the node ids from the root to the node whose turn made the call.
An environment whose tools write (τ-bench) shows a call the writes of that path and never a sibling's; one whose
tools only read (ToolWOZ) ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Hashable, Protocol, Sequence

Goal = Hashable  # a reward unit: ToolWOZ (domain, api), τ-bench (domain, "i:tool")


@dataclass(frozen=True)
class Branch:
    """Where a tool call runs: the rollout, and the node ids root..node of the turn that makes it."""

    rollout_id: str
    path: tuple[int, ...]

    @property
    def node_id(self) -> int:
        return self.path[-1]


@dataclass(frozen=True)
class ToolSettings:
    """The run's settings that change what a tool call returns (ToolWOZ's; others ignore them)."""

    semantics: str = "fixed"
    results: str = "full"


class Task(Protocol):
    task_id: str

    @property
    def n_goals(self) -> int: ...

    def goals(self) -> list[Goal]: ...


class ToolCall(Protocol):
    """What one executed call gives the engine: the text the agent reads and the `tool_calls` row."""

    name: Any
    ok: bool

    @property
    def content(self) -> str: ...

    def record(self) -> dict[str, Any]: ...


class User(Protocol):
    """A user simulator: the next user message given the visible conversation."""

    def reply(self, history: list[dict[str, str]]) -> str | Awaitable[str]: ...


# An LLM user's model call: chat messages in, the reply's text out.
Complete = Callable[[list[dict[str, str]]], Awaitable[str]]


class Environment(Protocol):
    name: str  # `--env` value and `runs.env`
    end_token: str  # a user message containing it ends the conversation
    protocols: tuple[str, ...]  # agent protocols it supports (`tools`, ToolWOZ also `react`)
    users: tuple[str, ...]  # `--user` values (`rule`: its deterministic simulator; `llm`)
    scripted_agents: tuple[str, ...]  # `--agent` values it runs itself (`teacher`, `oracle`)
    writes: bool  # tools change the database: state per branch, `state_changes` rows
    splits: tuple[str, ...]

    def tasks_in(self, split: str) -> list[Task]: ...  # in the order runs take them

    def task_key(self, text: str) -> str: ...  # a task id as a user may type it -> the id

    def system_prompt(self, protocol: str) -> str: ...

    def tool_schemas(self) -> list[dict[str, Any]]: ...

    def tool_request(self, name: Any, arguments: Any, *, task: Task, branch: Branch, pos: int,
                     settings: ToolSettings) -> Any: ...

    def call_many(self, requests: Sequence[Any]) -> list[ToolCall]: ...

    def ends_conversation(self, call: ToolCall) -> bool: ...

    def goals_met(self, task: Task, calls: Sequence[ToolCall], open_goals: Sequence[Goal]) -> list[Goal]: ...

    def goal_row(self, goal: Goal) -> tuple[str, str]: ...  # (domain, goal) columns of `rewards`

    def episode_reward(self, task: Task, branch: Branch, agent_messages: Sequence[str]) -> float | None: ...

    def state_changes(self, rollout_id: str) -> list[dict[str, Any]]: ...

    def forget(self, rollout_id: str) -> None: ...

    def user(self, kind: str, task: Task, seed: int, complete: Complete | None) -> User: ...

    def scripted_agent(self, name: str, task: Task) -> Callable[[list[dict[str, Any]], int, float], dict[str, Any]]:
        ...


RunTools = Callable[[Sequence[Any]], Awaitable[list[Any]]]


class Tools(Protocol):
    """A batched runner of an environment's tool calls (`search.runner.ToolRunner`)."""

    env: Environment

    async def __call__(self, requests: Sequence[Any]) -> list[Any]: ...


@dataclass
class TurnTools:
    """The tools one agent turn calls: its environment, task and branch, and the batched runner."""

    env: Environment
    task: Task
    branch: Branch
    settings: ToolSettings
    run: RunTools

    async def call(self, calls: Sequence[tuple[Any, Any, int]]) -> list[Any]:
        """Run (name, arguments, pos) calls in order; pos is the tool result's position in the node."""
        return await self.run([self.env.tool_request(name, args, task=self.task, branch=self.branch, pos=pos,
                                                     settings=self.settings) for name, args, pos in calls])
