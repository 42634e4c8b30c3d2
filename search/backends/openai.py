"""An OpenAI-compatible chat-completions endpoint as a `Backend` (OpenAI, vLLM, `transformers serve`, ...).

Requests go out concurrently under a semaphore; connection errors, timeouts (`timeout_s`, the CLI's
`--request-timeout`: a deadline for the whole request, however slowly the answer comes), dropped connections,
429, 5xx and malformed 200 bodies (not JSON, no `choices`) are retried with exponential backoff, and a request
that still fails becomes a `Completion` with `error` set (a failed branch, and so a `failed` rollout that a re-run
retries; never an exception). Odd but usable shapes are read leniently: a `message` that is a string is its
content, content given as a list of text parts is joined, a `usage` that is not an object or token counts that
are not numbers count as 0. Tool calls come back as `tool_calls` or as raw `<tool_call>` text in `content` (a
server whose tokenizer has no response template), and both end up as the same assistant message.

`transformers serve` notes (`shared/notes/stack-checks.md` §1): it only samples when the model's
`generation_config.json` has `do_sample=True` (or pass `extra_body={"generation_config": json.dumps({...})}`);
it answers 422 to unknown fields, so only standard fields are sent; it returns HTTP 500 when the model's
tool-call JSON is malformed and the tokenizer has a response template, so serve a copy without one; `n` is
ignored, so send one request per sample with distinct seeds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

try:
    import httpx2 as httpx  # the distribution huggingface_hub 2.x depends on
except ImportError:  # pragma: no cover - older stacks ship plain httpx
    import httpx  # type: ignore[no-redef]

from search.backends.base import BackendError, Completion, Message, Request
from search.backends.parsing import from_openai

RETRY_STATUS = {408, 409, 429}  # plus every 5xx
_OVERFLOW_HINTS = ("context_length_exceeded", "maximum context length", "too many tokens", "context length")
# A plain `vllm serve` (no --enable-auto-tool-choice) answers 400 to the implied tool_choice "auto"; with "none"
# it still renders the tools into the prompt and returns calls as text, which our parser reads.
_NO_AUTO_TOOL_CHOICE = "--enable-auto-tool-choice"


def _text(response: Any) -> str:
    try:
        return response.text
    except (ValueError, LookupError):  # a body that is not text in its declared encoding
        return repr(response.content[:300])


def _count(value: Any) -> int:
    """A token count as the server gave it, or 0 when it is not a non-negative whole number."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value < 2**31 else 0


def _content_text(content: Any) -> Any:
    """Content as text: a list of `{"type": "text", "text": ...}` parts is joined; anything else is kept."""
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content


def wire_message(message: Message) -> Message:
    """A message in the wire format: tool-call `arguments` as JSON text, each call with an id."""
    out = dict(message)
    if out.get("tool_calls"):
        calls = []
        for n, call in enumerate(out["tool_calls"]):
            function = call.get("function", call)
            arguments = function.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            calls.append({"id": call.get("id") or f"call_{n}", "type": "function",
                          "function": {"name": function.get("name"), "arguments": arguments}})
        out["tool_calls"] = calls
    return out


