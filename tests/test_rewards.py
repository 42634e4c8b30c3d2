"""Goal matching in both semantics (reference §3.5, §4) on hand-written tasks over real DB rows, and metrics."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolwoz.rewards import episode_reward, goal_met, goals_met
from toolwoz.tasks import Task
from toolwoz.tools import PARITY_INVALID, ErrorKind, ToolCall, ToolEnv

R_SEARCH, R_BOOK = ("restaurant", "search_restaurant"), ("restaurant", "book_restaurant")
T_SEARCH, T_BOOK = ("train", "search_train"), ("train", "book_train")
# Cheap italian restaurants in the centre: rows 0 "pizza hut city centre", 14 "ask restaurant", 61 "zizzi cambridge".
ITALIAN_CENTRE = {"food": "italian", "pricerange": "cheap", "name": "", "area": "centre"}
CAM_LKC_0900 = {"leaveAt": "09:00", "destination": "london kings cross", "day": "monday", "arriveBy": "",
                "departure": "cambridge"}
LKC_CAM = {"leaveAt": "", "destination": "cambridge", "day": "monday", "arriveBy": "",
           "departure": "london kings cross"}


def truth(domain: str, search: dict[str, str], book: dict[str, str] | None = None,
          fail_book: dict[str, str] | None = None) -> dict[str, Any]:
    uid = "trainID" if domain == "train" else "name"
    success: dict[str, Any] = {f"search_{domain}": {"parameters": search, "returns": []}}
    if book:
        success[f"book_{domain}"] = {"parameters": book, "returns": {uid: book[uid], "reference": "HAND0001"},
                                     "unique_id": book[uid]}
    failure = {f"book_{domain}": {"parameters": fail_book, "returns": []}} if fail_book else {}
    return {domain: {"success": success, "failure": failure, "requests": []}}


def task(task_id: str, ground_truth: dict[str, Any]) -> Task:
    return Task(task_id, "test", ["test"], list(ground_truth), {}, ground_truth)


RESTAURANT_BOOK = {"time": "9:15", "day": "friday", "people": "4", "name": "ask restaurant"}
HAND_TASKS = {t.task_id: t for t in [
    task("r_book", truth("restaurant", ITALIAN_CENTRE, RESTAURANT_BOOK,
                         {"time": "20:00", "day": "friday", "people": "4", "name": ""})),
    task("r_search", truth("restaurant", ITALIAN_CENTRE)),
    task("r_sock", truth("restaurant", ITALIAN_CENTRE, {**RESTAURANT_BOOK, "name": "the missing sock"})),
    task("t_time", truth("train", CAM_LKC_0900, {"people": "2", "trainID": "TR7075"})),
    task("t_lkc", truth("train", LKC_CAM, {"people": "2", "trainID": "TR5720"})),
    task("t_lkc_search", truth("train", LKC_CAM)),
    task("t_fixed", truth("train", {**CAM_LKC_0900, "leaveAt": "9:15"}, {"people": "2", "trainID": "TR1111"})),
]}


@pytest.fixture(scope="module")
def hand(con) -> ToolEnv:
    return ToolEnv(con, HAND_TASKS)


def parity(hand: ToolEnv, task_id: str, name: str, args: dict[str, Any]) -> ToolCall:
    return hand.call(name, args, task_id=task_id, semantics="parity")


def served(call: ToolCall, uid: str = "name") -> list[str]:
    return [row[uid] for row in call.result]


# -- parity: the serving rule (§3.5) and the search goal (§4.3) --------------------------------------------

def test_parity_all_goal_constraints_with_book_goal_serves_the_booked_row(hand) -> None:
    call = parity(hand, "r_book", "search_restaurant", {"food": "Italian", "pricerange": "cheap", "area": "centre"})
    assert served(call) == ["ask restaurant"] and call.n_rows == 3  # not the first row, pizza hut city centre
    assert goals_met(HAND_TASKS["r_book"], [call]) == [R_SEARCH]


def test_parity_all_goal_constraints_without_book_goal_serves_the_first_row(hand) -> None:
    call = parity(hand, "r_search", "search_restaurant", {"food": "italian", "pricerange": "cheap", "area": "centre"})
    assert served(call) == ["pizza hut city centre"]
    assert goals_met(HAND_TASKS["r_search"], [call]) == [R_SEARCH]


def test_parity_book_goal_outside_the_result_serves_a_goal_violating_row(hand) -> None:
    # Every row leaves after 09:00 (strict >), so none equals the goal's leaveAt: the last one is served.
    call = parity(hand, "t_time", "search_train", CAM_LKC_0900)
    assert served(call, "trainID") == ["TR1428"] and call.n_rows == 7
    t = HAND_TASKS["t_time"]
    assert goals_met(t, [call]) == []
    assert not goal_met(t, T_SEARCH, call)
    # Once the book goal is no longer open the unique-id rule is off and the same call counts.
    assert goals_met(t, [call], open_goals=[T_SEARCH]) == [T_SEARCH]


def test_parity_book_goal_outside_the_result_and_no_violating_row_serves_nothing(hand) -> None:
    call = parity(hand, "r_sock", "search_restaurant", {"food": "italian", "pricerange": "cheap", "area": "centre"})
    assert (call.ok, call.result, call.n_rows) == (True, [], 3)  # rows matched, none served
    assert goals_met(HAND_TASKS["r_sock"], [call]) == []


@pytest.mark.parametrize("task_id", ["r_book", "r_search"])
def test_parity_under_specified_search_serves_a_goal_violating_row(hand, mw, task_id) -> None:
    call = parity(hand, task_id, "search_restaurant", {"food": "italian"})
    assert served(call) == ["caffe uno"]  # the last italian row that is not cheap and central
    row = call.result[0]
    assert (row["area"], row["pricerange"]) != ("centre", "cheap")
    assert goals_met(HAND_TASKS[task_id], [call]) == []
    assert goals_met(HAND_TASKS[task_id], [call], open_goals=[R_SEARCH]) == []


def test_parity_under_specified_search_without_violating_row_serves_the_booked_row(hand) -> None:
    args = {"departure": "london kings cross", "day": "monday"}  # every such train goes to cambridge
    call = parity(hand, "t_lkc", "search_train", args)
    assert served(call, "trainID") == ["TR5720"] and call.n_rows == 10
    assert goals_met(HAND_TASKS["t_lkc"], [call]) == [T_SEARCH]
    plain = parity(hand, "t_lkc_search", "search_train", args)
    assert served(plain, "trainID") == ["TR0378"]
    assert goals_met(HAND_TASKS["t_lkc_search"], [plain]) == [T_SEARCH]  # G ⊆ the served row


def test_parity_neither_subset_serves_the_first_row(hand) -> None:
    call = parity(hand, "r_book", "search_restaurant", {"food": "italian", "area": "north"})
    assert served(call) == ["da vinci pizzeria"] and call.n_rows == 1
    assert goals_met(HAND_TASKS["r_book"], [call]) == []


def test_parity_empty_result(hand) -> None:
    call = parity(hand, "r_book", "search_restaurant", {"food": "martian"})
    assert (call.ok, call.result) == (True, [])
    assert goals_met(HAND_TASKS["r_book"], [call]) == []


def test_parity_domain_without_goal_serves_the_first_row(hand, mw) -> None:
    call = parity(hand, "r_search", "search_hotel", {"area": "east"})
    assert call.result == [next(r for r in mw.dbs["hotel"] if r["area"] == "east")]
    assert goals_met(HAND_TASKS["r_search"], [call]) == []


# -- parity: book (§3.6, §4.2) ------------------------------------------------------------------------------

def test_parity_book_succeeds_iff_goal_params_are_in_the_args(hand) -> None:
    t = HAND_TASKS["r_book"]
    good = parity(hand, "r_book", "book_restaurant", {**RESTAURANT_BOOK, "name": "Ask Restaurant"})
    assert good.result == {"success": True, "return": {"name": "ask restaurant", "reference": "HAND0001"}}
    assert goals_met(t, [good]) == [R_BOOK]
    short = parity(hand, "r_book", "book_restaurant", {**RESTAURANT_BOOK, "people": ""})
    assert short.result == {"success": False, "return": {}}
    assert goals_met(t, [short]) == []


def test_parity_book_credits_a_call_rejected_for_an_extra_argument(hand) -> None:
    args = {**RESTAURANT_BOOK, "foo": "1"}
    call = parity(hand, "r_book", "book_restaurant", args)
    assert (call.ok, call.content) == (False, PARITY_INVALID)
    assert goals_met(HAND_TASKS["r_book"], [call]) == [R_BOOK]  # reference §9.30
    fixed = hand.call("book_restaurant", args, task_id="r_book")
    assert fixed.error_kind == ErrorKind.UNKNOWN_ARGUMENT
    assert goals_met(HAND_TASKS["r_book"], [fixed]) == []


# -- fixed ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,met", [
    ({"food": "Italian", "pricerange": "cheap", "area": "centre"}, True),
    ({"food": "italian", "pricerange": "cheap", "area": "centre", "name": "Zizzi Cambridge"}, True),
    ({"food": "italian", "pricerange": "cheap"}, False),
    ({"food": "italian", "pricerange": "cheap", "area": "dontcare"}, False),
    ({"food": "italian", "pricerange": "cheap", "area": "centre", "name": "the missing sock"}, False),  # no rows
    ({"food": "italian", "pricerange": "cheap", "area": "centre", "type": "restaurant"}, False),  # rejected
])
def test_fixed_search_goal_needs_every_goal_constraint_and_rows(hand, args, met) -> None:
    call = hand.call("search_restaurant", args, task_id="r_book")
    assert goal_met(HAND_TASKS["r_book"], R_SEARCH, call) is met


@pytest.mark.parametrize("leave_at,met", [("09:15", True), ("9:15", True), ("09.15", True), ("09:00", False)])
def test_fixed_search_goal_compares_times_canonically(hand, leave_at, met) -> None:
    call = hand.call("search_train", {**CAM_LKC_0900, "leaveAt": leave_at}, task_id="t_fixed")
    assert call.ok and goal_met(HAND_TASKS["t_fixed"], T_SEARCH, call) is met


@pytest.mark.parametrize("args,met", [
    ({"name": "zizzi cambridge", "time": "09:15", "day": "Friday", "people": 4}, True),  # any entity meeting G
    ({"name": "ask restaurant", "time": "9:15", "day": "friday", "people": "4"}, True),
    ({"name": "ask restaurant", "time": "9:15", "day": "friday", "people": "5"}, False),  # wrong slots
    ({"name": "ask restaurant", "time": "10:15", "day": "friday", "people": "4"}, False),
    ({"name": "pizza hut cherry hinton", "time": "9:15", "day": "friday", "people": "4"}, False),  # misses G
    ({"name": "ask restaurant", "time": "20:00", "day": "friday", "people": "4"}, False),  # no availability
    ({"name": "ask restaurant", "time": "9:15", "day": "friday", "people": "4", "foo": "1"}, False),  # rejected
    ({"name": "ask restaurant", "time": "9:15", "people": "4"}, False),  # missing day
])
def test_fixed_book_goal_needs_a_successful_booking_of_a_goal_entity(hand, args, met) -> None:
    call = hand.call("book_restaurant", args, task_id="r_book")
    assert goal_met(HAND_TASKS["r_book"], R_BOOK, call) is met


def test_fixed_failed_booking_is_no_availability(hand) -> None:
    call = hand.call("book_restaurant", {"name": "ask restaurant", "time": "20:00", "day": "friday", "people": "4"},
                     task_id="r_book")
    assert call.error_kind == ErrorKind.NO_AVAILABILITY


@pytest.mark.parametrize("train_id,met", [("TR1111", True), ("TR6110", True), ("TR7409", False), ("TR0378", False)])
def test_fixed_train_booking_needs_a_row_meeting_the_goal(hand, train_id, met) -> None:
    call = hand.call("book_train", {"trainID": train_id, "people": "2"}, task_id="t_fixed")
    assert call.ok and goal_met(HAND_TASKS["t_fixed"], T_BOOK, call) is met


def test_a_call_for_another_task_never_counts(hand) -> None:
    call = hand.call("search_restaurant", {"food": "italian", "pricerange": "cheap", "area": "centre"},
                     task_id="r_search")
    assert goal_met(HAND_TASKS["r_search"], R_SEARCH, call)
    assert not goal_met(HAND_TASKS["r_book"], R_SEARCH, call)


# -- episode reward on real tasks ----------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.data())
def test_episode_reward_is_the_share_of_goals_met(env, data) -> None:
    t = env.tasks[data.draw(st.sampled_from(sorted(env.tasks)))]
    calls = []
    for domain, api in t.goals():
        params = dict(t.ground_truth[domain]["success"][api]["parameters"])
        for key in data.draw(st.sets(st.sampled_from(sorted(params)))) if params else ():
            params[key] = data.draw(st.sampled_from(["", "dontcare", "Monday", "9:00", params[key].upper()]))
        if data.draw(st.booleans()):
            sem = data.draw(st.sampled_from(["fixed", "parity"]))
            calls.append(env.call(api, params, task_id=t.task_id, semantics=sem))
    met = goals_met(t, calls)
    reward = episode_reward(t, calls)
    assert 0.0 <= reward <= 1.0
    assert set(met) <= set(t.goals()) and met == [g for g in t.goals() if g in met]
    assert math.isclose(reward, len(met) / t.n_goals) if t.n_goals else reward == 0.0
    for i in range(len(calls)):  # goals met by a prefix of the conversation stay met
        assert set(goals_met(t, calls[:i])) <= set(met)


def test_parity_credits_arguments_sent_as_json_text(env):
    """Agents send arguments as JSON text on the wire; parity rewards must read them all the same."""
    task = env.tasks["MUL0003.json"]
    goal = task.ground_truth["hotel"]["success"]["book_hotel"]["parameters"]
    call = env.call("book_hotel", json.dumps(goal), task_id=task.task_id, semantics="parity")
    assert call.arguments == goal
    assert ("hotel", "book_hotel") in goals_met(task, [call])
