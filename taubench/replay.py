"""Replay an action sequence on one task: each observation and both rewards (`factory ... replay`).

An action is `{name, kwargs}` as τ-bench writes them; `respond` with `kwargs.content` is an agent message (it
counts for the task's outputs). The actions run in order on a fresh branch of their own, as τ-bench's env
steps them: a tool's failure is its `Error: ...` observation, `transfer_to_human_agents` ends the episode
(later actions are not run). The branch's writes are forgotten afterwards.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from taubench import rewards
from taubench.data import RESPOND, TauTask
from taubench.env import TauEnv
from taubench.errors import DataError, UnknownTool
from taubench.state import Branch


@dataclass
class ReplayResult:
    """One observation per action run (a `respond` observes ""), the episode reward and, per action, the
    JOSH turn goals it met."""

    observations: list[str]
    reward: rewards.RewardInfo
    turn_goals: list[list[Any]] = field(default_factory=list)


def load_actions(path: str | Path) -> list[dict[str, Any]]:
    """The actions of a replay file: a JSON list of `{"name": ..., "kwargs": {...}}` (kwargs optional)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"replay file {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"replay file {path} does not parse: {' '.join(str(e).split())}") from None
    if not isinstance(data, list):
        raise DataError(f"replay file {path}: expected a JSON list of {{name, kwargs}} actions")
    actions = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise DataError(f"replay file {path}: action {i} has no name (expected {{name, kwargs}})")
        kwargs = item.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise DataError(f"replay file {path}: action {i} ({item['name']}) has kwargs that are not an object")
        actions.append({"name": item["name"], "kwargs": kwargs})
    return actions


def _pair(action: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(action, Mapping):
        return str(action.get("name")), dict(action.get("kwargs") or {})
    return action.name, dict(action.kwargs)


def tool_names(env: TauEnv) -> list[str]:
    """The domain's tool names in `tools.json` order."""
    return [s["function"]["name"] for s in env.tool_schemas]


def replay(env: TauEnv, task: TauTask, actions: Sequence[Any], *, rollout_id: str | None = None) -> ReplayResult:
    """Run `actions` on a fresh branch of `env` for `task`; raises UnknownTool (before running anything) for a
    name that is neither one of the domain's tools nor `respond`."""
    pairs = [_pair(a) for a in actions]
    known = tool_names(env)
    for i, (name, _) in enumerate(pairs):
        if name != RESPOND and name not in known:
            raise UnknownTool(f"unknown tool {name!r} (action {i}); {env.domain} tools: {', '.join(known)}, "
                              f"and {RESPOND}")
    branch = Branch(rollout_id or f"replay-{uuid.uuid4().hex}", (0,))
    observations: list[str] = []
    turn_goals: list[list[Any]] = []
    messages: list[str] = []
    open_goals = list(rewards.goals(task))
    try:
        for pos, (name, kwargs) in enumerate(pairs):
            if name == RESPOND:
                messages.append(str(kwargs.get("content", "")))
                observations.append("")
                turn_goals.append([])
                continue
            call = env.call(name, kwargs, branch=branch, pos=pos)
            observations.append(call.content)
            met = rewards.goals_met(task, [call], open_goals)
            open_goals = [g for g in open_goals if g not in met]
            turn_goals.append(list(met))
            if call.ends_conversation:
                break
        reward = rewards.episode_reward(env, task, branch, messages)
    finally:
        env.forget(branch.rollout_id)
    return ReplayResult(observations, reward, turn_goals)
