"""τ-bench's airline tools (`taubench/airline.py`) through `TauEnv`: every gold sequence scores 1.0, perturbed
sequences score what τ-bench's reward rule gives them, sibling branches never see each other's writes, and
observations match literals worked out by hand from τ-bench's tool code and the airline JSON.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taubench import state
from taubench.env import TauEnv
from taubench.replay import replay
from taubench.state import Branch

N_TASKS = 50


def gold(env: TauEnv, index: int) -> list[dict[str, Any]]:
    """The task's gold actions, then one agent message saying its outputs (when it has any)."""
    task = env.tasks[f"airline/test/{index}"]
    actions = [a.to_dict() for a in task.actions]
    if task.outputs:
        actions.append({"name": "respond", "kwargs": {"content": "Here you go: " + ", ".join(task.outputs)}})
    return copy.deepcopy(actions)


def reward(env: TauEnv, index: int, actions: list[dict[str, Any]]) -> float:
    return replay(env, env.tasks[f"airline/test/{index}"], actions).reward.reward


@pytest.mark.parametrize("index", range(N_TASKS))
def test_gold_actions_score_one(airline: TauEnv, index: int) -> None:
    result = replay(airline, airline.tasks[f"airline/test/{index}"], gold(airline, index))
    assert result.reward.reward == 1.0, result.reward
    assert not [o for o in result.observations if o.startswith("Error")]


