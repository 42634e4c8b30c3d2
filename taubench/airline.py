"""τ-bench's 14 airline tools over a branch's database (`state.BranchDB`), observation for observation.

Each function is the `invoke` of the τ-bench tool class it names (`@tool`), with the same checks in the same order,
the same `Error: ...` texts and the same `json.dumps` of the same dicts, so a branch's observations are
byte-identical to τ-bench's. Rows are read with `data.get` and changed in place (or `put`); `BranchDB` turns
what changed into the branch's write rows when the call returns, and writes nothing when it raises. The flight
searches are SQL over base ⊕ the branch's writes (`sql/taubench/airline_*_flights.sql`); the observation dicts are
assembled here, from the stored records, to keep τ-bench's key order.

τ-bench's own quirks are kept on purpose: `get_reservation_details` says "user not found", booking never takes
seats, `update_reservation_flights` keeps the old cabin, and the one-stop search writes a next-day date without
zero padding and shows the second flight's status and prices of the first day.
"""

from __future__ import annotations

import json
from copy import deepcopy
from typing import Any, Callable

from taubench.common import calculate, think, transfer_to_human_agents
from taubench.state import BranchDB, tool

AIRPORTS = {
    "SFO": "San Francisco", "JFK": "New York", "LAX": "Los Angeles", "ORD": "Chicago", "DFW": "Dallas",
    "DEN": "Denver", "SEA": "Seattle", "ATL": "Atlanta", "MIA": "Miami", "BOS": "Boston", "PHX": "Phoenix",
    "IAH": "Houston", "LAS": "Las Vegas", "MCO": "Orlando", "EWR": "Newark", "CLT": "Charlotte",
    "MSP": "Minneapolis", "DTW": "Detroit", "PHL": "Philadelphia", "LGA": "LaGuardia",
}
NEW_RESERVATION_IDS = ("HATHAT", "HATHAU", "HATHAV")  # τ-bench assumes at most 3 bookings per task
CERTIFICATE_IDS = (3221322, 3221323, 3221324)
CREATED_AT = "2024-05-15T15:00:00"


def _flight_prices(data: BranchDB, flights: list[Any], cabin: str, passengers: Any,
                   existing: list[dict[str, Any]] | None = None, same_cabin: bool = False) -> int | float | str:
    """Fill price/origin/destination into each (copied) flight as τ-bench's booking and update loops do; returns
    the total price, or the `Error: ...` text of the first flight that cannot be booked. With `existing` (an
    update), a flight already on the reservation keeps its price when the cabin is unchanged. `len(passengers)`
    is taken where τ-bench takes it (a bad `passengers` fails there, not before)."""
    wanted = [f["flight_number"] for f in flights if isinstance(f, dict) and isinstance(f.get("flight_number"), str)]
    if wanted:
        data.get_many("flights", wanted)  # one query; `data.get` below then reads the call's copies
    total: int | float = 0
    for flight in flights:
        if existing is not None:
            same = [f for f in existing
                    if f["flight_number"] == flight["flight_number"] and f["date"] == flight["date"] and same_cabin]
            if same:
                total += same[0]["price"] * len(passengers)
                flight["price"] = same[0]["price"]
                flight["origin"] = same[0]["origin"]
                flight["destination"] = same[0]["destination"]
                continue
        flight_number = flight["flight_number"]
        flight_data = data.get("flights", flight_number)
        if flight_data is None:
            return f"Error: flight {flight_number} not found"
        if flight["date"] not in flight_data["dates"]:
            return f"Error: flight {flight_number} not found on date {flight['date']}"
        flight_date_data = flight_data["dates"][flight["date"]]
        if flight_date_data["status"] != "available":
            return f"Error: flight {flight_number} not available on date {flight['date']}"
        if flight_date_data["available_seats"][cabin] < len(passengers):
            return f"Error: not enough seats on flight {flight_number}"
        flight["price"] = flight_date_data["prices"][cabin]
        flight["origin"] = flight_data["origin"]
        flight["destination"] = flight_data["destination"]
        total += flight["price"] * len(passengers)
    return total


