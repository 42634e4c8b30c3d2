"""Where ToolWOZ's ground truth contradicts the DB, found by replaying oracle calls.

- `fixed` oracle: search with the goal's own constraints, book the first row with the goal's slots;
  every goal should be met. A goal that is not is listed with the reason.
- `parity` replay: the ground-truth calls themselves (reference parameters) in `parity` semantics.
- the human wizard's booked entity checked against the goal's search constraints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from toolwoz.rewards import goals_met
from toolwoz.schemas import UID_KEY
from toolwoz.tasks import Task
from toolwoz.tools import ToolCall, ToolEnv, ToolRequest, constraints_for, row_meets
from toolwoz.values import is_empty


@dataclass
class Finding:
    task_id: str
    check: str  # fixed_oracle | parity_replay | booked_entity
    goal: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _non_empty(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if not is_empty(v)}


def fixed_oracle_calls(env: ToolEnv, task: Task) -> list[ToolCall]:
    """The calls a perfect `fixed` agent makes: search with the goal, book the first row."""
    calls = []
    for domain, entry in task.ground_truth.items():
        success = entry["success"]
        search_goal = success.get(f"search_{domain}")
        search = None
        if search_goal or f"book_{domain}" in success:
            params = _non_empty(search_goal["parameters"]) if search_goal else {}
            search = env.call(f"search_{domain}", params, task_id=task.task_id)
            calls.append(search)
        book_goal = success.get(f"book_{domain}")
        if book_goal and search is not None and search.rows:
            uid = UID_KEY[domain]
            slots = {k: v for k, v in _non_empty(book_goal["parameters"]).items() if k != uid}
            calls.append(env.call(f"book_{domain}", {**slots, uid: search.rows[0][uid]}, task_id=task.task_id))
    return calls


def _fixed_reason(env: ToolEnv, task: Task, domain: str, api: str, calls: list[ToolCall]) -> str:
    search = next((c for c in calls if c.name == f"search_{domain}"), None)
    if search is not None and search.n_rows == 0:
        params = task.ground_truth[domain]["success"].get(f"search_{domain}", {}).get("parameters", {})
        loose = [k for k, _ in constraints_for(domain, params)
                 if env.call(f"search_{domain}", {x: v for x, v in _non_empty(params).items() if x != k},
                             task_id=task.task_id).n_rows]
        hint = f" (drop {' or '.join(loose)} and rows match)" if loose else ""
        return f"no DB row meets the goal's constraints {_non_empty(params)}{hint}"
    book = next((c for c in calls if c.name == api), None)
    if book is not None and not book.ok:
        return f"booking failed: {book.error}"
    return "goal not met by the oracle calls"


def audit_task(env: ToolEnv, task: Task) -> list[Finding]:
    """Every finding for one task (empty when the ground truth is consistent)."""
    findings = []
    calls = fixed_oracle_calls(env, task)
    met = set(goals_met(task, calls))
    for domain, api in task.goals():
        if (domain, api) not in met:
            findings.append(Finding(task.task_id, "fixed_oracle", api, _fixed_reason(env, task, domain, api, calls)))
    requests = [ToolRequest(api, task.ground_truth[d]["success"][api]["parameters"], task.task_id, "parity")
                for d, api in task.goals()]
    replay = env.call_many(requests)
    met = set(goals_met(task, replay))
    for (domain, api), call in zip(task.goals(), replay):
        if (domain, api) not in met:
            reason = ("the serving rule returns no row" if call.result == [] else
                      f"the served row {_short(call.result)} fails the reference's first-row rule")
            findings.append(Finding(task.task_id, "parity_replay", api, reason))
    for domain, entry in task.ground_truth.items():
        book_goal = entry["success"].get(f"book_{domain}")
        search_goal = entry["success"].get(f"search_{domain}")
        if not book_goal or not search_goal:
            continue
        uid = UID_KEY[domain]
        rows = env.call(f"book_{domain}", {**_non_empty(book_goal["parameters"])}, task_id=task.task_id).rows
        if not rows:
            findings.append(Finding(task.task_id, "booked_entity", f"book_{domain}",
                                    f"booked {uid} {book_goal['unique_id']!r} is not in the DB"))
        elif not any(row_meets(r, search_goal["parameters"]) for r in rows):
            bad = [f"{k}: goal {v!r}, DB {rows[0].get(k)!r}" for k, v in _non_empty(search_goal["parameters"]).items()
                   if not row_meets(rows[0], {k: v})]
            findings.append(Finding(task.task_id, "booked_entity", f"book_{domain}",
                                    f"booked {book_goal['unique_id']!r} contradicts the goal ({'; '.join(bad)})"))
    return findings


def _short(result: Any) -> str:
    row = result[0] if isinstance(result, list) and result else result
    if isinstance(row, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in list(row.items())[:4]) + ", ...}"
    return str(row)[:80]


def audit(env: ToolEnv, tasks: Iterable[Task]) -> list[Finding]:
    """Findings over many tasks."""
    return [f for t in tasks for f in audit_task(env, t)]
