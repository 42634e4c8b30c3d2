"""One agent turn: model calls, tool execution and results, in the `tools` or `react` protocol.

A turn is up to `max_calls` model calls: a tool call is executed and its result appended, then the model
is called again; a plain reply (`tools`) or a SPEAK command (`react`) ends the turn. Output that cannot
be parsed becomes an error result the agent sees, recorded like any failed tool call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from search.backends.base import Backend, Completion, Message, Request, SamplingParams
from search.environment import Environment, TurnTools

MALFORMED_CALL = "malformed_call"  # the error kind of model output that could not be parsed into a call
REACT_COMMAND = re.compile(r"\b(PLAN|APICALL|SPEAK)\b", re.S)
END_TOKEN = "<COMMAND_END>"


@dataclass
class Turn:
    """What one agent turn added: messages (with per-message stats), executed calls and their records."""

    messages: list[Message] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)  # per message: tokens, latency
    calls: list[Any] = field(default_factory=list)  # executed calls (the environment's), for the reward check
    call_rows: list[dict[str, Any]] = field(default_factory=list)  # tool_calls rows (pos = result message)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    end: str = "spoke"  # spoke | max_calls | context_overflow | error | transferred
    error: str | None = None

    def add(self, message: Message, completion: Completion | None = None) -> int:
        self.messages.append(message)
        self.stats.append({"prompt_tokens": completion.prompt_tokens if completion else None,
                           "completion_tokens": completion.completion_tokens if completion else None,
                           "latency_ms": completion.latency_ms if completion else None})
        return len(self.messages) - 1


def _malformed_row(pos: int, raw: str, error: str) -> dict[str, Any]:
    return {"pos": pos, "name": None, "arguments": json.dumps(raw[:2000]), "semantics": None, "ok": False,
            "error_kind": MALFORMED_CALL, "error": error, "result": None, "n_rows": 0,
            "latency_us": 0}


class Protocol:
    """How tools are offered and how model output becomes calls, results and visible text."""

    name = "tools"

    def __init__(self, env: Environment):
        self.env = env

    def system_prompt(self) -> str:
        return self.env.system_prompt(self.name)

    def request_tools(self) -> list[dict[str, Any]] | None:
        return self.env.tool_schemas()

    def visible(self, messages: Sequence[Message]) -> list[dict[str, str]]:
        """The conversation as the user sees it: user turns and the agent's spoken replies."""
        out = []
        for m in messages:
            if m["role"] == "user":
                out.append({"role": "user", "content": m["content"]})
            elif m["role"] == "assistant" and not m.get("tool_calls") and m.get("content") and not m.get("malformed"):
                out.append({"role": "assistant", "content": m["content"]})
        return out

    async def step(self, completion: Completion, turn: Turn, tools: TurnTools) -> bool:
        """Append what this model output means to `turn`; True when the turn is over."""
        message = completion.message
        if completion.parse_error:
            pos = turn.add({"role": "assistant", "content": message.get("content") or "", "malformed": True},
                           completion)
            text = f"Error: malformed tool call ({completion.parse_error}); call a tool as JSON or reply in text"
            turn.add({"role": "tool", "tool_call_id": f"malformed_{pos}", "content": text})
            turn.call_rows.append(_malformed_row(pos + 1, message.get("content") or "", completion.parse_error))
            return False
        calls = message.get("tool_calls") or []
        if not calls:
            turn.add({"role": "assistant", "content": message.get("content") or ""}, completion)
            return True
        first = turn.add({"role": "assistant", "content": message.get("content") or "", "tool_calls": calls},
                         completion) + 1
        results = await tools.call([(c["function"]["name"], c["function"]["arguments"], first + i)
                                    for i, c in enumerate(calls)])
        for c, result in zip(calls, results):
            pos = turn.add({"role": "tool", "tool_call_id": c.get("id") or "", "content": result.content})
            turn.calls.append(result)
            turn.call_rows.append({"pos": pos, **result.record()})
        return _transferred(turn, tools.env, results)


