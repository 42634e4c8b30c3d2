"""How the teacher reads a conversation: a lexicon of DB values, one user message at a time (`parse`), and
the whole conversation (`read`: belief state per domain, searches, bookings and the tool result it ends on).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolwoz.schemas import DAYS, DOMAINS, END_CONVERSATION
from toolwoz.teacher.phrases import QUESTIONS
from toolwoz.values import format_time, normalise, parse_time

SEARCH_SLOTS = {
    "restaurant": ("food", "pricerange", "name", "area"),
    "hotel": ("name", "area", "parking", "pricerange", "stars", "internet", "type"),
    "attraction": ("type", "name", "area"),
    "train": ("leaveAt", "destination", "day", "arriveBy", "departure"),
}
BOOK_NEEDS = {"restaurant": ("people", "day", "time"), "hotel": ("people", "day", "stay"), "train": ("people",)}
# Explicit domain words in the user's text (after lexicon values are blanked out).
DOMAIN_WORDS = {
    "restaurant": r"restaurants?|eat|dine|dining|food|cuisine|table|lunch|dinner|meal",
    "hotel": r"stay|hotels?|guesthouses?|accommodation|lodgings?|rooms?|nights?",
    "attraction": r"attractions?|visit|sightseeing|things to do",
    "train": r"trains?|railway|tickets?",
}
SYNONYMS = {"center": "centre", "guest house": "guesthouse", "swimming pool": "swimmingpool",
            "concert hall": "concerthall", "night club": "nightclub", "multiple sports": "mutliple sports",
            "moderately priced": "moderate"}
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"])}
NUM = r"(\d{1,2}|" + "|".join(NUMBER_WORDS) + ")"
PEOPLE = re.compile(rf"\b{NUM} (?:people|persons?|person|guests?|adults?|passengers?|tickets?|seats?)\b"
                    rf"|\b(?:group|party|table) (?:of|for) {NUM}\b")
STAY = re.compile(rf"\b{NUM} (?:nights?|days)\b|\bstay of {NUM}\b")
STARS = re.compile(rf"\b{NUM}[ -]?stars?\b|\brated {NUM}\b")
TIME = re.compile(r"\b(\d{1,2})(?:[:.](\d{2}))? ?(am|pm)\b|\b(\d{1,2})[:.](\d{2})\b")
TRAIN_ID = re.compile(r"\btr ?\d{4}\b")
LEAVE_CUES = ("after", "leave", "leaving", "leaves", "depart", "departing", "departs", "from")
ARRIVE_CUES = ("by", "before", "arrive", "arriving", "arrives", "there")
FROM_CUES = ("from", "departing", "leaving", "depart", "leave", "out")
TO_CUES = ("to", "into", "towards", "destination", "arriving", "in", "reach")
NEGATED_AMENITY = re.compile(r"\b(no|not|without|dont|doesnt|do not|does not)\b[^.,;!?]{0,30}\bfree "
                             r"(parking|wifi|internet)\b")
AMENITY = re.compile(r"\bfree (parking|wifi|internet)\b|\b(?:with|has|have|includes?) (parking|wifi|internet)\b")
DONTCARE = re.compile(r"\b(dont mind|doesnt matter|dont care|no preference|not fussy|any( \w+){1,3} (is|are) fine|"
                      r"anything is fine|either is fine)\b")
DONTCARE_WORDS = {"area": r"area|part of town|location", "pricerange": r"price", "food": r"food|cuisine",
                  "type": r"\btype\b|kind", "stars": r"stars?|rating", "parking": r"parking",
                  "internet": r"wifi|internet", "name": r"\bname\b", "day": r"\bday\b",
                  "time": r"\btime\b"}
WANTS_BOOK = re.compile(r"\b(book|booking|reserve|reservation)\b")
NO_BOOK = re.compile(r"\b(no need to|dont need to|do not need to|dont|not|no)\b( \w+)? (book|reserve)")
REQUEST_CUE = re.compile(r"\?|\b(could you|can you|tell me|give me|what is|whats|what are|may i|can i|"
                         r"i need the|id like the|i would like the|do you know)\b")
REQUEST_WORDS = (  # (pattern, attribute); earlier patterns consume their words
    (r"phone( number)?|telephone", "phone"), (r"address", "address"), (r"post ?code|postal code", "postcode"),
    (r"entrance( fee)?|admission|entry fee", "entrance"), (r"opening hours|open hours", "openhours"),
    (r"price range", "pricerange"), (r"type of food|food type|kind of food|cuisine", "food"),
    (r"travel time|duration|journey time|how long", "duration"), (r"arrival time|when does it arrive", "arriveBy"),
    (r"departure time|when does it leave|what time does it leave", "leaveAt"),
    (r"train id|train number|trainid", "trainID"), (r"(ticket )?price|fare|how much|cost", "price"),
    (r"star rating|how many stars|stars", "stars"), (r"wifi|internet", "internet"), (r"parking", "parking"),
    (r"area|part of town", "area"), (r"\btype\b|what kind", "type"),
)

Message = Mapping[str, Any]


@dataclass
class Lexicon:
    """DB value phrases (normalised) -> (kind, value), matched longest first on word boundaries."""

    phrases: dict[str, tuple[str, str]]
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.phrases, key=len, reverse=True)
        self.pattern = re.compile(r"\b(" + "|".join(re.escape(p) for p in ordered) + r")\b")

    @classmethod
    def from_rows(cls, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> Lexicon:
        """Areas, price ranges, foods, types, names, stations and days found in the DB rows."""
        phrases: dict[str, tuple[str, str]] = {}

        def add(kind: str, value: Any) -> None:
            if isinstance(value, str) and value.strip() and value.strip() != "?":
                phrases.setdefault(normalise(value), (kind, normalise(value)))

        for domain in ("restaurant", "hotel", "attraction"):
            for row in rows.get(domain, ()):
                add(f"name:{domain}", row.get("name"))
                add("area", row.get("area"))
                if domain != "attraction":
                    add("pricerange", row.get("pricerange"))
        for row in rows.get("restaurant", ()):
            add("food", row.get("food"))
        for row in rows.get("hotel", ()):
            add("hotel_type", row.get("type"))
        for row in rows.get("attraction", ()):
            add("attraction_type", row.get("type"))
        for row in rows.get("train", ()):
            add("station", row.get("departure"))
            add("station", row.get("destination"))
        for day in DAYS:
            add("day", day)
        for alias, value in SYNONYMS.items():
            if value in phrases:
                phrases.setdefault(alias, phrases[value])
        return cls(phrases)


@dataclass
class Parse:
    """What one user message says, read in the context of the active domain."""

    domain: str | None
    slots: dict[str, str]  # search and booking slots of `domain`
    dontcare: set[str]
    book: bool
    requests: list[str]
    end: bool


@dataclass
class Dialogue:
    """The teacher's view of the conversation so far, rebuilt from the messages on every call."""

    active: str | None = None
    belief: dict[str, dict[str, str]] = field(default_factory=lambda: {d: {} for d in DOMAINS})
    dontcare: dict[str, set[str]] = field(default_factory=lambda: {d: set() for d in DOMAINS})
    last: Parse | None = None  # the latest user message
    searches: dict[str, tuple[dict[str, str], list[dict[str, Any]]]] = field(default_factory=dict)
    bookings: dict[str, list[tuple[dict[str, str], Any]]] = field(default_factory=dict)
    calls_this_turn: int = 0
    n_calls: int = 0
    last_tool: tuple[str, dict[str, str], Any] | None = None  # (name, args, result) when it ends the messages


