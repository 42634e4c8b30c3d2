"""The rule-based teacher agent: lexicon NLU, purity, failure handling, and its reward with the rule user."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
from typing import Any

import pytest

import toolwoz.teacher as teacher_package
import toolwoz.user_rule as user_module
from toolwoz.rewards import episode_reward
from toolwoz.tasks import Task
from toolwoz.teacher import Teacher, phrases, policy, understanding
from toolwoz.tools import ToolCall, ToolEnv
from toolwoz.user_rule import END, RuleUser

MAX_USER_TURNS = 15
MAX_CALLS_PER_TURN = 3


@dataclasses.dataclass
class Episode:
    messages: list[dict[str, Any]]  # the agent's view (OpenAI format, with tool traffic)
    visible: list[dict[str, str]]  # the user's view (text turns only)
    calls: list[ToolCall]
    ended: bool
    reward: float


def run_episode(env: ToolEnv, task: Task, teacher: Teacher, user: RuleUser) -> Episode:
    """User speaks first; each agent turn is up to 3 teacher calls; tool calls run in `fixed` semantics."""
    messages: list[dict[str, Any]] = []
    visible: list[dict[str, str]] = []
    calls: list[ToolCall] = []
    ended = False
    for _ in range(MAX_USER_TURNS):
        text = user.reply(visible)
        visible.append({"role": "user", "content": text})
        messages.append({"role": "user", "content": text})
        if END in text:
            ended = True
            break
        for _ in range(MAX_CALLS_PER_TURN):
            message = teacher.next_message(messages)
            messages.append(message)
            if not message.get("tool_calls"):
                visible.append({"role": "assistant", "content": message["content"]})
                break
            (tool_call,) = message["tool_calls"]
            fn = tool_call["function"]
            call = env.call(fn["name"], json.loads(fn["arguments"]), task_id=task.task_id, semantics="fixed")
            calls.append(call)
            messages.append({"role": "tool", "tool_call_id": tool_call["id"], "content": call.content})
    return Episode(messages, visible, calls, ended, episode_reward(task, calls))


def split_ids(env: ToolEnv, split: str) -> list[str]:
    return sorted(t for t, task in env.tasks.items() if split in task.splits)


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _call_and_result(name: str, args: dict[str, str], result: Any, call_id: str = "call_0") -> list[dict[str, Any]]:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    content = result if isinstance(result, str) else json.dumps(result)
    return [{"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": content}]


# -- reading the user --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, domain, slots", [
    # (text, the domain it is attributed to, slots read); the active domain before it is the hotel
    ("I need a train from cambridge to london kings cross on friday, leaving after 09:15.", "train",
     {"departure": "cambridge", "destination": "london kings cross", "day": "friday", "leaveAt": "09:15"}),
    ("I'd like a train going to ely departing from norwich that arrives by 5:30 pm.", "train",
     {"departure": "norwich", "destination": "ely", "arriveBy": "17:30"}),
    ("Please book a table for 3 people on friday at 18:45.", "restaurant",
     {"people": "3", "day": "friday", "time": "18:45"}),
    ("I need somewhere to stay, a guesthouse in the north, cheap please, with 4 stars and free parking.", "hotel",
     {"type": "guesthouse", "area": "north", "pricerange": "cheap", "stars": "4", "parking": "yes"}),
    ("I need a place to stay called aylesbray lodge guest house.", "hotel", {"name": "aylesbray lodge guest house"}),
    ("Somewhere to stay that doesn't need to have free parking, with free wifi.", "hotel",
     {"parking": "no", "internet": "yes"}),
    ("I want a restaurant serving north american food in the center.", "restaurant",
     {"food": "north american", "area": "centre"}),
    ("I'm looking for an attraction called king's college.", "attraction", {"name": "kings college"}),
    ("Book it for two people for 3 nights starting on monday.", "hotel",
     {"people": "2", "stay": "3", "day": "monday"}),
])
def test_parse_reads_values_and_slot_cues(teacher, text, domain, slots):
    parse = teacher.parse(text, active="hotel")
    assert parse.domain == domain
    assert parse.slots == slots


def test_parse_dontcare_requests_and_booking_intent(teacher):
    parse = teacher.parse("Any type of food is fine. Could you give me the phone number and postcode?", "restaurant")
    assert "food" in parse.dontcare
    assert parse.requests == ["phone", "postcode"]
    assert not parse.book
    assert teacher.parse("No need to book, what is the address?", "hotel").book is False
    assert teacher.parse("I don't mind.", "hotel", asked={"area"}).dontcare == {"area"}
    assert teacher.parse("Please reserve it.", "restaurant").book


# -- acting --------------------------------------------------------------------------------------------------


def test_searches_with_the_constraints_given_then_presents(teacher):
    messages = [{"role": "system", "content": "be helpful"}, _user("I need a cheap restaurant in the north.")]
    out = teacher.next_message(messages)
    assert out["role"] == "assistant" and out["content"] == ""
    (call,) = out["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "search_restaurant"
    assert json.loads(call["function"]["arguments"]) == {"pricerange": "cheap", "area": "north"}
    row = {"name": "royal spice", "food": "indian", "pricerange": "cheap", "area": "north", "phone": "01733553355"}
    messages += _call_and_result("search_restaurant", {"pricerange": "cheap", "area": "north"}, [row])
    reply = teacher.next_message(messages)
    assert "tool_calls" not in reply and "royal spice" in reply["content"]


def test_is_a_pure_function_of_the_messages(teacher):
    messages = [_user("I need a train from cambridge to ely on monday.")]
    frozen = copy.deepcopy(messages)
    first = teacher.next_message(messages)
    assert teacher.next_message(messages) == first
    assert messages == frozen


def test_empty_search_says_so(teacher):
    args = {"food": "french", "pricerange": "moderate", "area": "centre"}
    messages = [_user("A moderate restaurant serving french food in the centre, please."),
                *_call_and_result("search_restaurant", args, [])]
    reply = teacher.next_message(messages)["content"]
    assert reply.startswith("Sorry, there is no restaurant") and "french" in reply and reply.endswith("?")


def test_books_the_offered_entity_and_reports_the_reference(teacher):
    row = {"name": "royal spice", "food": "indian", "pricerange": "cheap", "area": "north", "phone": "01733553355"}
    messages = [_user("A cheap restaurant in the north please."),
                *_call_and_result("search_restaurant", {"pricerange": "cheap", "area": "north"}, [row]),
                {"role": "assistant", "content": "royal spice is a cheap restaurant. Shall I book a table?"},
                _user("Please book a table for 2 people on friday. Could you also give me the phone number?")]
    assert "What time" in teacher.next_message(messages)["content"]
    messages[-1] = _user("Book a table for 2 people on friday at 18:45. Could you also give me the phone number?")
    out = teacher.next_message(messages)
    (call,) = out["tool_calls"]
    args = json.loads(call["function"]["arguments"])
    assert call["function"]["name"] == "book_restaurant"
    assert args == {"people": "2", "day": "friday", "time": "18:45", "name": "royal spice"}
    messages += _call_and_result("book_restaurant", args, {"success": True, "name": "royal spice",
                                                           "reference": "AB12CD34"}, call["id"])
    reply = teacher.next_message(messages)["content"]
    assert "AB12CD34" in reply and "01733553355" in reply


def test_no_availability_asks_for_another_day_or_time(teacher):
    row = {"name": "royal spice", "food": "indian", "pricerange": "cheap", "area": "north"}
    args = {"people": "6", "day": "wednesday", "time": "19:45", "name": "royal spice"}
    messages = [_user("A cheap restaurant in the north please."),
                *_call_and_result("search_restaurant", {"pricerange": "cheap", "area": "north"}, [row]),
                {"role": "assistant", "content": "Would you like me to book a table?"},
                _user("Book a table for 6 people on wednesday at 19:45."),
                *_call_and_result("book_restaurant", args, "Error: no availability for people 6, day wednesday, "
                                  "time 19:45; ask the customer for another option", "call_1")]
    reply = teacher.next_message(messages)["content"]
    assert "no availability" in reply and "another day or time" in reply
    messages += [{"role": "assistant", "content": reply}, _user("Then try at 18:45 instead.")]
    out = teacher.next_message(messages)
    assert json.loads(out["tool_calls"][0]["function"]["arguments"])["time"] == "18:45"


def test_at_most_two_tool_calls_per_turn(teacher):
    row = {"name": "royal spice", "food": "indian", "pricerange": "cheap", "area": "north"}
    messages = [_user("Book me a cheap restaurant in the north for 2 people on friday at 18:00."),
                *_call_and_result("search_restaurant", {"pricerange": "cheap", "area": "north"}, [row]),
                *_call_and_result("book_restaurant", {"name": "x"}, "Error: something odd", "call_1")]
    assert "tool_calls" not in teacher.next_message(messages)


# -- isolation -----------------------------------------------------------------------------------------------


def test_neither_simulator_can_reach_the_ground_truth():
    assert list(inspect.signature(RuleUser).parameters) == ["goal", "seed"]
    assert list(inspect.signature(Teacher.next_message).parameters) == ["self", "messages"]
    assert list(inspect.signature(Teacher.from_rows).parameters) == ["rows"]
    for module in (teacher_package, phrases, understanding, policy, user_module):
        source = inspect.getsource(module)
        assert "ground_truth" not in source and "toolwoz.tasks" not in source and "toolwoz.rewards" not in source


def test_conversations_do_not_depend_on_the_ground_truth(env, teacher):
    """Simulators built from tasks stripped of their ground truth hold identical conversations."""
    for task_id in split_ids(env, "val")[:15]:
        task = env.tasks[task_id]
        normal = run_episode(env, task, teacher, RuleUser(task.goal, seed=1))
        stripped = dataclasses.replace(copy.deepcopy(task), ground_truth={})
        blind = run_episode(env, task, Teacher.from_rows(copy.deepcopy(env.rows)), RuleUser(stripped.goal, seed=1))
        assert blind.messages == normal.messages


# -- reward with the rule user -------------------------------------------------------------------------------


@pytest.mark.parametrize("split, n", [("val", 100), ("test", 50)])
def test_teacher_with_rule_user_reaches_the_target(env, teacher, split, n):
    episodes = [run_episode(env, env.tasks[t], teacher, RuleUser(env.tasks[t].goal, seed=0))
                for t in split_ids(env, split)[:n]]
    assert len(episodes) == n
    assert all(e.ended for e in episodes)
    assert sum(e.reward for e in episodes) / len(episodes) >= 0.8


def test_teacher_backend_explores_only_when_sampling(env):
    import asyncio
    import random

    from search.backends.base import Request, SamplingParams
    from search.backends.teacher import TeacherBackend, perturb

    backend = TeacherBackend(env.rows)
    messages = [{"role": "system", "content": "x"},
                {"role": "user", "content": "I need a train from cambridge to ely on friday, leaving after 17:00."}]
    greedy = {json.dumps(asyncio.run(backend.complete(Request(messages, None, SamplingParams(0.0, seed=s)))).message)
              for s in range(30)}
    sampled = {json.dumps(asyncio.run(backend.complete(Request(messages, None, SamplingParams(1.0, seed=s)))).message)
               for s in range(30)}
    assert len(greedy) == 1 and len(sampled) > 1
    call = {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {
        "name": "book_hotel", "arguments": json.dumps({"name": "acorn guest house", "people": "2", "day": "monday",
                                                       "stay": "3"})}}]}
    changed = perturb(call, random.Random(1))
    assert changed != call and changed["tool_calls"][0]["function"]["name"] == "book_hotel"
    assert perturb(call, random.Random(1)) == changed  # deterministic per seed