@tool("BookReservation")
def book_reservation(data: BranchDB, user_id: str, origin: str, destination: str, flight_type: str, cabin: str,
                     flights: list[dict[str, Any]], passengers: list[dict[str, Any]],
                     payment_methods: list[dict[str, Any]], total_baggages: int, nonfree_baggages: int,
                     insurance: str) -> str:
    """Book a reservation (ids HATHAT, HATHAU, HATHAV in turn), paying with the user's methods."""
    user = data.get("users", user_id)
    if user is None:
        return "Error: user not found"
    reservation_id = next((r for r in NEW_RESERVATION_IDS[:-1] if not data.has("reservations", r)),
                          NEW_RESERVATION_IDS[-1])
    reservation = {
        "reservation_id": reservation_id, "user_id": user_id, "origin": origin, "destination": destination,
        "flight_type": flight_type, "cabin": cabin, "flights": deepcopy(flights), "passengers": passengers,
        "payment_history": payment_methods, "created_at": CREATED_AT, "total_baggages": total_baggages,
        "nonfree_baggages": nonfree_baggages, "insurance": insurance,
    }
    total_price = _flight_prices(data, reservation["flights"], cabin, passengers)
    if isinstance(total_price, str):
        return total_price
    if insurance == "yes":
        total_price += 30 * len(passengers)
    total_price += 50 * nonfree_baggages
    for payment_method in payment_methods:
        payment_id, amount = payment_method["payment_id"], payment_method["amount"]
        if payment_id not in user["payment_methods"]:
            return f"Error: payment method {payment_id} not found"
        if user["payment_methods"][payment_id]["source"] in ["gift_card", "certificate"]:
            if user["payment_methods"][payment_id]["amount"] < amount:
                return f"Error: not enough balance in payment method {payment_id}"
    paid = sum(payment["amount"] for payment in payment_methods)
    if paid != total_price:
        return f"Error: payment amount does not add up, total price is {total_price}, but paid {paid}"
    try:
        for payment_method in payment_methods:
            payment_id, amount = payment_method["payment_id"], payment_method["amount"]
            if user["payment_methods"][payment_id]["source"] == "gift_card":
                user["payment_methods"][payment_id]["amount"] -= amount
            elif user["payment_methods"][payment_id]["source"] == "certificate":
                del user["payment_methods"][payment_id]
    except KeyError as e:  # a certificate listed twice: τ-bench fails here but keeps what it already deducted
        return f"Error: {e}"
    data.put("reservations", reservation_id, reservation)
    user["reservations"].append(reservation_id)
    return json.dumps(reservation)


@tool("CancelReservation")
def cancel_reservation(data: BranchDB, reservation_id: str) -> str:
    """Cancel a reservation: refund every payment (negative amounts appended) and mark it cancelled."""
    reservation = data.get("reservations", reservation_id)
    if reservation is None:
        return "Error: reservation not found"
    refunds = [{"payment_id": p["payment_id"], "amount": -p["amount"]} for p in reservation["payment_history"]]
    reservation["payment_history"].extend(refunds)
    reservation["status"] = "cancelled"
    return json.dumps(reservation)


@tool("GetReservationDetails")
def get_reservation_details(data: BranchDB, reservation_id: str) -> str:
    """The reservation's record (τ-bench's miss says "user not found")."""
    reservation = data.get("reservations", reservation_id)
    return "Error: user not found" if reservation is None else json.dumps(reservation)


@tool("GetUserDetails")
def get_user_details(data: BranchDB, user_id: str) -> str:
    """The user's record."""
    user = data.get("users", user_id)
    return "Error: user not found" if user is None else json.dumps(user)


@tool("ListAllAirports")
def list_all_airports(data: BranchDB) -> str:
    """The 20 airports and their cities."""
    return json.dumps(AIRPORTS)


@tool("SearchDirectFlight")
def search_direct_flight(data: BranchDB, origin: str, destination: str, date: str) -> str:
    """Direct flights of a route available on a date: each flight's fields (not its dates) and that day's."""
    if not (isinstance(origin, str) and isinstance(destination, str)):
        return "[]"  # no flight's origin/destination equals a non-text value
    results = []
    rows = data.query("airline_direct_flights", {"origin": origin, "destination": destination,
                                                 "date": date if isinstance(date, str) else None})
    for (doc,) in rows:
        if not isinstance(date, str):
            hash(date)  # `date in flight["dates"]`: TypeError if unhashable, else never a date
            continue
        flight = json.loads(doc)
        results.append({k: v for k, v in flight.items() if k != "dates"})
        results[-1].update(flight["dates"][date])
    return json.dumps(results)


@tool("SearchOnestopFlight")
def search_onestop_flight(data: BranchDB, origin: str, destination: str, date: str) -> str:
    """Pairs of connecting flights of a route: the second leaves the same day (or the next, when the first
    arrives "+1") no earlier than the first arrives, both available."""
    try:
        next_date, next_error = f"2024-05-{int(date[-2:]) + 1}", None
    except Exception as e:  # τ-bench raises this only on meeting a "+1" first flight, so keep it until then
        next_date, next_error = None, e
    if not (isinstance(origin, str) and isinstance(destination, str)):
        return "[]"
    rows = data.query("airline_onestop_flights", {
        "origin": origin, "destination": destination, "date": date if isinstance(date, str) else None,
        "next_date": next_date})
    results = []
    for doc1, doc2, next_day, in_time in rows:
        if next_day and next_error is not None:
            raise next_error
        if not in_time:
            continue
        if not isinstance(date, str):
            hash(date)
            continue
        flight1, flight2 = json.loads(doc1), json.loads(doc2)
        result1 = {k: v for k, v in flight1.items() if k != "dates"}
        result1.update(flight1["dates"][date])
        result1["date"] = date
        result2 = {k: v for k, v in flight2.items() if k != "dates"}
        result2.update(flight2["dates"][date])
        result2["date"] = next_date if next_day else date
        results.append([result1, result2])
    return json.dumps(results)


