"""ToolWOZ text for training a tokenizer: DB values and rows, goal sentences, tool signatures, ground-truth calls
and results, and generic agent / user phrasing filled with DB values. Deterministic for its inputs.

Tool calls are written Hermes-style (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`), the form the
tiny model's chat template renders (`train/tiny_model.py`), so its tokenizer learns merges for them.
"""

from __future__ import annotations

import json
import random
from typing import Any, Iterable, Mapping, Sequence

from toolwoz.schemas import API_DEFS, DAYS, END_CONVERSATION, TOOL_NAMES, UID_KEY
from toolwoz.tasks import Task

_SKIP_COLUMNS = {"row_idx", "raw", "id"}

# Generic agent / user phrasing; the DB values and goal sentences supply the variety.
_AGENT_LINES = [
    "Sure, I can help with that. What day would you like to travel?",
    "How many people will be in your party?",
    "What time would you like the reservation for?",
    "Which area of town do you prefer?",
    "Do you have a price range in mind?",
    "What type of food would you like?",
    "Would you like free parking and wifi?",
    "Where will you be departing from, and where are you going?",
    "I found {n} options. {name} is a nice place in the {area}.",
    "Your booking was successful. The reference number is {ref}.",
    "I'm sorry, there is nothing matching that. Would you like to try something else?",
    "Is there anything else I can help you with today?",
    "You're welcome, have a great day!",
    "The train {train} leaves {dep} at {leave} and arrives in {dest} at {arrive}.",
    "Booking failed: no availability. Shall I try another day or time?",
]
_USER_LINES = [
    "I need a place to eat in the {area} part of town.",
    "I am looking for a train from {dep} to {dest} on {day}.",
    "Can you book it for {n} people on {day}?",
    "I want to leave after {leave} please.",
    "I need to arrive by {arrive}.",
    "Could I get the address and phone number?",
    "That is all I need, thank you. " + END_CONVERSATION,
    "Yes, please book it.",
    "No, that will be all. Thanks!",
    "I'd like something {price}, please.",
]


def _signature(name: str) -> str:
    return f"{name}({', '.join(API_DEFS[name][0])})"


def _row_lines(row: Mapping[str, Any]) -> list[str]:
    values = {k: v for k, v in row.items() if k not in _SKIP_COLUMNS and v is not None}
    lines = [str(v) for v in values.values() if isinstance(v, str)]
    lines.append(json.dumps(values))
    return lines


def _call(name: str, arguments: Mapping[str, Any]) -> str:
    return f'<tool_call>{{"name": {json.dumps(name)}, "arguments": {json.dumps(arguments)}}}</tool_call>'


def _task_lines(task: Task) -> list[str]:
    """Goal sentences plus the task's ground-truth calls and (capped) results, as the agent would see them."""
    lines = list(task.message)
    for entry in task.ground_truth.values():
        for api, spec in entry.get("success", {}).items():
            arguments = {k: v for k, v in spec.get("parameters", {}).items() if v}
            lines.append(_call(api, arguments))
            returns = spec.get("returns")
            if isinstance(returns, list):
                lines.append(json.dumps(returns[:3]))
            elif returns:
                lines.append(json.dumps(returns))
    return lines


def build_corpus(rows: Mapping[str, Sequence[Mapping[str, Any]]], tasks: Iterable[Task], *,
                 extra: Iterable[str] = (), seed: int = 0) -> list[str]:
    """The corpus (see the module docstring), deterministic for its inputs.

    `rows` is `toolwoz.query.load_rows(con)`; `extra` adds lines (e.g. simulator / teacher templates).
    """
    rng = random.Random(seed)
    lines: list[str] = [_signature(n) for n in TOOL_NAMES]
    lines += [" ".join(API_DEFS[n][0]) for n in TOOL_NAMES] + list(DAYS)
    for domain in sorted(rows):
        for row in rows[domain]:
            lines += _row_lines(row)
    for task in sorted(tasks, key=lambda t: t.task_id):
        lines += _task_lines(task)
    trains = rows.get("train") or [{}]
    places = [r for d in ("restaurant", "hotel", "attraction") for r in rows.get(d, [])] or [{}]
    for i in range(max(len(trains), 200)):
        train, place = rng.choice(trains), rng.choice(places)
        values = {"n": rng.randint(1, 8), "name": place.get("name", ""), "area": place.get("area", ""),
                  "price": place.get("pricerange", ""), "ref": f"{rng.getrandbits(32):08X}",
                  "train": train.get("trainID", ""), "dep": train.get("departure", ""),
                  "dest": train.get("destination", ""), "leave": train.get("leaveAt", ""),
                  "arrive": train.get("arriveBy", ""), "day": rng.choice(DAYS)}
        lines.append(rng.choice(_AGENT_LINES).format(**values))
        lines.append(rng.choice(_USER_LINES).format(**values))
        if i % 4 == 0 and place.get("name"):
            domain = "restaurant" if "food" in place else "hotel" if "stars" in place else "attraction"
            lines.append(_call(f"search_{domain}", {"name": place["name"]}))
        if i % 4 == 1 and train.get("trainID"):
            lines.append(_call("book_train", {"people": str(values["n"]), UID_KEY["train"]: train["trainID"]}))
    return lines + list(extra)
