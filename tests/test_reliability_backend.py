"""Reliability: a faulty OpenAI-compatible server on 127.0.0.1 (http.server in a thread).

It injects 500s, hangs (longer than --request-timeout), dropped connections, non-JSON 200 bodies and 200s
without `choices` at a known rate, answers some requests in odd but usable shapes (a `message` that is a
string, `usage` that is a list, token counts that are not numbers) and with broken Unicode (lone surrogates in
content and in tool-call arguments, superscript digits), and fails every request of some conversations for
good. After the eval, every rollout is accounted for: done, or failed with its error; `eval_summary.failed`
counts them; re-running the same command against the healed server completes the failed ones, nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.conftest import check_consistent, query, run
from tests.fake_openai import FakeOpenAI, completion, read_json, send_json

FAULTS = ("500", "hang", "drop", "not_json", "no_choices")
ODD = ("message_string", "usage_list", "tokens_text", "surrogates", "parts")
FAULT_RATE = 0.3  # share of requests answered with one of FAULTS (by a hash of the request: reproducible)


class FaultyServer(FakeOpenAI):
    """Chat completions that greet, call search_hotel, or fail, decided by a hash of each request."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.poisoned: set[str] = set()  # first user messages whose conversations fail every request
        self.seen: Counter[bytes] = Counter()  # a fault hits a request's first attempt only: retries can succeed
        self.healed = False
        self.lock = threading.Lock()

    def post(self, handler: BaseHTTPRequestHandler) -> None:
        kind, payload = self.answer(read_json(handler))
        with self.lock:
            self.counts[kind] += 1
        if kind == "hang":  # no answer until the client's --request-timeout runs out and it hangs up
            handler.connection.settimeout(120)  # (a backstop for a client that never hangs up)
            try:
                handler.rfile.read(1)  # b"" once the client has closed the connection
            except TimeoutError:
                pass
            handler.close_connection = True
            return None
        if kind == "drop":
            handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            return None
        send_json(handler, 500 if kind in ("500", "poisoned") else 200, payload)

    def answer(self, body: dict[str, Any]) -> tuple[str, bytes]:
        messages = body["messages"]
        first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
        digest = hashlib.sha256(json.dumps([messages, body.get("seed")]).encode()).digest()
        roll = digest[0] / 256
        with self.lock:
            self.seen[digest] += 1
            first_attempt = self.seen[digest] == 1
        if not self.healed and hashlib.sha256(first_user.encode()).digest()[0] % 4 == 0:
            self.poisoned.add(first_user)
            return "poisoned", b'{"error": "down for this conversation"}'
        if not self.healed and first_attempt and roll < FAULT_RATE:
            kind = FAULTS[digest[1] % len(FAULTS)]
            payload = {"not_json": b"<html>502 Bad Gateway</html>", "no_choices": b'{"object": "chat.completion"}'}
            return kind, payload.get(kind, b'{"error": "injected"}')
        odd = ODD[digest[2] % len(ODD)] if digest[3] % 2 else "plain"
        n_turns = sum(m["role"] == "assistant" for m in messages)
        if n_turns % 2 == 0:
            arguments = json.dumps({"name": "\ud800 house", "stars": "\u00b2"}) if odd == "surrogates" \
                else json.dumps({"area": "north"})
            message: Any = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "search_hotel", "arguments": arguments}}]}
        else:
            message = {"role": "assistant", "content": "I found some hotels \ud83d for you." if odd == "surrogates"
                       else "I found some hotels for you."}
        usage: Any = {"prompt_tokens": 10, "completion_tokens": 5}
        if odd == "message_string":
            message = "Here is a hotel: acorn guest house."
        elif odd == "parts":
            message = {"role": "assistant", "content": [{"type": "text", "text": "Any area is fine?"}]}
        elif odd == "usage_list":
            usage = [10, 5]
        elif odd == "tokens_text":
            usage = {"prompt_tokens": "ten", "completion_tokens": None}
        reply = {"id": "x", "object": "chat.completion", "usage": usage,
                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        return odd, json.dumps(reply).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes


@pytest.mark.slow
def test_every_rollout_is_done_or_failed_with_its_error_and_a_rerun_completes_them(wh) -> None:
    with FaultyServer() as server:
        args = ["eval", "--agent", "openai:fake", "--base-url", server.base_url, "--request-timeout", "1",
                "--split", "val", "--limit", "16", "--max-turns", "3", "--concurrency", "8", "-w", str(wh), "--json"]
        first = run(*args)
        # Everything committed, the JSON printed, then exit 1: a script or CI sees that rollouts failed.
        assert first.returncode == 1, first.stderr
        summary = json.loads(first.stdout)
        rows = query(wh, "select status, error, end_reason from rollouts")
        assert len(rows) == 16 == summary["rollouts"]
        failed = [r for r in rows if r[0] == "failed"]
        assert all(r[0] in ("done", "failed") for r in rows)
        assert all(error and "attempts" in error for _, error, _ in failed)  # why, after the retries
        assert len(failed) == summary["failed"] >= len(server.poisoned) > 0
        assert query(wh, "select failed from eval_summary") == [(len(failed),)]
        assert f"{len(failed)} rollouts failed on backend or user errors" in " ".join(first.stderr.split())
        assert "Error:" not in first.stderr and "Traceback" not in first.stderr
        assert set(FAULTS) <= set(server.counts) and {"message_string", "surrogates"} <= set(server.counts)
        # Broken Unicode was stored (as U+FFFD), the odd shapes read leniently.
        assert query(wh, "select count(*) > 0 from messages where content like '%\ufffd%'") == [(True,)]
        assert query(wh, "select count(*) > 0 from tool_calls where error_kind = 'bad_value'") == [(True,)]
        assert query(wh, "select count(*) > 0 from messages where content = 'Any area is fine?'") == [(True,)]
        check_consistent(wh)

        server.healed = True
        second = run(*args)
        assert second.returncode == 0, second.stderr  # the failed ones re-run successfully: nothing failed now
        assert f"{len(failed)} failed ones to run again" in " ".join(second.stderr.split())
        healed = json.loads(second.stdout)
        assert healed["rollouts"] == 16 and healed["failed"] == 0 and healed["new_rollouts"] == len(failed)
        assert query(wh, "select count(*), count(distinct task_id), count(*) filter (status = 'done') "
                         "from rollouts") == [(16, 16, 16)]
        assert query(wh, "select status from runs") == [("done",)]
        check_consistent(wh)
        print(f"faulty server: {sum(server.counts.values())} requests, {dict(server.counts)}; "
              f"{len(failed)} of 16 rollouts failed, all completed on the re-run")


def test_malformed_200_bodies_are_retried_and_odd_shapes_read(tmp_path) -> None:
    import asyncio

    from search.backends.base import Request
    from search.backends.openai import OpenAIBackend

    with FaultyServer() as server:
        backend = OpenAIBackend("fake", server.base_url, timeout_s=1, backoff_s=0.01)

        async def ask(n: int) -> list[Any]:
            try:
                return await asyncio.gather(*(backend.complete(Request([{"role": "user", "content": f"hi {i}"}]))
                                              for i in range(n)))
            finally:
                await backend.aclose()

        results = asyncio.run(ask(40))
    for c in results:
        assert c.error is None or "attempts" in c.error
        assert isinstance(c.message.get("content"), str)
        assert isinstance(c.prompt_tokens, int) and isinstance(c.completion_tokens, int)
    assert sum(c.error is None for c in results) > 20


class RateLimited(FakeOpenAI):
    """An OpenAI-compatible server that answers every chat completion 429 until `healed`, then a plain reply."""

    def __init__(self) -> None:
        super().__init__()
        self.healed = False
        self.requests = 0

    def post(self, handler: BaseHTTPRequestHandler) -> None:
        read_json(handler)
        self.requests += 1
        if self.healed:
            send_json(handler, 200, completion("I found some hotels for you."))
        else:
            send_json(handler, 429, {"error": "rate limited"})


@pytest.mark.slow
def test_a_harvest_whose_rollouts_failed_commits_them_prints_its_summary_and_exits_1(wh) -> None:
    with RateLimited() as server:
        args = ["harvest", "--agent", "openai:fake", "--base-url", server.base_url, "--request-timeout", "1",
                "--split", "val_harvest", "--limit", "2", "--beam", "2", "--max-turns", "2", "-w", str(wh)]
        first = run(*args)
        assert first.returncode == 1, first.stderr
        stderr = " ".join(first.stderr.split())
        assert "2 rollouts failed on backend or user errors (rollouts.error says why); run the same command again " \
               "to retry them" in stderr
        assert "Error:" not in stderr and "Traceback" not in stderr
        assert ": 2 rollouts on val_harvest" in first.stdout and "datasets: factory sql" in first.stdout
        rows = query(wh, "select status, error from rollouts")
        assert len(rows) == 2 and all(s == "failed" and "429" in e and "attempts" in e for s, e in rows)
        assert query(wh, "select status from runs") == [("done",)]  # the run ended; its rollouts did not
        check_consistent(wh)

        server.healed = True
        second = run(*args)
        assert second.returncode == 0, second.stderr  # the failed ones re-ran and are done: exit 0
        assert "rollouts failed" not in second.stderr
        assert query(wh, "select count(*), count(*) filter (status = 'done') from rollouts") == [(2, 2)]
        third = run(*args)  # nothing left to run, nothing failed
        assert third.returncode == 0 and "nothing left to run" in " ".join(third.stderr.split()), third.stderr
        check_consistent(wh)
