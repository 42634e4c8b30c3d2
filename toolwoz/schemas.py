"""The ToolWOZ API catalogue, the tool schemas an agent sees, and the token that ends a conversation.

Names and parameters match ToolWOZ's `valid_api_defs.json` / `tools.json` (a test compares them); the
descriptions are our own words.
"""

from __future__ import annotations

from typing import Any

DOMAINS = ("restaurant", "hotel", "attraction", "train")
# The reference builds goals in this order; ground truth keeps it so JSON round-trips compare equal.
GOAL_DOMAIN_ORDER = ("taxi", "police", "hospital", "hotel", "attraction", "train", "restaurant")
EXCLUDED_DOMAINS = ("taxi", "police", "hospital")

# api name -> (parameters, returns), in the reference's order.
API_DEFS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "book_restaurant": (("time", "day", "people", "name"), ("name", "reference")),
    "search_restaurant": (
        ("food", "pricerange", "name", "area"),
        ("id", "address", "area", "food", "introduction", "name", "phone", "postcode", "pricerange",
         "signature", "type"),
    ),
    "book_hotel": (("stay", "day", "people", "name"), ("name", "reference")),
    "search_hotel": (
        ("name", "area", "parking", "pricerange", "stars", "internet", "type"),
        ("id", "address", "area", "internet", "parking", "single", "double", "family", "name", "phone",
         "postcode", "pricerange", "takesbookings", "stars", "type"),
    ),
    "book_attraction": ((), ()),
    "search_attraction": (
        ("type", "name", "area"),
        ("id", "address", "area", "entrance", "name", "phone", "postcode", "pricerange", "openhours", "type"),
    ),
    "book_train": (("people", "trainID"), ("trainID", "reference")),
    "search_train": (
        ("leaveAt", "destination", "day", "arriveBy", "departure"),
        ("trainID", "arriveBy", "day", "departure", "destination", "duration", "leaveAt", "price"),
    ),
    # Defined by the reference but outside ToolWOZ: accepted only by `parity` validation.
    "book_taxi": ((), ("phone", "type")),
    "search_taxi": (("leaveAt", "destination", "departure", "arriveBy"), ()),
    "book_hospital": ((), ("reference", "time", "department")),
    "search_hospital": (("department",), ()),
}

TOOL_NAMES = tuple(f"{kind}_{d}" for d in DOMAINS for kind in ("book", "search"))

UID_KEY = {"restaurant": "name", "hotel": "name", "attraction": "name", "train": "trainID"}
TIME_PARAMS = ("leaveAt", "arriveBy", "time")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# What a user simulator writes to end the conversation (the reference's token); the search stops that branch.
END_CONVERSATION = "END_CONVERSATION"

AREAS = ["centre", "east", "north", "south", "west"]
_DESCRIPTIONS: dict[str, tuple[str, dict[str, tuple[str, list[str] | None]]]] = {
    "book_restaurant": ("Reserve a table at a restaurant found with search_restaurant.", {
        "time": ("Reservation time, 24-hour HH:MM, e.g. 18:30", None),
        "day": ("Day of the week, e.g. friday", None),
        "people": ("How many people, e.g. 4", None),
        "name": ("Exact restaurant name from a search result", None),
    }),
    "search_restaurant": ("Find restaurants in Cambridge; leave out what the customer does not care about.", {
        "food": ("Cuisine, e.g. italian", None),
        "pricerange": ("Price range", ["cheap", "expensive", "moderate"]),
        "name": ("Restaurant name, when the customer names one", None),
        "area": ("Part of town, e.g. centre", None),
    }),
    "book_hotel": ("Book rooms at a hotel or guesthouse found with search_hotel.", {
        "stay": ("Number of nights, e.g. 3", None),
        "day": ("Day of the week the stay starts, e.g. monday", None),
        "people": ("How many guests, e.g. 2", None),
        "name": ("Exact hotel name from a search result", None),
    }),
    "search_hotel": ("Find places to stay in Cambridge; leave out what the customer does not care about.", {
        "name": ("Hotel name, when the customer names one", None),
        "area": ("Part of town", AREAS),
        "parking": ("Free parking wanted", ["yes", "no"]),
        "pricerange": ("Price range", ["moderate", "expensive", "cheap"]),
        "stars": ("Star rating", ["0", "1", "2", "3", "4"]),
        "internet": ("Free wifi wanted", ["yes", "no"]),
        "type": ("Kind of place", ["hotel", "guesthouse"]),
    }),
    "book_attraction": ("Attractions need no booking; this tool exists for completeness.", {}),
    "search_attraction": ("Find things to see and do in Cambridge.", {
        "type": ("Kind of attraction, e.g. museum", None),
        "name": ("Attraction name, when the customer names one", None),
        "area": ("Part of town", AREAS),
    }),
    "book_train": ("Buy tickets for a train found with search_train.", {
        "people": ("Number of tickets, e.g. 2", None),
        "trainID": ("Train id from a search result, e.g. TR1234", None),
    }),
    "search_train": ("Find trains; times are 24-hour HH:MM.", {
        "leaveAt": ("Earliest departure time, e.g. 09:15", None),
        "destination": ("Arrival station, e.g. cambridge", None),
        "day": ("Day of travel, e.g. tuesday", None),
        "arriveBy": ("Latest arrival time, e.g. 17:45", None),
        "departure": ("Departure station, e.g. london kings cross", None),
    }),
}


def tool_schemas() -> list[dict[str, Any]]:
    """OpenAI-style function schemas of the 8 ToolWOZ tools (every parameter optional, all strings)."""
    schemas = []
    for name in TOOL_NAMES:
        description, params = _DESCRIPTIONS[name]
        properties: dict[str, Any] = {}
        for param in API_DEFS[name][0]:
            text, enum = params[param]
            properties[param] = {"type": "string", "description": text}
            if enum:
                properties[param]["enum"] = enum
        schemas.append({
            "type": "function",
            "function": {"name": name, "description": description,
                         "parameters": {"type": "object", "properties": properties, "required": []}},
        })
    return schemas


def domain_of(api_name: str) -> str:
    """`search_hotel` -> `hotel`."""
    return api_name.split("_", 1)[1]