def _tokens_before(text: str, start: int, n: int = 4) -> list[str]:
    return re.findall(r"[a-z]+", text[:start])[-n:]


def _nearest(tokens: list[str], first: tuple[str, ...], second: tuple[str, ...]) -> int:
    """0 if a `first` cue is nearest to the end of `tokens`, 1 for `second`, -1 for none."""
    for token in reversed(tokens):
        if token in first:
            return 0
        if token in second:
            return 1
    return -1


def _number(word: str | None) -> str | None:
    return None if word is None else NUMBER_WORDS.get(word, word.lstrip("0") or "0")


def _minutes(m: re.Match[str]) -> int | None:
    """Minutes after midnight of a TIME match: '18:45', '6:45 pm', '7pm'."""
    if m.group(4) is not None:
        return parse_time(f"{m.group(4)}:{m.group(5)}")
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    if hour > 12 or minute > 59:
        return None
    return (hour % 12 + (12 if m.group(3) == "pm" else 0)) * 60 + minute


def _first_group(match: re.Match[str]) -> str | None:
    return next((g for g in match.groups() if g is not None), None)


def parse(lexicon: Lexicon, text: str, active: str | None, asked: Collection[str] = ()) -> Parse:
    """Read one user message; values are attributed to the domain it talks about (else `active`)."""
    norm = normalise(text)  # synonyms are lexicon phrases: a name holding "guest house" stays whole
    found = [(m.start(), *lexicon.phrases[m.group(1)]) for m in lexicon.pattern.finditer(norm)]
    blanked = lexicon.pattern.sub(" ", norm)
    domain = _domain(blanked, found, norm) or active
    slots: dict[str, str] = {}
    for start, kind, value in found:
        slot = _slot(kind, domain, norm, start)
        if slot:
            slots[slot] = value
    if domain:
        slots.update(_numbers_and_times(norm, domain))
    if domain == "hotel":
        for m in AMENITY.finditer(norm):
            slots["internet" if _first_group(m) in ("wifi", "internet") else "parking"] = "yes"
        for m in NEGATED_AMENITY.finditer(norm):
            slots["internet" if m.group(2) in ("wifi", "internet") else "parking"] = "no"
    dontcare = _dontcare(norm, asked)
    requests = _requests(norm, slots, domain)
    book = bool(WANTS_BOOK.search(norm)) and not NO_BOOK.search(norm)
    book = book or ("people" in slots and domain in BOOK_NEEDS)
    return Parse(domain, slots, dontcare, book, requests, END_CONVERSATION.lower() in norm)


