"""Generated text -> one OpenAI-format assistant message (`content` + `tool_calls`).

Two parsers: the tokenizer's own `response_template` (transformers' `parse_response`) when it has one, and
a Hermes-style parser for `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (what the tiny
model's template and Qwen-style templates emit). Either way the result is validated and normalised: `content`
is a string, each call is `{"id": "call_<n>", "type": "function", "function": {"name", "arguments"}}` with
`arguments` as JSON text. Text that cannot be parsed is returned as content with a `parse_error`; nothing here
raises, since a bad generation is data for the runner, not a crash.
"""

from __future__ import annotations

import json
import re
from typing import Any

from common.errors import first_line
from search.errors import SearchError
from toolwoz.values import storable, storable_text

Message = dict[str, Any]
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)


class _Malformed(SearchError):
    """A parsed reply that is not a valid assistant message; caught here and returned as a `parse_error`."""


def _arguments_text(arguments: Any) -> str:
    """Arguments as JSON text; a string is kept verbatim (the tool layer judges whether it is an object)."""
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments)


def _tool_call(n: int, call: Any) -> dict[str, Any]:
    """Validate one parsed call (`{"name", "arguments"}`, optionally under `function`) into OpenAI form."""
    function = call.get("function", call) if isinstance(call, dict) else call
    if not isinstance(function, dict):
        raise _Malformed(f"tool call {n} is not a JSON object")
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _Malformed(f"tool call {n} has no name")
    arguments = function["arguments"] if "arguments" in function else function.get("parameters")
    return {"id": f"call_{n}", "type": "function",
            "function": {"name": name.strip(), "arguments": _arguments_text(arguments)}}


def _message(content: Any, calls: list[Any]) -> Message:
    content, calls = storable(content), storable(calls)  # parsed JSON may hold lone surrogates, NaN, deep nesting
    if content is not None and not isinstance(content, str):
        raise _Malformed("content is not text")
    message: Message = {"role": "assistant", "content": (content or "").strip()}
    if calls:
        message["tool_calls"] = [_tool_call(n, c) for n, c in enumerate(calls)]
    return message


def parse_hermes(text: str) -> Message:
    """Parse `<tool_call>{json}</tool_call>` blocks (an unterminated last block counts); raises ValueError."""
    calls = []
    for n, match in enumerate(_BLOCK.finditer(text)):
        body = match.group(1).strip()
        try:
            calls.append(json.loads(body))
        except json.JSONDecodeError as e:
            raise _Malformed(f"tool call {n} is not valid JSON ({e.msg} at char {e.pos}): {body[:80]!r}") from None
    return _message(_BLOCK.sub("", text), calls)


def _parse_with_template(text: str, tokenizer: Any) -> Message:
    parsed = tokenizer.parse_response(text, prefix="")
    if not isinstance(parsed, dict):
        raise _Malformed(f"response parser returned {type(parsed).__name__}")
    return _message(parsed.get("content"), list(parsed.get("tool_calls") or []))


def from_openai(content: Any, tool_calls: Any) -> tuple[Message, str | None]:
    """Normalise an OpenAI-format reply; without `tool_calls` the content is parsed for raw calls.
    Text is made valid Unicode first (`values.storable`): a server may send lone surrogates as JSON escapes."""
    content, tool_calls = storable(content), storable(tool_calls)
    if not tool_calls:
        return parse_assistant(content if isinstance(content, str) else "")
    try:
        message = _message(content, list(tool_calls))
    except Exception as e:
        raw = str(content or "") + json.dumps(tool_calls)
        return {"role": "assistant", "content": raw}, str(e) or type(e).__name__
    for call, original in zip(message["tool_calls"], tool_calls):
        if isinstance(original, dict) and isinstance(original.get("id"), str) and original["id"]:
            call["id"] = original["id"]  # keep the server's ids: tool results refer to them
    return message, None


def parse_assistant(text: str, tokenizer: Any = None) -> tuple[Message, str | None]:
    """Parse generated text into `(assistant message, parse_error)`; never raises.

    Uses `tokenizer.parse_response` when the tokenizer has a `response_template`, else (or when that
    fails) the Hermes parser. On failure the message holds the raw text as `content`.
    """
    text = storable_text(text)
    template_error = None
    if tokenizer is not None and getattr(tokenizer, "response_template", None):
        try:
            return _parse_with_template(text, tokenizer), None
        except Exception as e:  # the parser raises ValueError, TypeError, ... on model garbage
            template_error = f"response_template: {first_line(e)}"
    try:
        return parse_hermes(text), None
    except Exception as e:
        error = str(e) or type(e).__name__
        return {"role": "assistant", "content": text}, (f"{template_error}; {error}" if template_error else error)