class ReactProtocol(Protocol):
    """The reference's text protocol (PLAN / APICALL / SPEAK, results as `APIRETURN ...` user messages)."""

    name = "react"

    def request_tools(self) -> None:
        return None

    def visible(self, messages: Sequence[Message]) -> list[dict[str, str]]:
        out = []
        for m in messages:
            if m["role"] == "user" and not m["content"].startswith("APIRETURN"):
                out.append({"role": "user", "content": m["content"]})
            elif m["role"] == "assistant":
                spoken = [text for cmd, text in _commands(m.get("content") or "") if cmd == "SPEAK"]
                if spoken:
                    out.append({"role": "assistant", "content": spoken[-1]})
        return out

    async def step(self, completion: Completion, turn: Turn, tools: TurnTools) -> bool:
        text = completion.message.get("content") or ""
        turn.add({"role": "assistant", "content": text}, completion)
        commands = _commands(text)
        if not commands:
            self._observe(turn, "APIRETURN ERROR: no command found; use PLAN, APICALL or SPEAK", text,
                          "no command found")
            return False
        for cmd, body in commands:
            if cmd == "SPEAK":
                return True
            if cmd != "APICALL":
                continue
            try:
                call = json.loads(body[body.index("{"): body.rindex("}") + 1])
                name, params = call["name"], call.get("parameters", {})
                if not isinstance(name, str):
                    raise TypeError("name must be a string")
            except (ValueError, KeyError, TypeError) as e:
                self._observe(turn, "APIRETURN FAILURE INCORRECTLY FORMATTED APICALL", body, str(e))
                continue
            (result,) = await tools.call([(name, params, len(turn.messages))])
            pos = turn.add({"role": "user", "content": f"APIRETURN {result.content}"})
            turn.calls.append(result)
            turn.call_rows.append({"pos": pos, **result.record()})
            if _transferred(turn, tools.env, [result]):
                return True
        return False

    @staticmethod
    def _observe(turn: Turn, content: str, raw: str, error: str) -> None:
        pos = turn.add({"role": "user", "content": content})
        turn.call_rows.append(_malformed_row(pos, raw, error))


def _commands(text: str) -> list[tuple[str, str]]:
    """[(command, body)] in order; bodies run to the next command keyword, `<COMMAND_END>` removed."""
    parts = REACT_COMMAND.split(text)
    return [(parts[i], parts[i + 1].replace(END_TOKEN, "").strip()) for i in range(1, len(parts) - 1, 2)]


def _transferred(turn: Turn, env: Environment, results: Sequence[Any]) -> bool:
    """A call that ends the conversation (τ-bench's `transfer_to_human_agents`) ends the turn too."""
    if any(env.ends_conversation(r) for r in results):
        turn.end = "transferred"
        return True
    return False


PROTOCOLS: dict[str, type[Protocol]] = {"tools": Protocol, "react": ReactProtocol}


async def agent_turn(backend: Backend, protocol: Protocol, history: Sequence[Message], *, tools: TurnTools,
                     params: SamplingParams, max_calls: int = 3) -> Turn:
    """Run one agent turn after `history`; returns only what the turn added."""
    turn = Turn()
    offered = protocol.request_tools()
    for call_index in range(max_calls):
        completion = await backend.complete(model_request([*history, *turn.messages], offered, params, call_index))
        turn.prompt_tokens += completion.prompt_tokens
        turn.completion_tokens += completion.completion_tokens
        if completion.error:
            turn.end, turn.error = "error", completion.error
            return turn
        if completion.finish_reason == "context_overflow":
            turn.end = "context_overflow"
            return turn
        if await protocol.step(completion, turn, tools):
            return turn
    turn.end = "max_calls"
    return turn


def model_request(messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None, params: SamplingParams,
                  call_index: int = 0) -> Request:
    """The request of a turn's `call_index`-th model call (each call of a turn has its own seed)."""
    seed = None if params.seed is None else params.seed + call_index
    return Request([_wire(m) for m in messages], tools,
                   SamplingParams(params.temperature, params.top_p, params.max_new_tokens, seed))


def _wire(message: Message) -> Message:
    """A message as backends receive it (our bookkeeping keys removed)."""
    return {k: v for k, v in message.items() if k != "malformed"}
