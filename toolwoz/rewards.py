"""Goal matching (sparse rewards) in both semantics (reference §4), the episode reward, and the paired bootstrap
that compares two runs. "100% Success" is defined once, in SQL: `sql/macros/is_success.sql`.

`fixed`: the user's goal is its constraints. A search goal is met by a successful search whose
arguments include every goal constraint and that found rows; a book goal by a successful booking of an
entity that meets the goal's search constraints, with the goal's booking slots.
`parity`: the reference's first-row and unique-id rules, on the arguments as the agent sent them.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from toolwoz.schemas import UID_KEY
from toolwoz.tasks import Task
from toolwoz.tools import ToolCall, constraints_for, row_meets
from toolwoz.values import canonical, clean, is_empty, is_subset

Goal = tuple[str, str]  # (domain, api name)


def _fixed_met(task: Task, domain: str, api: str, call: ToolCall) -> bool:
    success = task.ground_truth[domain]["success"]
    search_params = success.get(f"search_{domain}", {}).get("parameters", {})
    if api.startswith("search_"):
        wanted = constraints_for(domain, search_params)
        got = constraints_for(domain, call.normalised)
        return call.n_rows > 0 and set(wanted) <= set(got)
    uid = UID_KEY[domain]
    slots = {k: canonical(k, v) for k, v in success[api]["parameters"].items() if k != uid and not is_empty(v)}
    if any(call.normalised.get(k) != v for k, v in slots.items()):
        return False
    return any(row_meets(row, search_params) for row in call.rows)


def _parity_met(task: Task, domain: str, api: str, call: ToolCall, open_goals: Iterable[Goal]) -> bool:
    if not isinstance(call.arguments, dict):
        return False
    success = task.ground_truth[domain]["success"]
    params = call.arguments
    if api.startswith("book_"):
        # The reference reads only the recorded arguments, so a rejected call can still count (§9.30).
        return is_subset(success[api]["parameters"], params)
    returned = call.result[0] if isinstance(call.result, list) and call.result else None
    if not isinstance(returned, dict) or not returned:
        return False
    goal = {k: v for k, v in clean(success[api]["parameters"]).items()}
    book_api = f"book_{domain}"
    unique = success[book_api]["unique_id"] if book_api in success and (domain, book_api) in open_goals else ""
    uid = UID_KEY[domain]
    if is_subset(goal, params):
        return not unique or returned.get(uid) == unique
    if is_subset(params, goal):
        return is_subset(goal, returned) if not unique else returned.get(uid) == unique
    return False


def goal_met(task: Task, goal: Goal, call: ToolCall, open_goals: Iterable[Goal] | None = None) -> bool:
    """Does `call` achieve `goal` of `task`, in the semantics the call ran with?"""
    domain, api = goal
    if call.name != api or call.task_id not in (None, task.task_id):
        return False
    if call.semantics == "parity":
        return _parity_met(task, domain, api, call, task.goals() if open_goals is None else list(open_goals))
    return call.ok and _fixed_met(task, domain, api, call)


def goals_met(task: Task, calls: Sequence[ToolCall], open_goals: Sequence[Goal] | None = None) -> list[Goal]:
    """The goals among `open_goals` (default: all) that any of `calls` achieves, in goal order."""
    goals = task.goals() if open_goals is None else list(open_goals)
    return [g for g in goals if any(goal_met(task, g, c, goals) for c in calls)]


def episode_reward(task: Task, calls: Sequence[ToolCall]) -> float:
    """Share of the task's goals achieved by any call of the conversation (reference §4.4)."""
    return len(goals_met(task, calls)) / task.n_goals if task.n_goals else 0.0


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, float]:
    """Paired bootstrap over tasks of mean(a - b): the difference, its interval and P(diff <= 0)."""
    import numpy as np

    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs two equally long, non-empty lists (one value per task)")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return {"diff": round(float(diff.mean()), 4), "low": round(float(np.quantile(means, tail)), 4),
            "high": round(float(np.quantile(means, 1 - tail)), 4),
            "p_not_better": round(float((means <= 0).mean()), 4), "tasks": len(diff)}
