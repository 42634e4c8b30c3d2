"""`--request-timeout` is a deadline for the whole request, not for each read.

A server that sends its answer one byte every half second never trips a per-read timeout of 1 s, and used to
hold each request until its last byte (a 2 s drip held requests for 40 s under `--request-timeout 5`). Now
the request is cut at the deadline, retried with backoff like any timeout, and the rollout ends `failed` with
the error; the server sees every attempt disconnected long before its answer was complete.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from tests.conftest import check_consistent, query, run
from tests.fake_openai import FakeOpenAI, completion, read_json, send_headers

DRIP_S = 0.5  # one byte of the answer every DRIP_S seconds


class DripServer(FakeOpenAI):
    """A chat completion (valid, had it arrived) whose body is sent one byte at a time. It records, per
    request, how many body bytes went out before the client hung up."""

    def __init__(self) -> None:
        super().__init__()
        # ~240 bytes: two minutes of dripping
        self.payload = json.dumps(completion("I found a hotel for you. " * 4)).encode()
        self.started = 0
        self.sent_before_hangup: list[int] = []  # one entry per request the client cut
        self.completed = 0  # requests whose whole answer went out
        self.ended = threading.Condition()
        self.stop = threading.Event()

    def post(self, handler: BaseHTTPRequestHandler) -> None:
        read_json(handler)
        with self.ended:
            self.started += 1
        sent = 0
        try:
            send_headers(handler, 200, len(self.payload))
            handler.wfile.flush()
            for byte in self.payload:
                if self.stop.wait(DRIP_S):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            with self.ended:
                self.sent_before_hangup.append(sent)
                self.ended.notify_all()
            handler.close_connection = True
            return
        with self.ended:
            self.completed += 1
            self.ended.notify_all()

    def wait_until_every_request_ended(self, timeout: float) -> bool:
        with self.ended:
            return self.ended.wait_for(lambda: len(self.sent_before_hangup) + self.completed == self.started,
                                       timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        super().__exit__(*exc)


@pytest.mark.slow
def test_a_dripping_server_is_cut_at_the_deadline(wh):
    with DripServer() as server:
        result = run("eval", "--agent", "openai:fake", "--base-url", server.base_url, "--request-timeout", "1",
                     "--split", "val", "--limit", "1", "--max-turns", "1", "-w", str(wh), "--json")
        # The exit status of a run with failed rollouts is another test's business (0 or 1); no crash here.
        assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
        # The client's disconnects reach the server at its next write (half a second later): wait for them.
        assert server.wait_until_every_request_ended(timeout=60)
    assert query(wh, "select status, error from rollouts") == \
        [("failed", "TimeoutError: no complete response within 1 s (after 4 attempts)")]
    assert server.started == 4 and server.completed == 0  # the first try and 3 retries, each cut
    # Cut at the deadline: a few bytes of each answer had gone out, never more than a small part of it.
    assert all(sent < len(server.payload) // 4 for sent in server.sent_before_hangup), server.sent_before_hangup
    check_consistent(wh)
