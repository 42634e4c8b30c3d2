"""τ-bench's two rewards: JOSH's turn reward (gold actions met) and the episode reward (database + outputs).

Turn reward, as the JOSH reference's τ-bench agent gives it: each gold tool action is a goal; a call whose action
(name and parsed arguments) equals a still-open gold action meets the first such goal.

Episode reward, τ-bench's `calculate_reward` with both parts (the issue's rule): 1.0 iff the branch's final
database equals the one after replaying the gold actions on a fresh branch (compared in SQL over the write rows,
as canonical JSON) and every task output appears (case-insensitive, commas removed from the message) in some
agent message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from taubench import state
from taubench.data import RESPOND, Action, TauTask
from taubench.env import TERMINATE_TOOLS, TauCall, TauEnv
from taubench.state import Branch

Goal = tuple[str, str]  # (domain, "i:name"): i indexes task.actions


@dataclass(frozen=True)
class RewardInfo:
    reward: float
    db_match: bool
    outputs: dict[str, bool]
    differences: list[tuple[str, str]] = field(default_factory=list)  # (tbl, key) rows that differ from gold


def goals(task: TauTask) -> list[Goal]:
    """The task's goals: one per gold tool action (not `respond`), in order."""
    return [(task.domain, f"{i}:{a.name}") for i, a in enumerate(task.actions) if a.name != RESPOND]


def _action(call: TauCall | Action | dict[str, Any]) -> Action | None:
    if isinstance(call, TauCall):
        return call.action
    if isinstance(call, Action):
        return call
    return Action(call["name"], call.get("kwargs") or {})


def goals_met(task: TauTask, calls: Iterable[TauCall | Action | dict[str, Any]], open_goals: Sequence[Goal]
              ) -> list[Goal]:
    """The open goals a turn's calls met: each call meets the first still-open gold action equal to it."""
    remaining = list(open_goals)
    met = []
    for call in calls:
        action = _action(call)
        if action is None:
            continue
        for goal in remaining:
            if task.actions[int(goal[1].split(":", 1)[0])] == action:
                remaining.remove(goal)
                met.append(goal)
                break
    return met


def gold_branch(env: TauEnv, task: TauTask) -> Branch:
    """A branch holding the database after the task's gold actions (replayed once per env and task)."""
    branch = env.gold.get(task.task_id)
    if branch is None:
        branch = Branch(f"gold:{task.task_id}", (0,))
        state.forget(env.con, branch.rollout_id)
        for a in task.actions:
            if a.name != RESPOND and a.name not in TERMINATE_TOOLS:
                env.call(a.name, a.kwargs, branch=branch)
        env.gold[task.task_id] = branch
    return branch


def outputs_found(task: TauTask, agent_messages: Iterable[str]) -> dict[str, bool]:
    """Each task output -> whether some agent message contains it (case-insensitive, commas removed)."""
    said = [m.lower().replace(",", "") for m in agent_messages if isinstance(m, str)]
    return {o: any(o.lower() in m for m in said) for o in task.outputs}


def episode_reward(env: TauEnv, task: TauTask, branch: Branch, agent_messages: Iterable[str]) -> RewardInfo:
    """τ-bench's reward for a branch's final state and the agent's messages (the `respond` texts)."""
    differences = state.differences(env.con, branch, gold_branch(env, task))
    outputs = outputs_found(task, agent_messages)
    db_match = not differences
    return RewardInfo(1.0 if db_match and all(outputs.values()) else 0.0, db_match, outputs, differences)