class OpenAIBackend:
    """POST /chat/completions at `base_url` (e.g. `http://127.0.0.1:8000/v1`)."""

    batched = True  # concurrent requests share batches: JOSH requests calls ahead (search/ahead.py)

    def __init__(self, model: str, base_url: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 60, retries: int = 3, backoff_s: float = 0.5,
                 extra_body: dict[str, Any] | None = None):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.name = f"openai:{model}@{self.base_url}"
        self.concurrency, self.timeout_s, self.retries, self.backoff_s = concurrency, timeout_s, retries, backoff_s
        self.extra_body = dict(extra_body or {})
        api_key = os.environ.get(api_key_env) if api_key_env else None
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None
        self._tool_choice: str | None = None  # "none" once the server refused tool_choice "auto"

    def _session(self) -> tuple[Any, asyncio.Semaphore]:
        """The client and semaphore of the running loop (both are bound to the loop they first ran on)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._semaphore is None:
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                             timeout=httpx.Timeout(self.timeout_s),
                                             limits=httpx.Limits(max_connections=self.concurrency))
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._loop = loop
        return self._client, self._semaphore

    def payload(self, request: Request) -> dict[str, Any]:
        """The JSON body: standard fields only (strict servers reject unknown ones), plus `extra_body`."""
        params = request.params
        body: dict[str, Any] = {"model": self.model, "messages": [wire_message(m) for m in request.messages],
                                "temperature": params.temperature, "top_p": params.top_p,
                                "max_tokens": params.max_new_tokens}
        if request.tools:
            body["tools"] = list(request.tools)
            if self._tool_choice:
                body["tool_choice"] = self._tool_choice
        if params.seed is not None:
            body["seed"] = params.seed
        return body | self.extra_body

    def preflight(self, timeout_s: float = 5.0) -> None:
        """Fail fast with a BackendError when nothing answers at `base_url` (a wrong URL is a setup mistake)."""
        try:
            httpx.get(f"{self.base_url}/models", timeout=timeout_s, headers=self._headers)
        except httpx.TransportError as e:
            raise BackendError(f"cannot reach {self.base_url} ({type(e).__name__}); is the server running?") from e

    async def complete(self, request: Request) -> Completion:
        """One chat completion; failures after the retries come back as `Completion.error`."""
        client, semaphore = self._session()
        body = self.payload(request)
        start = time.perf_counter()
        error = "no attempt made"
        for attempt in range(self.retries + 1):
            delay = self.backoff_s * 2**attempt
            try:
                async with semaphore:
                    # A deadline for the whole request: httpx's timeout bounds each read, and a server that
                    # drips a byte at a time never trips it. Cut here, httpx closes the connection.
                    async with asyncio.timeout(self.timeout_s):
                        response = await client.post("/chat/completions", json=body)
            except TimeoutError:
                error = f"TimeoutError: no complete response within {self.timeout_s:g} s"
            except httpx.HTTPError as e:  # connection refused, reset or dropped, timeouts, undecodable bodies
                error = f"{type(e).__name__}: {str(e) or 'transport error'}"
            else:
                latency_ms = (time.perf_counter() - start) * 1000
                if response.status_code == 200:
                    completion = self._completion(response, latency_ms, attempt)
                    if completion is not None:
                        return completion
                    error = f"malformed response: {_text(response)[:300]!r}"
                    if attempt < self.retries:
                        await asyncio.sleep(delay)
                    continue
                text = _text(response)
                error = f"HTTP {response.status_code}: {text[:300]}"
                if response.status_code == 400 and "tools" in body and _NO_AUTO_TOOL_CHOICE in text \
                        and "tool_choice" not in body:
                    self._tool_choice = "none"
                    return await self.complete(request)
                if response.status_code == 400 and any(h in text.lower() for h in _OVERFLOW_HINTS):
                    return Completion(message={"role": "assistant", "content": ""}, latency_ms=latency_ms,
                                      finish_reason="context_overflow", extra={"server_error": error})
                if response.status_code not in RETRY_STATUS and response.status_code < 500:
                    return Completion.failed(error, latency_ms)
                retry_after = response.headers.get("retry-after", "")
                if retry_after.isascii() and retry_after.replace(".", "", 1).isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
            if attempt < self.retries:
                await asyncio.sleep(delay)
        return Completion.failed(f"{error} (after {self.retries + 1} attempts)", (time.perf_counter() - start) * 1000)

    def _completion(self, response: Any, latency_ms: float, attempt: int) -> Completion | None:
        """The completion of a 200 answer; None when the body is not a chat completion (retried)."""
        try:
            data = response.json()
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or absurdly nested
            return None
        choices = data.get("choices") if isinstance(data, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        reply = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(reply, str):
            reply = {"content": reply}
        if not isinstance(reply, dict):
            return None
        message, parse_error = from_openai(_content_text(reply.get("content")), reply.get("tool_calls"))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        finish = choice.get("finish_reason")
        return Completion(message=message, prompt_tokens=_count(usage.get("prompt_tokens")),
                          completion_tokens=_count(usage.get("completion_tokens")), latency_ms=latency_ms,
                          parse_error=parse_error, finish_reason="length" if finish == "length" else "stop",
                          extra={"attempts": attempt + 1,
                                 "server_finish_reason": finish if isinstance(finish, str) else None})

    async def aclose(self) -> None:
        """Close the HTTP client (when it belongs to the running loop)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = self._semaphore = self._loop = None