def _domain(blanked: str, found: list[tuple[int, str, str]], norm: str) -> str | None:
    score = {d: 2 * len(re.findall(rf"\b({DOMAIN_WORDS[d]})\b", blanked)) for d in DOMAINS}
    for _, kind, _ in found:
        if kind.startswith("name:"):
            score[kind[5:]] += 3
        elif kind in ("food", "hotel_type", "attraction_type"):
            score[{"food": "restaurant", "hotel_type": "hotel", "attraction_type": "attraction"}[kind]] += 1
    if TRAIN_ID.search(norm) or any(kind == "station" for _, kind, _ in found):
        score["train"] += 1
    if re.search(r"\bstars?\b|free (parking|wifi)", norm):
        score["hotel"] += 1
    best = max(score.values())
    return next((d for d in DOMAINS if score[d] == best), None) if best else None


def _slot(kind: str, domain: str | None, norm: str, start: int) -> str | None:
    if kind == "area" and domain in ("restaurant", "hotel", "attraction"):
        return "area"
    if kind == "pricerange" and domain in ("restaurant", "hotel"):
        return "pricerange"
    if (kind, domain) in (("food", "restaurant"), ("hotel_type", "hotel"), ("attraction_type", "attraction")):
        return "food" if kind == "food" else "type"
    if kind == f"name:{domain}":
        return "name"
    if kind == "day" and domain in ("restaurant", "hotel", "train"):
        return "day"
    if kind == "station" and domain == "train":
        side = _nearest(_tokens_before(norm, start, 3), FROM_CUES, TO_CUES)
        return "destination" if side == 1 else "departure" if side == 0 else None
    return None


