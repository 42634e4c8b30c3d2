"""ToolWOZ tasks and their ground truth, derived from MultiWOZ goals (reference §1.3-1.4, §1.6).

Deviation from the reference: search `returns` are the matching rows labelled by column name (the
reference's pandas port relabels them by position, §9.13), and values with apostrophes match (§9.9).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from toolwoz.errors import UnknownSplit
from toolwoz.multiwoz import MultiWOZ
from toolwoz.query import RETURN_COLUMNS, RowQuery, RowResult
from toolwoz.schemas import API_DEFS, EXCLUDED_DOMAINS, GOAL_DOMAIN_ORDER, UID_KEY
from toolwoz.values import is_empty

TEST_HEAD = 450  # the reference evaluates on the first 450 sorted test tasks
SPLITS = ("test", "test_full", "val", "val_boot", "val_harvest", "train")
_TAG = re.compile(r"<[^>]+>")

RunQueries = Callable[[Sequence[RowQuery]], list[RowResult]]
DomainRows = dict[str, list[dict[str, Any]]]  # domain -> rows by row_idx (query.load_rows)


@dataclass
class Task:
    """One ToolWOZ task: a MultiWOZ dialogue's goal plus the goal API calls that reward it."""

    task_id: str
    split: str
    splits: list[str]
    domains: list[str]
    goal: dict[str, Any]
    ground_truth: dict[str, Any]
    message: list[str] = field(default_factory=list)

    @property
    def n_goals(self) -> int:
        return sum(len(d["success"]) for d in self.ground_truth.values())

    def goals(self) -> list[tuple[str, str]]:
        """(domain, api name) of every reward unit, in ground-truth order."""
        return [(d, api) for d, entry in self.ground_truth.items() for api in entry["success"]]

    def to_row(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "split": self.split, "splits": self.splits, "domains": self.domains,
                "goal": json.dumps(self.goal), "ground_truth": json.dumps(self.ground_truth),
                "n_goals": self.n_goals, "message": self.message}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Task":
        return cls(row["task_id"], row["split"], list(row["splits"]), list(row["domains"]),
                   json.loads(row["goal"]), json.loads(row["ground_truth"]), list(row["message"]))


def is_toolwoz(goal: dict[str, Any]) -> bool:
    """ToolWOZ keeps dialogues with no taxi, police or hospital goal."""
    return not any(goal.get(d) for d in EXCLUDED_DOMAINS)


def goal_message(goal: dict[str, Any]) -> list[str]:
    """The instruction sentences the user simulator sees, span tags removed."""
    message = goal.get("message") or []
    if isinstance(message, str):
        message = [message]
    return [_TAG.sub("", m).strip() for m in message]


def _last_system_turn(log: list[dict[str, Any]]) -> dict[str, Any]:
    last = log[-1] if log and log[-1].get("metadata") else (log[-2] if len(log) > 1 else {})
    return last.get("metadata") or {}


def _search_query(domain: str, params: dict[str, Any]) -> RowQuery:
    """Reference §3.3 filter (parity: raw values, strict string times), every matching row."""
    constraints = tuple((k, v) for k, v in params.items() if isinstance(v, str) and not is_empty(v))
    return RowQuery(domain, constraints, "parity")


def _rows(result: RowResult, domain: str, rows: DomainRows) -> list[dict[str, Any]]:
    return [{c: rows[domain][i][c] for c in RETURN_COLUMNS[domain]} for i in result.row_ids]


Pending = list[tuple[dict[str, Any], RowQuery]]  # (ground-truth entry to fill, its query)


def _search_goals(goal: dict[str, Any]) -> tuple[dict[str, Any], Pending]:
    """Ground truth with search goals; their `returns` wait for the queries returned beside it."""
    truth: dict[str, Any] = {}
    pending: Pending = []
    for domain in GOAL_DOMAIN_ORDER:
        g = goal.get(domain) or {}
        if not g or domain in EXCLUDED_DOMAINS:
            continue
        entry: dict[str, Any] = {"success": {}, "failure": {}, "requests": list(g.get("reqt") or [])}
        truth[domain] = entry
        search_params = API_DEFS[f"search_{domain}"][0]
        info, fail = g.get("info") or {}, g.get("fail_info") or {}
        if info:
            params = {p: info.get(p, "") for p in search_params}
            entry["success"][f"search_{domain}"] = {"parameters": params, "returns": []}
            pending.append((entry["success"][f"search_{domain}"], _search_query(domain, params)))
        if fail:
            params = {p: fail.get(p) or info.get(p) or "" for p in search_params}
            entry["failure"][f"search_{domain}"] = {"parameters": params, "returns": []}
            pending.append((entry["failure"][f"search_{domain}"], _search_query(domain, params)))
    return truth, pending


