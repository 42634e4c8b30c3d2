"""Rule-based teacher agent for the CPU bootstrap (../shared/spec/simulators.md, "Teacher agent").

`Teacher.next_message(messages)` is a pure function of the OpenAI-format conversation: it re-reads the
user's messages with a lexicon built from the DB values (belief state per domain), re-reads its own tool
calls and their results, and returns ONE assistant message — a tool call or text. It never sees the goal
or the ground truth; whatever it earns, it earns from the conversation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolwoz.schemas import DAYS, DOMAINS, UID_KEY
from toolwoz.values import format_time, normalise, parse_time

SEARCH_SLOTS = {
    "restaurant": ("food", "pricerange", "name", "area"),
    "hotel": ("name", "area", "parking", "pricerange", "stars", "internet", "type"),
    "attraction": ("type", "name", "area"),
    "train": ("leaveAt", "destination", "day", "arriveBy", "departure"),
}
BOOK_NEEDS = {"restaurant": ("people", "day", "time"), "hotel": ("people", "day", "stay"), "train": ("people",)}
# Slots the teacher asks about while a search has several matches, in order.
ASK_ORDER = {"restaurant": ("food", "area", "pricerange"), "hotel": ("area", "pricerange", "type", "stars"),
             "attraction": ("type", "area"), "train": ("departure", "destination", "day", "time")}
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
ATTRIBUTE_NAMES = {"phone": "phone number", "address": "address", "postcode": "postcode",
                   "entrance": "entrance fee", "openhours": "opening hours", "pricerange": "price range",
                   "food": "food", "duration": "travel time", "arriveBy": "arrival time",
                   "leaveAt": "departure time", "trainID": "train ID", "price": "ticket price",
                   "stars": "star rating", "internet": "wifi", "parking": "parking", "area": "area", "type": "type"}
END = "END_CONVERSATION"

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


class Teacher:
    """A rule-based ToolWOZ agent: lexicon NLU, belief state, search -> present -> book -> report."""

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon

    @classmethod
    def from_rows(cls, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> Teacher:
        """A teacher whose lexicon holds the values of `rows` (domain -> DB rows, e.g. `ToolEnv.rows`)."""
        return cls(Lexicon.from_rows(rows))

    # -- reading the user ---------------------------------------------------------------------------------

    def parse(self, text: str, active: str | None, asked: Collection[str] = ()) -> Parse:
        """Read one user message; values are attributed to the domain it talks about (else `active`)."""
        norm = normalise(text)  # synonyms are lexicon phrases: a name holding "guest house" stays whole
        found = [(m.start(), *self.lexicon.phrases[m.group(1)]) for m in self.lexicon.pattern.finditer(norm)]
        blanked = self.lexicon.pattern.sub(" ", norm)
        domain = self._domain(blanked, found, norm) or active
        slots: dict[str, str] = {}
        for start, kind, value in found:
            slot = self._slot(kind, domain, norm, start)
            if slot:
                slots[slot] = value
        if domain:
            slots.update(self._numbers_and_times(norm, domain))
        if domain == "hotel":
            for m in AMENITY.finditer(norm):
                slots["internet" if _first_group(m) in ("wifi", "internet") else "parking"] = "yes"
            for m in NEGATED_AMENITY.finditer(norm):
                slots["internet" if m.group(2) in ("wifi", "internet") else "parking"] = "no"
        dontcare = self._dontcare(norm, asked)
        requests = self._requests(norm, slots, domain)
        book = bool(WANTS_BOOK.search(norm)) and not NO_BOOK.search(norm)
        book = book or ("people" in slots and domain in BOOK_NEEDS)
        return Parse(domain, slots, dontcare, book, requests, END.lower() in norm)

    def _domain(self, blanked: str, found: list[tuple[int, str, str]], norm: str) -> str | None:
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

    @staticmethod
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

    @staticmethod
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

    @staticmethod
    def _dontcare(norm: str, asked: Collection[str]) -> set[str]:
        out: set[str] = set()
        for sentence in re.split(r"[.!?;]", norm):
            if DONTCARE.search(sentence):
                named = {slot for slot, words in DONTCARE_WORDS.items() if re.search(words, sentence)}
                out |= named or set(asked)
        return out

    @staticmethod
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

    # -- reading the whole conversation --------------------------------------------------------------------

    def read(self, messages: Sequence[Message]) -> Dialogue:
        """Belief state, searches and bookings of the conversation so far."""
        state = Dialogue()
        pending: dict[str, tuple[str, dict[str, str]]] = {}
        asked: set[str] = set()
        last_tool: tuple[str, dict[str, str], Any] | None = None
        for message in messages:
            role = message.get("role")
            if role == "user":
                parse = self.parse(str(message.get("content") or ""), state.active, asked)
                state.active, state.last, state.calls_this_turn = parse.domain, parse, 0
                if parse.domain:
                    for slot, value in parse.slots.items():
                        state.belief[parse.domain][slot] = value
                        state.dontcare[parse.domain].discard(slot)
                    state.dontcare[parse.domain] |= parse.dontcare
                    if "time" in parse.dontcare and parse.domain == "train":
                        state.dontcare["train"] |= {"leaveAt", "arriveBy"}
            elif role == "assistant":
                for call in message.get("tool_calls") or []:
                    fn = call.get("function") or {}
                    pending[call.get("id", "")] = (fn.get("name", ""), _load_args(fn.get("arguments")))
                    state.calls_this_turn += 1
                    state.n_calls += 1
                if message.get("content"):  # what the teacher last asked, for a bare "I don't mind"
                    asked = {slot.removeprefix("book_") for slot, q in QUESTIONS.items() if q in message["content"]}
            elif role == "tool":
                name, args = pending.get(message.get("tool_call_id", ""), ("", {}))
                result = _load(message.get("content"))
                kind, _, domain = name.partition("_")
                if kind == "search" and domain in DOMAINS:
                    state.searches[domain] = (args, result if isinstance(result, list) else [])
                elif kind == "book" and domain in DOMAINS:
                    state.bookings.setdefault(domain, []).append((args, result))
                last_tool = (name, args, result)
        if messages and messages[-1].get("role") == "tool":
            state.last_tool = last_tool
        return state

    # -- acting ---------------------------------------------------------------------------------------------

    def next_message(self, messages: Sequence[Message]) -> dict[str, Any]:
        """The next assistant message: one tool call or a text reply."""
        state = self.read(messages)
        last, d = state.last, state.active
        if last is None:
            return _text("Hello! How can I help you with your trip to Cambridge?")
        if last.end:
            return _text("You're welcome. Have a great trip, goodbye!")
        if d is None:
            return _text("How can I help you? I can find restaurants, places to stay, attractions and trains.")
        if state.last_tool is not None:
            return self._after_tool(state, *state.last_tool)
        constraints = self._constraints(state, d)
        if constraints and constraints != state.searches.get(d, (None,))[0] and state.calls_this_turn < 2:
            return self._call(state, f"search_{d}", constraints)
        # New booking slots after a booking attempt ("try 18:45 instead") also mean: book.
        rebook = d in BOOK_NEEDS and bool(state.bookings.get(d)) and bool(set(last.slots) & set(BOOK_NEEDS[d]))
        if (last.book or rebook) and d in BOOK_NEEDS and self._offered(state, d) is not None:
            return self._book_or_ask(state, d)
        if self._offered(state, d) is not None:
            if last.requests:
                return _text(self._answers(self._offered(state, d), last.requests) + " Anything else?")
            return _text(self._present(state, d))
        if not constraints:
            return _text(f"Sure, I can help you find a {NOUN[d]}. " + self._question(state, d, always=True))
        return _text(self._present(state, d))

    def _after_tool(self, state: Dialogue, name: str, args: dict[str, str], result: Any) -> dict[str, Any]:
        """Text (or a booking right after a search) in reply to the tool result that ends the messages."""
        kind, _, domain = name.partition("_")
        last = state.last
        assert last is not None
        if kind == "search" and isinstance(result, list):
            if not result:
                return _text(f"Sorry, there is no {NOUN[domain]} {_describe_args(args)}. "
                             "Would you like to try something else?")
            if last.book and domain in BOOK_NEEDS and state.calls_this_turn < 2:
                return self._book_or_ask(state, domain)
            return _text(self._present(state, domain))
        if kind == "book":
            if isinstance(result, dict) and result.get("success"):
                uid = UID_KEY[domain]
                text = (f"Your booking at {result.get(uid)} is confirmed. "
                        f"The reference number is {result.get('reference')}.")
                row = self._offered(state, domain)
                if last.requests and row is not None:
                    text += " " + self._answers(row, last.requests)
                return _text(text + " Is there anything else I can help you with?")
            error = str(result)
            if "no availability" in error:
                slots = _describe_args({k: v for k, v in args.items() if k != UID_KEY[domain]})
                other = "another day or length of stay" if domain == "hotel" else "another day or time"
                return _text(f"Sorry, there is no availability {slots}. Would you like to try {other}?")
            return _text(f"Sorry, I could not make that booking ({error[:80]}). "
                         + self._missing_question(state, domain))
        return _text(f"Sorry, something went wrong: {str(result)[:100]}. Could you rephrase your request?")

    def _constraints(self, state: Dialogue, d: str) -> dict[str, str]:
        belief = state.belief[d]
        return {k: belief[k] for k in SEARCH_SLOTS[d] if k in belief and k not in state.dontcare[d]}

    def _offered(self, state: Dialogue, d: str) -> dict[str, Any] | None:
        rows = state.searches.get(d, ({}, []))[1]
        return rows[0] if rows and isinstance(rows[0], dict) else None

    def _book_or_ask(self, state: Dialogue, d: str) -> dict[str, Any]:
        row = self._offered(state, d)
        assert row is not None
        belief = state.belief[d]
        missing = [k for k in BOOK_NEEDS[d] if k not in belief]
        if missing:
            return _text(self._missing_question(state, d))
        uid = UID_KEY[d]
        args = {**{k: belief[k] for k in BOOK_NEEDS[d]}, uid: str(row.get(uid))}
        for tried, result in state.bookings.get(d, []):
            if tried == args:
                if isinstance(result, dict) and result.get("success"):
                    return _text(f"That booking is already confirmed; the reference number is "
                                 f"{result.get('reference')}.")
                return _text("Sorry, that is not available. Would you like to try another day or time?")
        if state.calls_this_turn >= 2:
            return _text(self._present(state, d))
        return self._call(state, f"book_{d}", args)

    def _missing_question(self, state: Dialogue, d: str) -> str:
        belief = state.belief[d]
        asks = [QUESTIONS["book_time" if k == "time" else k] for k in BOOK_NEEDS.get(d, ()) if k not in belief]
        return " ".join(asks) or "Could you tell me the details of the booking again?"

    def _question(self, state: Dialogue, d: str, always: bool = False) -> str:
        belief, dontcare = state.belief[d], state.dontcare[d]
        for slot in ASK_ORDER[d]:
            keys = ("leaveAt", "arriveBy") if slot == "time" else (slot,)
            if not any(k in belief or k in dontcare for k in keys) and slot not in dontcare:
                return QUESTIONS[slot]
        return OFFER[d] if not always else "What are you looking for?"

    def _present(self, state: Dialogue, d: str) -> str:
        args, rows = state.searches.get(d, ({}, []))
        if not rows:
            return (f"Sorry, I still could not find a {NOUN[d]} {_describe_args(args)}. "
                    "Would you like to try something else?")
        count = "at least 3" if len(rows) >= 3 else str(len(rows))
        noun = NOUN[d] if len(rows) == 1 else NOUNS[d]
        text = f"I found {count} {noun} matching your request. {_describe(d, rows[0])}."
        if state.last and state.last.requests:
            text += " " + self._answers(rows[0], state.last.requests)
        text += " " + (self._question(state, d) if len(rows) > 1 else OFFER[d])
        return text

    @staticmethod
    def _answers(row: Mapping[str, Any], requests: list[str]) -> str:
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

    def _call(self, state: Dialogue, name: str, args: dict[str, str]) -> dict[str, Any]:
        call = {"id": f"call_{state.n_calls}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}


def _text(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def _load_args(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments: JSON text (the wire format) or already a dict."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            return {}
    return arguments if isinstance(arguments, dict) else {}


def _load(content: Any) -> Any:
    """A tool message's JSON result, or its text when it is an error string."""
    if not isinstance(content, str):
        return content
    try:
        return json.loads(content)
    except json.JSONDecodeError:
        return content


def _a(word: Any) -> str:
    return f"{'an' if str(word)[:1] in 'aeiou' else 'a'} {word}"


ARG_PHRASES = {"food": "serving {} food", "pricerange": "in the {} price range", "area": "in the {}",
               "name": "called {}", "type": "of type {}", "stars": "with {} stars", "departure": "from {}",
               "destination": "to {}", "day": "on {}", "leaveAt": "leaving after {}", "arriveBy": "arriving by {}",
               "people": "for {} people", "time": "at {}", "stay": "for {} nights"}


def _describe_args(args: Mapping[str, Any]) -> str:
    """Search or booking arguments in words: 'serving french food in the centre'."""
    parts = []
    for key, value in args.items():
        if key in ("parking", "internet"):
            label = "wifi" if key == "internet" else "parking"
            parts.append(f"with free {label}" if value == "yes" else f"without free {label}")
        else:
            parts.append(ARG_PHRASES.get(key, key + " {}").format(value))
    return " ".join(parts)


def _describe(d: str, row: Mapping[str, Any]) -> str:
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
