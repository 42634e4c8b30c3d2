"""What the teacher says: question and offer tables, and search results and arguments put into words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

QUESTIONS = {
    "food": "What type of food would you like?", "area": "Which part of town would you like?",
    "pricerange": "What price range would you like?", "type": "What type of place would you like?",
    "stars": "How many stars should it have?", "departure": "Where will you be departing from?",
    "destination": "Where are you travelling to?", "day": "What day would you like?",
    "time": "What time would you like to leave or arrive by?", "people": "How many people is it for?",
    "stay": "How many nights will you stay?", "book_time": "What time would you like the table?",
}
NOUN = {"restaurant": "restaurant", "hotel": "place to stay", "attraction": "attraction", "train": "train"}
NOUNS = {"restaurant": "restaurants", "hotel": "places to stay", "attraction": "attractions", "train": "trains"}
OFFER = {"restaurant": "Would you like me to book a table?", "hotel": "Would you like me to book it?",
         "attraction": "Would you like more information about it?", "train": "Would you like me to book tickets?"}
ATTRIBUTE_NAMES = {"phone": "phone number", "address": "address", "postcode": "postcode",
                   "entrance": "entrance fee", "openhours": "opening hours", "pricerange": "price range",
                   "food": "food", "duration": "travel time", "arriveBy": "arrival time",
                   "leaveAt": "departure time", "trainID": "train ID", "price": "ticket price",
                   "stars": "star rating", "internet": "wifi", "parking": "parking", "area": "area", "type": "type"}
ARG_PHRASES = {"food": "serving {} food", "pricerange": "in the {} price range", "area": "in the {}",
               "name": "called {}", "type": "of type {}", "stars": "with {} stars", "departure": "from {}",
               "destination": "to {}", "day": "on {}", "leaveAt": "leaving after {}", "arriveBy": "arriving by {}",
               "people": "for {} people", "time": "at {}", "stay": "for {} nights"}


def say(content: str) -> dict[str, Any]:
    """An assistant message that says `content`."""
    return {"role": "assistant", "content": content}


def _a(word: Any) -> str:
    return f"{'an' if str(word)[:1] in 'aeiou' else 'a'} {word}"


def describe_args(args: Mapping[str, Any]) -> str:
    """Search or booking arguments in words: 'serving french food in the centre'."""
    parts = []
    for key, value in args.items():
        if key in ("parking", "internet"):
            label = "wifi" if key == "internet" else "parking"
            parts.append(f"with free {label}" if value == "yes" else f"without free {label}")
        else:
            parts.append(ARG_PHRASES.get(key, key + " {}").format(value))
    return " ".join(parts)


def describe_row(d: str, row: Mapping[str, Any]) -> str:
    """One search result in a sentence."""
    if d == "train":
        return (f"{row.get('trainID')} leaves {row.get('departure')} at {row.get('leaveAt')} on {row.get('day')} "
                f"and arrives in {row.get('destination')} at {row.get('arriveBy')}; a ticket costs {row.get('price')}")
    if d == "restaurant":
        return (f"{row.get('name')} is {_a(row.get('pricerange'))} restaurant serving {row.get('food')} food "
                f"in the {row.get('area')}")
    if d == "hotel":
        extras = [f"free {label}" for key, label in (("parking", "parking"), ("internet", "wifi"))
                  if row.get(key) == "yes"]
        extra = (", with " + " and ".join(extras)) if extras else ""
        return (f"{row.get('name')} is {_a(row.get('pricerange'))} {row.get('type')} in the {row.get('area')} "
                f"rated {row.get('stars')} stars{extra}")
    return f"{row.get('name')} is {_a(row.get('type'))} in the {row.get('area')}"


def answers(row: Mapping[str, Any], requests: list[str]) -> str:
    """The requested attributes of `row` in one sentence ("" when nothing was requested)."""
    uid = row.get("trainID") or row.get("name")
    parts = []
    for attribute in requests:
        value = row.get(attribute)
        label = ATTRIBUTE_NAMES.get(attribute, attribute)
        if value in (None, "", "?"):
            parts.append(f"I don't have the {label} on record")
        elif attribute in ("parking", "internet"):
            parts.append(f"it {'has' if value == 'yes' else 'does not have'} free {label}")
        else:
            parts.append(f"the {label} is {value}")
    return (f"For {uid}, " + "; ".join(parts) + ".") if parts else ""