def _numbers_and_times(norm: str, domain: str) -> dict[str, str]:
    slots: dict[str, str] = {}
    for m in PEOPLE.finditer(norm):
        slots["people"] = _number(_first_group(m)) or ""
    if domain == "hotel":
        for m in STAY.finditer(norm):
            slots["stay"] = _number(_first_group(m)) or ""
        for m in STARS.finditer(norm):
            slots["stars"] = _number(_first_group(m)) or ""
    for m in TIME.finditer(norm):
        minutes = _minutes(m)
        if minutes is None:
            continue
        if domain == "restaurant":
            slots["time"] = format_time(minutes)
        elif domain == "train":
            side = _nearest(_tokens_before(norm, m.start()), LEAVE_CUES, ARRIVE_CUES)
            slots["arriveBy" if side == 1 else "leaveAt"] = format_time(minutes)
    return {k: v for k, v in slots.items() if v}


def _dontcare(norm: str, asked: Collection[str]) -> set[str]:
    out: set[str] = set()
    for sentence in re.split(r"[.!?;]", norm):
        if DONTCARE.search(sentence):
            named = {slot for slot, words in DONTCARE_WORDS.items() if re.search(words, sentence)}
            out |= named or set(asked)
    return out


def _requests(norm: str, slots: dict[str, str], domain: str | None) -> list[str]:
    out: list[str] = []
    for sentence in re.split(r"(?<=[.!?;])", norm):
        if not REQUEST_CUE.search(sentence) or DONTCARE.search(sentence):
            continue
        for pattern, attribute in REQUEST_WORDS:
            if re.search(rf"\b({pattern})\b", sentence):
                sentence = re.sub(rf"\b({pattern})\b", " ", sentence)
                if attribute == "price" and domain != "train":
                    attribute = "pricerange"
                if attribute not in slots and attribute not in out:
                    out.append(attribute)
    return out


def read(lexicon: Lexicon, messages: Sequence[Message]) -> Dialogue:
    """Belief state, searches and bookings of the conversation so far."""
    state = Dialogue()
    pending: dict[str, tuple[str, dict[str, str]]] = {}
    asked: set[str] = set()
    last_tool: tuple[str, dict[str, str], Any] | None = None
    for message in messages:
        role = message.get("role")
        if role == "user":
            said = parse(lexicon, str(message.get("content") or ""), state.active, asked)
            state.active, state.last, state.calls_this_turn = said.domain, said, 0
            if said.domain:
                for slot, value in said.slots.items():
                    state.belief[said.domain][slot] = value
                    state.dontcare[said.domain].discard(slot)
                state.dontcare[said.domain] |= said.dontcare
                if "time" in said.dontcare and said.domain == "train":
                    state.dontcare["train"] |= {"leaveAt", "arriveBy"}
        elif role == "assistant":
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                pending[call.get("id", "")] = (fn.get("name", ""), load_args(fn.get("arguments")))
                state.calls_this_turn += 1
                state.n_calls += 1
            if message.get("content"):  # what the teacher last asked, for a bare "I don't mind"
                asked = {slot.removeprefix("book_") for slot, q in QUESTIONS.items() if q in message["content"]}
        elif role == "tool":
            name, args = pending.get(message.get("tool_call_id", ""), ("", {}))
            result = load_result(message.get("content"))
            kind, _, domain = name.partition("_")
            if kind == "search" and domain in DOMAINS:
                state.searches[domain] = (args, result if isinstance(result, list) else [])
            elif kind == "book" and domain in DOMAINS:
                state.bookings.setdefault(domain, []).append((args, result))
            last_tool = (name, args, result)
    if messages and messages[-1].get("role") == "tool":
        state.last_tool = last_tool
    return state


def load_args(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments: JSON text (the wire format) or already a dict."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            return {}
    return arguments if isinstance(arguments, dict) else {}


def load_result(content: Any) -> Any:
    """A tool message's JSON result, or its text when it is an error string."""
    if not isinstance(content, str):
        return content
    try:
        return json.loads(content)
    except json.JSONDecodeError:
        return content