def _drop(actions: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [a for a in actions if a["name"] != name]


def _repeat(actions: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    i = max(j for j, a in enumerate(actions) if a["name"] == name)
    return actions[:i + 1] + [copy.deepcopy(actions[i])] + actions[i + 1:]


def _swap(actions: list[dict[str, Any]], i: int, j: int) -> list[dict[str, Any]]:
    out = list(actions)
    out[i], out[j] = out[j], out[i]
    return out


def _set(actions: list[dict[str, Any]], i: int, **kwargs: Any) -> list[dict[str, Any]]:
    out = copy.deepcopy(actions)
    out[i]["kwargs"].update(kwargs)
    return out


# (task index, perturbation of its gold sequence, τ-bench's reward, why)
PERTURBED = {
    "dropped cancel": (1, lambda a: _drop(a, "cancel_reservation"), 0.0,
                       "Z7GOZK stays active; gold has it cancelled with a refund line"),
    "dropped read": (14, lambda a: _drop(a, "get_reservation_details"), 1.0,
                     "reads change nothing and τ-bench compares only the database"),
    "repeated cancel": (1, lambda a: _repeat(a, "cancel_reservation"), 0.0,
                        "the second cancel appends refunds again (of the refund too)"),
    "repeated certificate": (16, lambda a: _repeat(a, "send_certificate"), 0.0,
                             "the second call adds certificate_3221323 beside certificate_3221322"),
    "repeated booking": (0, lambda a: _repeat(a, "book_reservation"), 1.0,
                         "the first booking spent certificate_7504069, so the second fails and writes nothing"),
    "repeated baggage update": (19, lambda a: _repeat(a, "update_reservation_baggages"), 1.0,
                                "no bag is added the second time: nothing charged, same counts"),
    "repeated passengers": (43, lambda a: _repeat(a, "update_reservation_passengers"), 1.0,
                            "setting the same passengers again changes nothing"),
    "changed cancel id": (1, lambda a: _set(a, 0, reservation_id="4WQ150"), 0.0,
                          "another reservation is cancelled and Z7GOZK is not"),
    "changed insurance": (0, lambda a: _set(a, 0, insurance="yes"), 0.0,
                          "insurance adds 30, the payments no longer add up, nothing is booked"),
    "changed read id": (39, lambda a: _set(a, 0, reservation_id="4WQ150"), 1.0, "a read changes nothing"),
    "swapped bookings": (9, lambda a: _swap(a, 2, 3), 0.0,
                         "the bookings get each other's ids (HATHAU and HATHAV)"),
    "swapped flights and bags": (19, lambda a: _swap(a, 1, 2), 0.0,
                                 "the bag fee and the fare difference land in payment_history in the other order"),
    "swapped cancels": (28, lambda a: _swap(a, 8, 9), 1.0, "cancelling two different reservations commutes"),
    "outputs not said": (8, lambda a: _drop(a, "respond"), 0.0,
                         "the database matches but the task's outputs are never said"),
    "transfer ends it": (13, lambda a: a + [{"name": "cancel_reservation", "kwargs": {"reservation_id": "4WQ150"}}],
                         1.0, "transfer_to_human_agents ends the episode: the later cancel never runs"),
}


@pytest.mark.parametrize("case", sorted(PERTURBED))
def test_perturbed_sequences_score_as_tau_bench(airline: TauEnv, case: str) -> None:
    index, perturb, expected, why = PERTURBED[case]
    assert reward(airline, index, perturb(gold(airline, index))) == expected, why


def test_outputs_match_without_commas_and_case(airline: TauEnv) -> None:
    actions = _drop(gold(airline, 2), "respond")
    assert reward(airline, 2, actions + [{"name": "respond", "kwargs": {"content": "The total is 23,553."}}]) == 1.0
    assert reward(airline, 2, actions + [{"name": "respond", "kwargs": {"content": "The total is 23 553."}}]) == 0.0


BOOKING = {  # task 0's gold booking
    "user_id": "mia_li_3668", "origin": "JFK", "destination": "SEA", "flight_type": "one_way", "cabin": "economy",
    "flights": [{"flight_number": "HAT136", "date": "2024-05-20"}, {"flight_number": "HAT039", "date": "2024-05-20"}],
    "passengers": [{"first_name": "Mia", "last_name": "Li", "dob": "1990-04-05"}],
    "payment_methods": [{"payment_id": "certificate_7504069", "amount": 250},
                        {"payment_id": "credit_card_4421486", "amount": 5}],
    "total_baggages": 3, "nonfree_baggages": 0, "insurance": "no"}
# From book_reservation.py: the flights get price (economy on 2024-05-20: 152 and 103), origin and destination
# appended to the agent's dicts; the payments become the payment history as given.
BOOKED = (
    '{"reservation_id": "HATHAT", "user_id": "mia_li_3668", "origin": "JFK", "destination": "SEA", '
    '"flight_type": "one_way", "cabin": "economy", "flights": [{"flight_number": "HAT136", "date": "2024-05-20", '
    '"price": 152, "origin": "JFK", "destination": "ATL"}, {"flight_number": "HAT039", "date": "2024-05-20", '
    '"price": 103, "origin": "ATL", "destination": "SEA"}], "passengers": [{"first_name": "Mia", "last_name": "Li", '
    '"dob": "1990-04-05"}], "payment_history": [{"payment_id": "certificate_7504069", "amount": 250}, '
    '{"payment_id": "credit_card_4421486", "amount": 5}], "created_at": "2024-05-15T15:00:00", '
    '"total_baggages": 3, "nonfree_baggages": 0, "insurance": "no"}')
# From cancel_reservation.py: a negated copy of each payment appended, then "status" added last (the gift card
# itself is not refunded).
CANCELLED = (
    '{"reservation_id": "Z7GOZK", "user_id": "olivia_gonzalez_2305", "origin": "EWR", "destination": "EWR", '
    '"flight_type": "one_way", "cabin": "basic_economy", "flights": [{"origin": "EWR", "destination": "IAH", '
    '"flight_number": "HAT188", "date": "2024-05-28", "price": 52}, {"origin": "IAH", "destination": "EWR", '
    '"flight_number": "HAT207", "date": "2024-05-28", "price": 87}], "passengers": [{"first_name": "Olivia", '
    '"last_name": "Gonzalez", "dob": "1988-06-13"}], "payment_history": [{"payment_id": "gift_card_2200803", '
    '"amount": 169}, {"payment_id": "gift_card_2200803", "amount": -169}], "created_at": "2024-05-13T19:41:32", '
    '"total_baggages": 0, "nonfree_baggages": 0, "insurance": "yes", "status": "cancelled"}')
DIRECT_JFK_SEA_0520 = (
    '[{"flight_number": "HAT069", "origin": "JFK", "destination": "SEA", "scheduled_departure_time_est": "06:00:00", '
    '"scheduled_arrival_time_est": "12:00:00", "status": "available", "available_seats": {"basic_economy": 17, '
    '"economy": 12, "business": 3}, "prices": {"basic_economy": 51, "economy": 121, "business": 239}}, '
    '{"flight_number": "HAT083", "origin": "JFK", "destination": "SEA", "scheduled_departure_time_est": "01:00:00", '
    '"scheduled_arrival_time_est": "07:00:00", "status": "available", "available_seats": {"basic_economy": 16, '
    '"economy": 7, "business": 3}, "prices": {"basic_economy": 87, "economy": 100, "business": 276}}]')
AIRPORTS = (
    '{"SFO": "San Francisco", "JFK": "New York", "LAX": "Los Angeles", "ORD": "Chicago", "DFW": "Dallas", '
    '"DEN": "Denver", "SEA": "Seattle", "ATL": "Atlanta", "MIA": "Miami", "BOS": "Boston", "PHX": "Phoenix", '
    '"IAH": "Houston", "LAS": "Las Vegas", "MCO": "Orlando", "EWR": "Newark", "CLT": "Charlotte", '
    '"MSP": "Minneapolis", "DTW": "Detroit", "PHL": "Philadelphia", "LGA": "LaGuardia"}')


def test_observations_checked_by_hand(airline: TauEnv) -> None:
    branch = Branch("hand", (0,))

    def say(name: str, **kwargs: Any) -> str:
        return airline.call(name, kwargs, branch=branch).content

    assert say("book_reservation", **{**copy.deepcopy(BOOKING), "insurance": "yes"}) == (
        "Error: payment amount does not add up, total price is 285, but paid 255")  # 30 per passenger
    assert say("book_reservation", **copy.deepcopy(BOOKING)) == BOOKED
    user = airline.read(branch, "users", "mia_li_3668")
    assert "certificate_7504069" not in user["payment_methods"]  # a certificate is used up
    assert user["reservations"] == ["NO6JO3", "AIXC49", "HKEG34", "HATHAT"]
    assert say("get_reservation_details", reservation_id="HATHAT") == BOOKED
    assert say("cancel_reservation", reservation_id="Z7GOZK") == CANCELLED
    assert say("get_reservation_details", reservation_id="NOPE00") == "Error: user not found"  # sic
    assert say("cancel_reservation", reservation_id="NOPE00") == "Error: reservation not found"
    assert say("search_direct_flight", origin="JFK", destination="SEA", date="2024-05-20") == DIRECT_JFK_SEA_0520
    assert say("search_direct_flight", origin="JFK", destination="SEA", date="2024-05-01") == "[]"  # landed
    assert say("list_all_airports") == AIRPORTS
    assert say("send_certificate", user_id="ethan_martin_2396", amount=150) == (
        "Certificate certificate_3221322 added to user ethan_martin_2396 with amount 150.")
    assert say("send_certificate", user_id="ethan_martin_2396", amount=150) == (
        "Certificate certificate_3221323 added to user ethan_martin_2396 with amount 150.")
    assert say("calculate", expression="2 * ((350 - 122) + (499 - 127))") == "1200.0"
    assert say("calculate", expression="10 / 3") == "3.33"
    assert say("calculate", expression="1 / 0") == "Error: division by zero"
    assert say("calculate", expression="2 + x") == "Error: invalid characters in expression"
    assert say("calculate", expression="9 ** 9 ** 9") == "Error: int too large to convert to float"  # not computed
    assert say("think", thought="hmm") == ""
    assert say("transfer_to_human_agents", summary="help") == "Transfer successful"
    assert say("update_reservation_passengers", reservation_id="3RK2T9",
               passengers=[{"first_name": "A", "last_name": "B", "dob": "2000-01-01"}]) == (
        "Error: number of passengers does not match")
    assert say("update_reservation_baggages", reservation_id="3RK2T9", total_baggages=1, nonfree_baggages=1,
               payment_id="certificate_4856383") == "Error: payment method not found"  # not this user's


def test_onestop_search_keeps_tau_bench_quirks(airline: TauEnv) -> None:
    """HAT002 (LGA-PHX) lands "+1", so its connection HAT045 (PHX-SEA) is the next day, 2024-05-17, but
    τ-bench shows HAT045's status, seats and prices of 2024-05-16 (economy 100; on 05-17 it is 137)."""
    pairs = json.loads(airline.call("search_onestop_flight", {"origin": "LGA", "destination": "SEA",
                                                          "date": "2024-05-16"}, branch=Branch("one", (0,))).content)
    pair = [p for p in pairs if (p[0]["flight_number"], p[1]["flight_number"]) == ("HAT002", "HAT045")]
    assert json.dumps(pair[0][1]) == (
        '{"flight_number": "HAT045", "origin": "PHX", "destination": "SEA", "scheduled_departure_time_est": '
        '"23:00:00", "scheduled_arrival_time_est": "02:00:00+1", "status": "available", "available_seats": '
        '{"basic_economy": 7, "economy": 6, "business": 9}, "prices": {"basic_economy": 87, "economy": 100, '
        '"business": 243}, "date": "2024-05-17"}')
    assert pair[0][0]["date"] == "2024-05-16" and list(pair[0][0])[-1] == "date"
    assert all(p[0]["destination"] == p[1]["origin"] for p in pairs) and len(pairs) > 1
    # τ-bench computes the next day with int(date[-2:]) only on meeting a "+1" first leg
    assert airline.call("search_onestop_flight", {"origin": "LGA", "destination": "SEA", "date": "tomorrow"},
                    branch=Branch("one", (0,))).content == "Error: invalid literal for int() with base 10: 'ow'"


DOWNGRADED = (  # 84BUUS: economy at 135 + 137 for 2 passengers (544 paid), basic economy on 2024-05-22 is 85 + 77
    '{"reservation_id": "84BUUS", "user_id": "sophia_johansson_8142", "origin": "DTW", "destination": "EWR", '
    '"flight_type": "one_way", "cabin": "economy", "flights": [{"flight_number": "HAT191", "date": "2024-05-22", '
    '"price": 85, "origin": "DTW", "destination": "CLT"}, {"flight_number": "HAT157", "date": "2024-05-22", '
    '"price": 77, "origin": "CLT", "destination": "EWR"}], "passengers": [{"first_name": "Sophia", '
    '"last_name": "Johansson", "dob": "1955-09-09"}, {"first_name": "Ava", "last_name": "Khan", '
    '"dob": "1970-06-18"}], "payment_history": [{"payment_id": "gift_card_4044343", "amount": 544}, '
    '{"payment_id": "gift_card_4044343", "amount": -220}], "created_at": "2024-05-11T04:48:59", '
    '"total_baggages": 1, "nonfree_baggages": 0, "insurance": "no"}')


def test_update_flights_as_tau_bench_prices_it(airline: TauEnv) -> None:
    """From update_reservation_flights.py: a new cabin re-prices every flight but `cabin` itself is not changed;
    the difference (here -220) goes onto the gift card; in the same cabin a kept flight keeps its stored price."""
    flights = [{"flight_number": "HAT191", "date": "2024-05-22"}, {"flight_number": "HAT157", "date": "2024-05-22"}]
    branch = Branch("downgrade", (0,))
    call = airline.call("update_reservation_flights", {"reservation_id": "84BUUS", "cabin": "basic_economy",
                                                   "flights": flights, "payment_id": "gift_card_4044343"},
                    branch=branch)
    assert call.content == DOWNGRADED
    assert airline.read(branch, "users", "sophia_johansson_8142")["payment_methods"]["gift_card_4044343"] == {
        "source": "gift_card", "amount": 396, "id": "gift_card_4044343"}  # 176 + 220
    assert {(w["tbl"], w["key"]) for w in call.writes} == {("reservations", "84BUUS"),
                                                           ("users", "sophia_johansson_8142")}
    same = json.loads(airline.call("update_reservation_flights", {
        "reservation_id": "84BUUS", "cabin": "economy", "flights": flights, "payment_id": "gift_card_4044343"},
        branch=Branch("same", (0,))).content)
    assert [(f["price"], list(f)) for f in same["flights"]] == [  # economy is 134 and 199 now
        (p, ["flight_number", "date", "price", "origin", "destination"]) for p in (135, 137)]
    assert same["payment_history"] == [{"payment_id": "gift_card_4044343", "amount": 544}]  # nothing charged
    upgrade = {"reservation_id": "3RK2T9", "cabin": "economy", "flights": [
        {"flight_number": "HAT214", "date": "2024-05-19"}, {"flight_number": "HAT009", "date": "2024-05-20"}]}
    assert airline.call("update_reservation_flights", {**upgrade, "payment_id": "gift_card_2550356"},
                    branch=branch).content == "Error: gift card balance is not enough"  # 414 > 149
    assert airline.call("update_reservation_flights", {**upgrade, "payment_id": "certificate_7583008"},
                    branch=branch).content == "Error: certificate cannot be used to update reservation"


def test_bad_calls_are_tau_bench_errors_and_write_nothing(airline: TauEnv) -> None:
    branch = Branch("bad", (0,))
    no_insurance = {k: v for k, v in BOOKING.items() if k != "insurance"}
    cases = [
        ("book_reservation", no_insurance,
         "Error: BookReservation.invoke() missing 1 required positional argument: 'insurance'"),
        ("get_user_details", {"user_id": "mia_li_3668", "verbose": True},
         "Error: GetUserDetails.invoke() got an unexpected keyword argument 'verbose'"),
        ("get_reservation_details", {"reservation_id": ["Z7GOZK"]}, "Error: unhashable type: 'list'"),
        ("book_reservation", {**BOOKING, "cabin": "first"}, "Error: 'first'"),
        ("update_reservation_flights", {"reservation_id": "Z7GOZK", "cabin": "economy", "flights": [],
                                        "payment_id": "gift_card_0"}, "Error: payment method not found"),
        ("send_certificate", {"user_id": "nobody", "amount": 50}, "Error: user not found"),
        ("fly_me_to_the_moon", {}, "Unknown action fly_me_to_the_moon"),
    ]
    for name, kwargs, expected in cases:
        call = airline.call(name, copy.deepcopy(kwargs), branch=branch)
        assert (call.content, call.ok, call.writes) == (expected, False, []), name
    assert airline.state_changes("bad") == []


def test_a_certificate_listed_twice_fails_after_spending_it(airline: TauEnv) -> None:
    """τ-bench checks each payment line alone (250 >= 200 and 250 >= 50), deletes the certificate on the first line
    and fails with KeyError on the second: the certificate is gone and nothing is booked."""
    branch = Branch("twice", (0,))
    kwargs = {**copy.deepcopy(BOOKING), "payment_methods": [
        {"payment_id": "certificate_7504069", "amount": 200}, {"payment_id": "certificate_7504069", "amount": 50},
        {"payment_id": "credit_card_4421486", "amount": 5}]}
    assert airline.call("book_reservation", kwargs, branch=branch).content == "Error: 'certificate_7504069'"
    assert "certificate_7504069" not in airline.read(branch, "users", "mia_li_3668")["payment_methods"]
    assert airline.read(branch, "reservations", "HATHAT") is None


def _base_doc(env: TauEnv, reservation_id: str) -> Any:
    row = env.con.execute("SELECT doc FROM taubench_airline_reservations WHERE reservation_id = ?",
                          [reservation_id]).fetchone()
    return row and row[0]


def test_sibling_branches_do_not_see_each_other(airline: TauEnv) -> None:
    root = Branch("siblings", (0,))
    a, b = root.child(1), root.child(2)
    a_child = a.child(3)
    base_z7 = _base_doc(airline, "Z7GOZK")

    def say(branch: Branch, name: str, **kwargs: Any) -> str:
        return airline.call(name, copy.deepcopy(kwargs), branch=branch).content

    assert say(a, "cancel_reservation", reservation_id="Z7GOZK") == CANCELLED
    assert say(a, "book_reservation", **BOOKING) == BOOKED
    other = gold(airline, 11)[0]["kwargs"]  # another user's booking: in b it is HATHAT too
    booked_b = json.loads(say(b, "book_reservation", **other))
    assert booked_b["reservation_id"] == "HATHAT" and booked_b["user_id"] == other["user_id"]
    assert say(b, "send_certificate", user_id="mia_li_3668", amount=100).startswith("Certificate certificate_3221322")

    assert "status" not in json.loads(say(b, "get_reservation_details", reservation_id="Z7GOZK"))
    assert json.loads(say(b, "get_reservation_details", reservation_id="HATHAT"))["user_id"] == other["user_id"]
    assert json.loads(say(a, "get_reservation_details", reservation_id="HATHAT"))["user_id"] == "mia_li_3668"
    assert "certificate_3221322" not in airline.read(a, "users", "mia_li_3668")["payment_methods"]
    assert "certificate_7504069" in airline.read(b, "users", "mia_li_3668")["payment_methods"]
    assert say(root, "get_reservation_details", reservation_id="HATHAT") == "Error: user not found"
    # a child inherits its parent's writes: its booking is the next id
    assert json.loads(say(a_child, "get_reservation_details", reservation_id="Z7GOZK"))["status"] == "cancelled"
    assert json.loads(say(a_child, "book_reservation", **other))["reservation_id"] == "HATHAU"
    assert say(a, "get_reservation_details", reservation_id="HATHAU") == "Error: user not found"

    assert set(state.differences(airline.con, a, b)) >= {("reservations", "HATHAT"), ("reservations", "Z7GOZK")}
    assert _base_doc(airline, "Z7GOZK") == base_z7 and _base_doc(airline, "HATHAT") is None  # base tables untouched
    assert airline.con.execute("SELECT count(*) FROM taubench_airline_reservations").fetchone()[0] == 2000
    writes = airline.state_changes("siblings")
    assert {(w["node_id"], w["tbl"], w["key"]) for w in writes} == {
        (1, "reservations", "Z7GOZK"), (1, "reservations", "HATHAT"), (1, "users", "mia_li_3668"),
        (2, "reservations", "HATHAT"), (2, "users", other["user_id"]), (2, "users", "mia_li_3668"),
        (3, "reservations", "HATHAU"), (3, "users", other["user_id"])}


def _tau_calculate(expression: str) -> str:
    """τ-bench's calculate.py body."""
    try:
        return str(round(float(eval(expression, {"__builtins__": None}, {})), 2))
    except Exception as e:
        return f"Error: {e}"


_numbers = st.integers(0, 999).map(str) | st.floats(0, 99, allow_nan=False).map(lambda f: f"{f:.2f}")
_expressions = st.recursive(_numbers, lambda inner: st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//"]),
                                                              inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
                            max_leaves=8)


@settings(max_examples=80, deadline=None)
@given(_expressions)
def test_calculate_matches_tau_bench_eval(expression: str) -> None:
    from taubench.airline import calculate

    assert calculate(None, expression) == _tau_calculate(expression)
