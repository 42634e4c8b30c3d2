"""A fake OpenAI-compatible server for the tests: http.server on 127.0.0.1 (a free port), in a thread.

A subclass of `FakeOpenAI` answers each chat completion in `post(handler)`; `GET /v1/models` lists `models`.
`with Server() as server:` serves until the block ends, at `server.base_url`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class FakeOpenAI:
    """The server's plumbing; subclasses say how a POST is answered."""

    models: tuple[str, ...] = ("fake",)

    def __init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                send_json(self, 200, {"data": [{"id": model} for model in fake.models]})

            def do_POST(self) -> None:
                fake.post(self)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def post(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one POST (a chat completion) on `handler`."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


def read_json(handler: BaseHTTPRequestHandler) -> Any:
    """The request's JSON body."""
    return json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))


def send_headers(handler: BaseHTTPRequestHandler, status: int, length: int) -> None:
    """The status line and the headers of a JSON answer of `length` bytes."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(length))
    handler.end_headers()


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    """Answer `body` (JSON-encoded, or bytes as they are); a client that already hung up is not an error here."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        send_headers(handler, status, len(payload))
        handler.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):  # e.g. the client's timeout ran out first
        pass


def completion(content: str) -> dict[str, Any]:
    """A chat completion whose assistant message is `content`."""
    return {"object": "chat.completion", "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}