def _add_book_goals(domain: str, g: dict[str, Any], meta: dict[str, Any], entry: dict[str, Any]) -> None:
    book_params, book_returns = API_DEFS[f"book_{domain}"]
    uid = UID_KEY[domain]
    book, fail_book = g.get("book") or {}, g.get("fail_book") or {}
    if book:
        params = {p: book.get(p, "") for p in book_params}
        search_returns = entry["success"].get(f"search_{domain}", {}).get("returns") or []
        semi = meta.get("semi") or {}
        booked = [dict(r) for r in (meta.get("book") or {}).get("booked") or []]
        for record in booked:
            for key in book_returns:
                if key not in record:
                    if not is_empty(semi.get(key)) and semi.get(key) != "none":
                        record[key] = semi[key]
                    elif search_returns:  # the reference indexes [0] even when empty (§9.13)
                        record[key] = search_returns[0].get(key)
        if booked and booked[-1].get(uid):
            record = booked[-1]
            params[uid] = record[uid]
            entry["success"][f"book_{domain}"] = {"parameters": params, "returns": record,
                                                  "unique_id": record[uid]}
    if fail_book:
        params = {p: fail_book.get(p, book.get(p, "")) for p in book_params}
        params[uid] = ""
        entry["failure"][f"book_{domain}"] = {"parameters": params, "returns": []}


def split_ids(all_ids: Sequence[str], test_ids: Sequence[str], val_ids: Sequence[str]) -> dict[str, list[str]]:
    """Named splits over task ids (reference §1.6 plus our val halves)."""
    ids = set(all_ids)
    test_full = sorted(ids & {task_key(i) for i in test_ids})
    val = sorted(ids & {task_key(i) for i in val_ids})
    return {"test": test_full[:TEST_HEAD], "test_full": test_full, "val": val, "val_boot": val[0::2],
            "val_harvest": val[1::2], "train": sorted(ids - set(test_full) - set(val))}


def task_key(task_id: str) -> str:
    """The task id as stored (`MUL0003.json`): MultiWOZ's list files and users may leave out `.json`."""
    return task_id if task_id.endswith(".json") else f"{task_id}.json"


def derive_tasks(mw: MultiWOZ, run: RunQueries, rows: DomainRows) -> list[Task]:
    """Every ToolWOZ task of `mw`, sorted by id; `run` answers the ground-truth search queries."""
    ids = sorted(i for i, d in mw.dialogues.items() if is_toolwoz(d["goal"]))
    splits = split_ids(ids, mw.test_ids, mw.val_ids)
    membership: dict[str, list[str]] = {i: [] for i in ids}
    for name in SPLITS:
        for i in splits[name]:
            membership[i].append(name)
    truths, pending = {}, []
    for task_id in ids:
        truths[task_id], todo = _search_goals(mw.dialogues[task_id]["goal"])
        pending += todo
    for (entry, query), result in zip(pending, run([q for _, q in pending])):
        entry["returns"] = _rows(result, query.domain, rows)
    tasks = []
    for task_id in ids:
        dialogue, truth, names = mw.dialogues[task_id], truths[task_id], membership[task_id]
        meta = _last_system_turn(dialogue["log"])
        for domain, entry in truth.items():
            _add_book_goals(domain, dialogue["goal"][domain], meta.get(domain) or {}, entry)
        base = "test" if "test_full" in names else "val" if "val" in names else "train"
        tasks.append(Task(task_id, base, names, list(truth), dialogue["goal"], truth, goal_message(dialogue["goal"])))
    return tasks


def check_split(name: str) -> str:
    """The split name, or UnknownSplit listing the valid ones."""
    if name not in SPLITS:
        raise UnknownSplit(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
    return name
