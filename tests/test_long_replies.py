"""A long agent reply no longer freezes a conversation.

The rule user found the agent's questions with `re.findall(r"[^.!?]*\\?", text)`, quadratic in the reply's
length (40,000 characters: 3 s; a 2 MB reply held an eval for minutes). Its question finder is one pass now, with
the same output; and a run bounds what one user turn may cost: the user simulator, rule or LLM, reads the first
`USER_READS` characters of each agent reply (search/josh.py), while the warehouse keeps the whole reply.
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.josh import USER_READS, user_view
from tests.conftest import check_consistent, query, run
from tests.fake_openai import FakeOpenAI, completion, read_json, send_json
from tests.test_user_rule import GOAL
from toolwoz.user_rule import QUESTION_CUES, RuleUser, _questions, asked_slots

MEGABYTE = 1_000_000
WORDS = ("which", "area", "price", "what time", "how many", "people", "day", "stay", "x", "İ", "ß", "\n", " ")


def old_questions(text: str) -> str:
    """The question finder as it was (quadratic): the reference for the new one."""
    return " ".join(re.findall(r"[^.!?]*\?", text.lower()))


sentences = st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(".!?")), max_size=40).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(alphabet=st.sampled_from("ab .!?\n\tİßΣ"), max_size=80), st.text(max_size=80), sentences))
def test_question_finder_equals_the_regex(text):
    assert _questions(text) == old_questions(text)
    assert asked_slots(text) == {slot for pattern, slot in QUESTION_CUES if re.search(pattern, old_questions(text))}


def test_a_megabyte_reply_is_read_in_one_pass():
    # The old finder would take about half an hour on this (quadratic: 40,000 characters took 3 s); the
    # suite's own run time is the check. Timings are printed, not asserted.
    start = time.perf_counter()
    assert asked_slots("x" * MEGABYTE) == set()
    assert asked_slots("x" * MEGABYTE + ". Which area would you like?") == {"area"}
    assert _questions("x" * MEGABYTE + "?") == "x" * MEGABYTE + "?"
    user = RuleUser(GOAL, seed=3)
    history = [{"role": "user", "content": user.reply([])},
               {"role": "assistant", "content": "I found 3 restaurants. " * (MEGABYTE // 23) + "Which area?"}]
    assert user.reply(history)
    print(f"1 MB replies, rule user: {time.perf_counter() - start:.2f} s")


def test_user_view_cuts_only_long_agent_replies():
    short = [{"role": "user", "content": "u" * (2 * USER_READS)}, {"role": "assistant", "content": "a" * USER_READS}]
    assert user_view(short) == short  # the user's own turns and replies up to the cap: as they are
    long = [{"role": "assistant", "content": "b" * USER_READS + "c"}]
    assert user_view(long) == [{"role": "assistant", "content": "b" * USER_READS}]
    assert long[0]["content"].endswith("c")  # the stored message keeps all of it


class LongReplyServer(FakeOpenAI):
    """An OpenAI-compatible server whose agent (model `agent`) answers every turn with a 1 MB text, and whose
    user (model `user`, for `--user llm`) asks for a hotel; it keeps the longest message a user request held."""

    models = ("agent", "user")
    # The reply's first USER_READS characters are small talk; its questions come after them.
    REPLY = (("Let me look into that. " * (USER_READS // 23 + 1) + "Which area and how many people? ") *
             (MEGABYTE // (USER_READS + 48))).rstrip()

    def __init__(self) -> None:
        super().__init__()
        self.longest_user_input = 0
        self.agent_requests = 0
        self.lock = threading.Lock()

    def post(self, handler: BaseHTTPRequestHandler) -> None:
        body = read_json(handler)
        with self.lock:
            if body["model"] == "user":
                text = "I'm looking for a cheap hotel in the north."
                longest = max(len(m["content"]) for m in body["messages"] if m["role"] != "system")
                self.longest_user_input = max(self.longest_user_input, longest)
            else:
                text = self.REPLY
                self.agent_requests += 1
        send_json(handler, 200, completion(text))


@pytest.mark.slow
def test_megabyte_replies_end_in_done_rollouts_and_the_user_reads_the_first_characters(wh):
    assert len(LongReplyServer.REPLY) > 0.9 * MEGABYTE
    with LongReplyServer() as server:
        common = ["--agent", "openai:agent", "--base-url", server.base_url, "--split", "val", "--limit", "2",
                  "--max-turns", "3", "-w", str(wh)]
        for user in (["--user", "rule"], ["--user", "llm", "--user-model", "openai:user", "--user-base-url",
                                          server.base_url]):
            result = run("eval", *common, *user, "--run", user[1])
            assert result.returncode == 0, result.stderr
    assert server.agent_requests >= 2 * 2 * 3
    # The LLM user's model saw each agent reply cut to USER_READS characters (plus its reminder), never 1 MB.
    assert USER_READS <= server.longest_user_input < USER_READS + 1000
    rows = query(wh, """select r.run_id, r.status, r.n_steps, count(*) filter (m.role = 'user'),
                               min(length(m.content)) filter (m.role = 'assistant')
                        from rollouts r join messages m using (rollout_id)
                        group by r.rollout_id, r.run_id, r.status, r.n_steps order by all""")
    assert [(run_id, status, steps) for run_id, status, steps, *_ in rows] == \
        [("llm", "done", 3)] * 2 + [("rule", "done", 3)] * 2
    for *_, user_turns, shortest_reply in rows:
        assert user_turns == 4  # the opening and a reply to each agent turn
        assert shortest_reply == len(LongReplyServer.REPLY)  # stored whole: a reply longer than USER_READS
    # each user reply after an agent turn records what it did not read of that turn's reply
    unread = query(wh, "select distinct unread_chars from messages where role = 'user' and unread_chars is not null")
    assert unread == [(len(LongReplyServer.REPLY) - USER_READS,)]
    assert query(wh, "select count(*) from messages where role = 'user' and unread_chars is not null") == [(4 * 3,)]
    check_consistent(wh)                                     # is one its user read in part
