"""The one interface every agent (and LLM-user) backend implements.

A request is chat messages (OpenAI format) + tool schemas + sampling parameters; the answer is one
assistant message (text and/or `tool_calls`) with token counts and latency. Backends are async so a
scheduler can keep many conversations in flight; a local model batches whatever is pending into one
`generate`, an HTTP backend sends concurrent requests under a limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from search.errors import SearchError

Message = dict[str, Any]  # {"role", "content", "tool_calls"?, "tool_call_id"?}


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None  # per-request seed; siblings in a JOSH tree get distinct ones


@dataclass(frozen=True)
class Request:
    messages: Sequence[Message]
    tools: Sequence[dict[str, Any]] | None = None
    params: SamplingParams = SamplingParams()


@dataclass
class Completion:
    """One assistant turn, or why there is none.

    `message` is always a valid assistant message. When the model's text could not be parsed into tool
    calls, `message["content"]` holds the raw text and `parse_error` says what was wrong: the runner shows
    the agent an error result (a bad rollout is data, not a crash). `error` is set when the backend itself
    failed after its retries (then `message` is empty and the conversation ends with that error).
    """

    message: Message
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    parse_error: str | None = None
    error: str | None = None
    finish_reason: str = "stop"  # stop | length | context_overflow | error
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, error: str, latency_ms: float = 0.0) -> "Completion":
        """The backend failed on this request: an empty assistant message that ends the conversation."""
        return cls(message={"role": "assistant", "content": ""}, error=error, finish_reason="error",
                   latency_ms=latency_ms)


class BackendError(SearchError):
    """The backend cannot serve at all (bad model path, unreachable endpoint): a setup problem."""


class Backend(Protocol):
    """What the runner needs from a backend."""

    name: str  # recorded on the run: a model path / Hub id, `openai:MODEL@URL`, or `teacher`
    # Optional `batched = True`: concurrent requests share batches (a local model's, a server's), so JOSH asks
    # for calls ahead of its step barrier (search/ahead.py); a backend that answers at once has no use for it.

    async def complete(self, request: Request) -> Completion:
        """Answer one request; concurrent calls may be batched together by the backend."""
        ...

    async def aclose(self) -> None:
        """Release threads, sessions or servers."""
        ...
