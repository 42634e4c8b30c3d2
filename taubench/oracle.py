"""The scripted oracle agent: it knows the task's gold actions (privileged; for tests, examples and negatives).

`OracleAgent(task, seed, temperature).next_message(history)` is a pure function of the OpenAI-style
conversation so far (system, user, assistant with tool_calls, tool results). It finds its place by matching
the tool calls already in the history against the gold actions, then issues the next one as ONE tool call
(τ-bench's rule: one tool call at a time). Before a call that writes it lists the call's arguments and asks
for confirmation (the domain policy's "explicit user confirmation"); after the user's reply, whatever it says,
it makes exactly the call it described. When every gold action is done it says every task output and asks
whether anything else is needed. `transfer_to_human_agents` ends the conversation, so it says nothing after it.

At temperature T > 0 it explores like a sampled policy, as the ToolWOZ teacher does: at each call position,
with probability `min(0.5, EXPLORE * T)` drawn from (seed, position), it changes one argument value of the
next action, or jumps over it (the position after a jump fills the gap with probability 1/2, which makes the
two a swap, or leaves it, which makes the jump a skip). Every decision is derived from (seed, position) and
the history, so a JOSH node with its own seed gets its own continuation of any prefix.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

EXPLORE = 0.25  # perturbation probability per call position at temperature 1 (capped at 0.5)
TRANSFER = "transfer_to_human_agents"
RESPOND = "respond"  # a gold `respond` is not a call (the closing text says the outputs)
# The tools that change the database (both domains): the oracle asks for confirmation before these.
WRITES = frozenset({
    "cancel_pending_order", "exchange_delivered_order_items", "modify_pending_order_address",
    "modify_pending_order_items", "modify_pending_order_payment", "modify_user_address",
    "return_delivered_order_items", "book_reservation", "cancel_reservation", "send_certificate",
    "update_reservation_baggages", "update_reservation_flights", "update_reservation_passengers",
})
CONFIRM_HEAD = "To go ahead, I will {what} with these details:"
CONFIRM_TAIL = "Do you confirm that I should proceed (yes/no)?"
_CONFIRM = re.compile(r"^To go ahead, I will ([a-z_ ]+) with these details:$")
_ARG_LINE = re.compile(r"^- (\w+): (.*)$")
DONE = "All done: I have taken care of everything you asked for."
ELSE = "Is there anything else I can help you with?"


class _Action(Protocol):
    name: str
    kwargs: dict[str, Any]


class _Task(Protocol):
    actions: Sequence[_Action]
    outputs: Sequence[str]


@dataclass(frozen=True)
class Planned:
    """The next call: a tool name and its arguments (a gold action, perhaps perturbed)."""

    name: str
    kwargs: dict[str, Any]


def stable_rng(seed: int, position: int) -> random.Random:
    """RNG for the decision at call `position`; independent of Python's hash salt."""
    digest = hashlib.sha256(f"tau-oracle:{seed}:{position}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def tool_call_message(name: str, kwargs: dict[str, Any], position: int) -> dict[str, Any]:
    """An OpenAI assistant message with one tool call (JSON text arguments, id `call_<position>`)."""
    call = {"id": f"call_{position}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(kwargs, ensure_ascii=False)}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def say(content: str) -> dict[str, Any]:
    """An assistant message that says `content`."""
    return {"role": "assistant", "content": content}


def confirmation(name: str, kwargs: dict[str, Any]) -> str:
    """The text that lists a write's arguments (one JSON value per line) and asks for a yes."""
    lines = [CONFIRM_HEAD.format(what=name.replace("_", " "))]
    lines += [f"- {key}: {json.dumps(value, ensure_ascii=False)}" for key, value in kwargs.items()]
    return "\n".join([*lines, CONFIRM_TAIL])


def parse_confirmation(text: str) -> Planned | None:
    """The call a `confirmation` text describes, or None when `text` is not one."""
    lines = text.split("\n")
    head = _CONFIRM.match(lines[0]) if lines else None
    if head is None or lines[-1] != CONFIRM_TAIL:
        return None
    kwargs = {}
    for line in lines[1:-1]:
        arg = _ARG_LINE.match(line)
        if arg is None:
            return None
        try:
            kwargs[arg.group(1)] = json.loads(arg.group(2))
        except ValueError:
            return None
    return Planned(head.group(1).replace(" ", "_"), kwargs)


def final_message(outputs: Sequence[str]) -> str:
    """The closing text: done, every task output, and the question whether anything else is needed."""
    said = f" Here is what you asked about: {'; '.join(outputs)}." if outputs else ""
    return f"{DONE}{said} {ELSE}"


def _calls(history: Sequence[dict[str, Any]]) -> list[Planned]:
    """The tool calls of the history, in order (arguments that do not parse count as {})."""
    out = []
    for m in history:
        if m.get("role") != "assistant":
            continue
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            args = fn.get("arguments")
            try:
                kwargs = json.loads(args) if isinstance(args, str) else dict(args or {})
            except ValueError:
                kwargs = {}
            out.append(Planned(str(fn.get("name")), kwargs if isinstance(kwargs, dict) else {}))
    return out


def _pending(history: Sequence[dict[str, Any]]) -> Planned | None:
    """The call the agent's last message asked to confirm, once the user has replied to it."""
    replied = False
    for m in reversed(history):
        if m.get("role") == "user":
            replied = True
        elif m.get("role") == "assistant":
            if m.get("tool_calls") or not replied:
                return None
            return parse_confirmation(m.get("content") or "")
        elif m.get("role") == "tool":
            return None
    return None


def perturb_value(value: Any, rng: random.Random) -> Any:
    """A different value of the same kind: a digit changed, a word cut short, a number moved, one list item
    changed, a flag flipped."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice((-1, 1))
    if isinstance(value, float):
        return round(value + rng.choice((-1.0, 1.0)), 2)
    if isinstance(value, str):
        digits = [i for i, ch in enumerate(value) if ch.isdigit()]
        if digits:
            i = rng.choice(digits)
            return value[:i] + str((int(value[i]) + rng.randint(1, 9)) % 10) + value[i + 1:]
        return value[:-1] if len(value) > 1 else value + "x"
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        return [*value[:i], perturb_value(value[i], rng), *value[i + 1:]]
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        return {**value, key: perturb_value(value[key], rng)}
    return value


class OracleAgent:
    """Issues the task's gold actions in order, asks before writes, then reports the outputs."""

    def __init__(self, task: _Task, seed: int = 0, temperature: float = 0.0):
        self.task, self.seed, self.temperature = task, seed, temperature
        self.gold = [Planned(a.name, dict(a.kwargs)) for a in task.actions if a.name != RESPOND]

    def next_message(self, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The next assistant message: one tool call, a confirmation question, or the closing text."""
        calls = _calls(history)
        position = len(calls)
        pending = _pending(history)
        if pending is not None:  # the user answered our confirmation: make the call we described
            return tool_call_message(pending.name, pending.kwargs, position)
        planned = self._plan(calls, position)
        if planned is None:
            return say(final_message(self.task.outputs))
        if planned.name in WRITES:
            return say(confirmation(planned.name, planned.kwargs))
        return tool_call_message(planned.name, planned.kwargs, position)

    # -- where the history stands ---------------------------------------------------------------------------

    def _match(self, calls: Sequence[Planned]) -> tuple[set[int], int, int | None]:
        """(gold indices done, first index not yet passed, the gap the last call jumped over or None)."""
        done: set[int] = set()
        pointer, gap = 0, None
        for call in calls:
            j = next((i for i, g in enumerate(self.gold) if i not in done and g == call), None)
            if j is None:  # a perturbed call stands for the next open gold action of that tool
                j = next((i for i in range(pointer, len(self.gold))
                          if i not in done and self.gold[i].name == call.name), None)
            gap = None
            if j is None:
                continue
            done.add(j)
            if j > pointer and j - 1 not in done:
                gap = j - 1
            pointer = max(pointer, j + 1)
        return done, pointer, gap

    def _plan(self, calls: Sequence[Planned], position: int) -> Planned | None:
        """The next call (None: every gold action is done or passed)."""
        done, pointer, gap = self._match(calls)
        if self.temperature <= 0:
            return self.gold[pointer] if pointer < len(self.gold) else None
        rng = stable_rng(self.seed, position)
        if gap is not None and rng.random() < 0.5:  # fill it: the jump becomes a swap
            return self.gold[gap]
        if pointer >= len(self.gold):
            return None
        action = self.gold[pointer]
        if action.name == TRANSFER or rng.random() >= min(0.5, EXPLORE * self.temperature):
            return action
        if rng.random() < 0.5 and action.kwargs:
            key = rng.choice(sorted(action.kwargs))
            return Planned(action.name, {**action.kwargs, key: perturb_value(action.kwargs[key], rng)})
        return self.gold[pointer + 1] if pointer + 1 < len(self.gold) else None  # jump (or skip the last)