@tool("SendCertificate")
def send_certificate(data: BranchDB, user_id: str, amount: int) -> str:
    """Add a certificate (the first free of three ids) to the user's payment methods."""
    user = data.get("users", user_id)
    if user is None:
        return "Error: user not found"
    for id in CERTIFICATE_IDS:
        payment_id = f"certificate_{id}"
        if payment_id not in user["payment_methods"]:
            user["payment_methods"][payment_id] = {"source": "certificate", "amount": amount, "id": payment_id}
            return f"Certificate {payment_id} added to user {user_id} with amount {amount}."
    return "None"  # τ-bench returns None here (all three ids taken); its observation prints as this


def _payment_method(data: BranchDB, reservation: dict[str, Any], payment_id: Any,
                    total_price: int | float) -> dict[str, Any] | str:
    """The user's payment method for an update, or the `Error: ...` τ-bench gives."""
    methods = data.row("users", reservation["user_id"])["payment_methods"]
    if payment_id not in methods:
        return "Error: payment method not found"
    payment_method = methods[payment_id]
    if payment_method["source"] == "certificate":
        return "Error: certificate cannot be used to update reservation"
    if payment_method["source"] == "gift_card" and payment_method["amount"] < total_price:
        return "Error: gift card balance is not enough"
    return payment_method


@tool("UpdateReservationBaggages")
def update_reservation_baggages(data: BranchDB, reservation_id: str, total_baggages: int, nonfree_baggages: int,
                                payment_id: str) -> str:
    """Set the bag counts, paying 50 per added non-free bag."""
    reservation = data.get("reservations", reservation_id)
    if reservation is None:
        return "Error: reservation not found"
    total_price = 50 * max(0, nonfree_baggages - reservation["nonfree_baggages"])
    payment_method = _payment_method(data, reservation, payment_id, total_price)
    if isinstance(payment_method, str):
        return payment_method
    reservation["total_baggages"] = total_baggages
    reservation["nonfree_baggages"] = nonfree_baggages
    if payment_method["source"] == "gift_card":
        payment_method["amount"] -= total_price
    if total_price != 0:
        reservation["payment_history"].append({"payment_id": payment_id, "amount": total_price})
    return json.dumps(reservation)


@tool("UpdateReservationFlights")
def update_reservation_flights(data: BranchDB, reservation_id: str, cabin: str, flights: list[dict[str, Any]],
                               payment_id: str) -> str:
    """Replace the flights, paying (or refunding) the price difference; the reservation's cabin is unchanged."""
    reservation = data.get("reservations", reservation_id)
    if reservation is None:
        return "Error: reservation not found"
    flights = deepcopy(flights)
    total_price = _flight_prices(data, flights, cabin, reservation["passengers"], existing=reservation["flights"],
                                 same_cabin=cabin == reservation["cabin"])
    if isinstance(total_price, str):
        return total_price
    total_price -= sum(flight["price"] for flight in reservation["flights"]) * len(reservation["passengers"])
    payment_method = _payment_method(data, reservation, payment_id, total_price)
    if isinstance(payment_method, str):
        return payment_method
    if payment_method["source"] == "gift_card":
        payment_method["amount"] -= total_price
    reservation["flights"] = flights
    if total_price != 0:
        reservation["payment_history"].append({"payment_id": payment_id, "amount": total_price})
    return json.dumps(reservation)


@tool("UpdateReservationPassengers")
def update_reservation_passengers(data: BranchDB, reservation_id: str, passengers: list[dict[str, Any]]) -> str:
    """Replace the passengers (the count must stay the same)."""
    reservation = data.get("reservations", reservation_id)
    if reservation is None:
        return "Error: reservation not found"
    if len(passengers) != len(reservation["passengers"]):
        return "Error: number of passengers does not match"
    reservation["passengers"] = passengers
    return json.dumps(reservation)


TOOLS: tuple[Callable[..., str], ...] = (
    book_reservation, calculate, cancel_reservation, get_reservation_details, get_user_details, list_all_airports,
    search_direct_flight, search_onestop_flight, send_certificate, think, transfer_to_human_agents,
    update_reservation_baggages, update_reservation_flights, update_reservation_passengers)
