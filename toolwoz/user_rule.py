"""Agenda-based rule user simulator: the CPU default customer (../shared/spec/simulators.md, "User simulators").

`RuleUser(goal, seed).reply(history)` is a pure function of (goal, seed, history): the agenda state is
replayed from the visible conversation on every call, so a JOSH tree can branch conversations freely.
The user reads only the agent's text, never tool calls, rewards or the task's ground truth. It works
domain by domain, reveals the goal's constraints verbatim (the doomed `fail_info` / `fail_book` first),
asks to book or for the requested attributes once something is offered, and ends with `END_CONVERSATION`.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, replace
from typing import Any

from toolwoz.schemas import END_CONVERSATION as END
from toolwoz.values import is_empty

MAX_TURNS = 15  # the user hangs up politely on its 15th turn at the latest
MAX_STRIKES = 3  # agent replies without progress on one step before the user gives up
FALLBACK_ORDER = ("hotel", "attraction", "train", "restaurant")
BOOK_SLOTS = ("people", "day", "time", "stay")

# Which words in the goal's instruction sentences introduce a domain.
MESSAGE_CUES = {
    "hotel": ("place to stay", "hotel", "guesthouse", "guest house"),
    "restaurant": ("restaurant", "place to dine", "place to eat"),
    "attraction": ("attraction", "places to go", "place to go"),
    "train": ("train",),
}
# Search slots in the order the user reveals them.
REVEAL_ORDER = {
    "restaurant": ("name", "food", "area", "pricerange"),
    "hotel": ("name", "type", "area", "pricerange", "stars", "parking", "internet"),
    "attraction": ("name", "type", "area"),
    "train": ("departure", "destination", "day", "leaveAt", "arriveBy"),
}
# Agent question keywords -> slot (checked on the agent's question sentences only).
QUESTION_CUES: tuple[tuple[str, str], ...] = (
    (r"\b(area|part of town|side of town|location|where in)\b", "area"),
    (r"\bprice|budget\b", "pricerange"),
    (r"\b(food|cuisine)\b", "food"),
    (r"\b(type|kind|guesthouse or|hotel or)\b", "type"),
    (r"\bstars?\b", "stars"),
    (r"\bparking\b", "parking"),
    (r"\b(wifi|internet)\b", "internet"),
    (r"\b(depart\w*|from|leaving from|starting point)\b", "departure"),
    (r"\b(destination|going to|heading|travel\w* to|where to)\b", "destination"),
    (r"\b(leave|leaving|departure time|what time|when)\b", "leaveAt"),
    (r"\b(arrive|arriving|arrival|what time|when)\b", "arriveBy"),
    (r"\b(day|which day|what day|when)\b", "day"),
    (r"\b(people|how many|guests|party|tickets|persons)\b", "people"),
    (r"\b(nights|how long|stay)\b", "stay"),
    (r"\bwhat time\b", "time"),
)
NO_MATCH = re.compile(
    r"\b(sorry|unfortunately|no (\w+ ){0,2}(match\w*|results?|availability|trains?|restaurants?|hotels?|places?|"
    r"attractions?|guesthouses?|options?|rooms?|tables?|seats?)|(not|couldn'?t|could not|cannot|can'?t|unable to)"
    r" (find|book|locate)|not find|unavailable|not available|fully booked|nothing (matches|available))\b",
    re.IGNORECASE)
# The agent offers something: a train id, a booking question, a recommendation or a found result.
OFFERED = re.compile(r"\b(tr ?\d{4}|shall i|how about|i recommend|i suggest|i (have )?found|there (is|are)|"
                     r"available|matching|book\w*|reserv\w*|more (information|details))\b", re.IGNORECASE)
REFERENCE = re.compile(r"\breference\b|\b(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{8}\b")

# Surface templates; {c} is a list of constraint phrases, values always verbatim from the goal.
INTENT = {
    "restaurant": ("I'm looking for a restaurant", "I need somewhere to eat", "Can you help me find a restaurant",
                   "I'd like to find a place to dine"),
    "hotel": ("I need a place to stay", "I'm looking for somewhere to stay", "Can you help me find accommodation",
              "I'd like to find lodgings"),
    "attraction": ("I'm looking for an attraction", "Can you suggest an attraction", "I want to find an attraction",
                   "I'd like to find an attraction to visit"),
    "train": ("I need a train", "I'm looking for a train", "Can you help me find a train", "I'd like to take a train"),
}
GREETING = ("Hi! ", "Hello, ", "", "Good day. ")
ACK = ("Great, thanks. ", "Thank you. ", "Perfect. ", "Thanks, that's helpful. ")
OPEN = ("{greet}{intent} {c}.", "{greet}{intent}. I'd like something {c}.", "{greet}{intent}, {c} please.")
REVEAL = ("I'd like something {c}.", "It should be {c}.", "Also, {c} please.", "I forgot to mention: {c}.",
          "I'm after one {c}.")
TRAIN_REVEAL = ("The train should be {c}.", "I'd like one {c}.", "Also, {c} please.", "I need it {c}.")
DONTCARE = ("I don't mind the {s}.", "Any {s} is fine.", "I have no preference on the {s}.")
SWITCH = ("How about one {c} instead?", "Then could you try {c} instead?", "Okay, what about {c} then?")
SUGGEST = ("Could you suggest one?", "What would you recommend?", "Do you have anything like that?")
RESTATE = ("Let me repeat: I'm looking for one {c}.", "To be clear, I need one {c}.",
           "Could you check again for one {c}?")
BOOK = {
    "restaurant": ("Please book a table {c}.", "Could you reserve a table {c}?", "I'd like to book it {c}."),
    "hotel": ("Please book it {c}.", "Could you make a reservation {c}?", "I'd like to book it {c}."),
    "train": ("Please book it {c}.", "Could you book tickets {c}?", "I'd like to book {c}."),
}
REBOOK = ("Could you try {c} instead?", "How about {c} then?", "Then please try {c}.")
REQUEST = ("Could you give me the {r}?", "What is the {r}?", "Can you tell me the {r}?")
ALSO_REQUEST = (" Could you also give me the {r}?", " Also, what is the {r}?", " And can you tell me the {r}?")
BYE = ("Thank you, that's all I need. " + END, "Great, thanks for your help! " + END,
       "That's everything, thanks. Goodbye! " + END)
MOVE_ON = ("Never mind, let's leave that. ", "Okay, forget that one. ", "That's fine, let's move on. ")
GIVE_UP = ("That's alright, I'll look elsewhere. Thanks anyway. " + END,
           "Never mind, thank you for trying. " + END, "Okay, I'll sort it out myself. Goodbye. " + END)

SLOT_PHRASES: dict[str, tuple[str, ...]] = {
    "area": ("in the {v}", "in the {v} part of town", "in the {v} area"),
    "pricerange": ("in the {v} price range", "with a {v} price", "in the {v} range"),
    "food": ("serving {v} food", "that serves {v} food", "with {v} food"),
    "name": ("called {v}", "named {v}"),
    "type": ("of type {v}", "that is a {v}", "which is a {v}"),
    "stars": ("with {v} stars", "rated {v} stars", "with a {v} star rating"),
    "parking=yes": ("with free parking", "that has free parking", "including free parking"),
    "parking=no": ("that doesn't need to have free parking",),
    "internet=yes": ("with free wifi", "that has free wifi", "including free wifi"),
    "internet=no": ("that doesn't need to have free wifi",),
    "departure": ("from {v}", "departing from {v}", "leaving from {v}"),
    "destination": ("to {v}", "going to {v}", "heading to {v}"),
    "day": ("on {v}", "for {v}", "travelling on {v}"),
    "leaveAt": ("leaving after {v}", "departing after {v}", "that leaves after {v}"),
    "arriveBy": ("arriving by {v}", "that arrives by {v}", "getting there by {v}"),
}
BOOK_PHRASES = {
    "people": ("for {v} people", "for a group of {v} people"),
    "people=1": ("for 1 person", "for just 1 person"),
    "train_people": ("for {v} people", "for {v} passengers"),
    "day": ("on {v}", "for {v}"),
    "hotel_day": ("starting on {v}", "from {v}"),
    "time": ("at {v}",),
    "stay": ("for {v} nights", "for a stay of {v} nights"),
    "stay=1": ("for 1 night",),
}
DONTCARE_NAMES = {"area": "area", "pricerange": "price range", "food": "type of food", "type": "type",
                  "stars": "star rating", "parking": "parking", "internet": "wifi", "name": "name"}
REQT_NAMES = {"phone": "phone number", "address": "address", "postcode": "postcode", "area": "area",
              "pricerange": "price range", "type": "type", "food": "type of food", "stars": "star rating",
              "internet": "wifi situation", "parking": "parking situation", "entrance fee": "entrance fee",
              "price": "ticket price", "duration": "travel time", "leaveAt": "departure time",
              "arriveBy": "arrival time", "trainID": "train ID", "openhours": "opening hours"}


@dataclass(frozen=True)
class _State:
    """Where the user is in its agenda; rebuilt from the history on every `reply`."""

    idx: int = 0  # current domain (index into RuleUser.order)
    phase: str = "search"  # search | book | reqt
    use_fail: bool = False  # still pursuing the doomed fail_info constraints
    use_fail_book: bool = False
    revealed: frozenset[str] = frozenset()
    strikes: int = 0
    pending: str = ""  # switch | rebook | restate | suggest: a reaction decided when observing the agent
    opened: bool = False  # current domain introduced
    requested: bool = False  # reqt asked for the current domain
    ended: bool = False
    acked: bool = False  # the previous domain was finished (prefix the next opening with thanks)


def stable_rng(seed: int, n: int) -> random.Random:
    """RNG for the user turn that follows `n` history messages; independent of Python's hash salt."""
    digest = hashlib.sha256(f"rule-user:{seed}:{n}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def domain_order(goal: dict[str, Any]) -> list[str]:
    """Goal domains in the order the goal's message first mentions them (fallback order otherwise)."""
    present = [d for d in FALLBACK_ORDER if goal.get(d)]
    message = goal.get("message") or []
    text = [re.sub(r"<[^>]+>", "", m).lower() for m in ([message] if isinstance(message, str) else message)]
    first: dict[str, tuple[int, int]] = {}
    for d in present:
        for i, sentence in enumerate(text):
            hits = [sentence.find(cue) for cue in MESSAGE_CUES[d] if cue in sentence]
            if hits:
                first[d] = (i, min(hits))
                break
    fallback = (10**6, 0)
    return sorted(present, key=lambda d: (first.get(d, fallback), FALLBACK_ORDER.index(d)))


def _clean(values: dict[str, Any] | None) -> dict[str, str]:
    # Goal dicts also hold booleans (`invalid`, `pre_invalid`): only strings and numbers are values.
    return {k: str(v) for k, v in (values or {}).items()
            if isinstance(v, (str, int)) and not isinstance(v, bool) and not is_empty(str(v))}


_SENTENCE_END = re.compile(r"[.!?]")


def _questions(text: str) -> str:
    """The agent's question sentences, lowercased: each `?` with the text since the previous `.`, `!` or `?`.

    The same sentences as `re.findall(r"[^.!?]*[?]", text)`, in one pass: that regex retries every start position
    of a long run without `?`, quadratic in the reply's length (a 40,000-character reply took 3 s).
    """
    lowered, start, questions = text.lower(), 0, []
    for end in _SENTENCE_END.finditer(lowered):
        if end.group() == "?":
            questions.append(lowered[start:end.end()])
        start = end.end()
    return " ".join(questions)


def asked_slots(text: str) -> set[str]:
    """Slots the agent asks about in its question sentences."""
    questions = _questions(text)
    return {slot for pattern, slot in QUESTION_CUES if re.search(pattern, questions)}


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


class RuleUser:
    """A deterministic, goal-driven customer that sees only the MultiWOZ goal and the agent's text."""

    def __init__(self, goal: dict[str, Any], seed: int = 0):
        self.goal, self.seed = goal, seed
        self.order = domain_order(goal)

    # -- goal views ---------------------------------------------------------------------------------------

    def _info(self, domain: str, fail: bool) -> dict[str, str]:
        info = _clean(self.goal[domain].get("info"))
        if fail:
            info.update(_clean(self.goal[domain].get("fail_info")))
        order = REVEAL_ORDER[domain]
        return dict(sorted(info.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))

    def _book(self, domain: str, fail: bool) -> dict[str, str]:
        book = {k: v for k, v in _clean(self.goal[domain].get("book")).items() if k in BOOK_SLOTS}
        if fail:
            book.update({k: v for k, v in _clean(self.goal[domain].get("fail_book")).items() if k in BOOK_SLOTS})
        return book

    def _has_fail(self, domain: str) -> bool:
        # Some goals repeat `info` as `fail_info`: nothing is doomed then.
        return self._info(domain, True) != self._info(domain, False)

    def _has_fail_book(self, domain: str) -> bool:
        return bool(self._book(domain, False)) and self._book(domain, True) != self._book(domain, False)

    def _reqt(self, domain: str) -> list[str]:
        return [r for r in self.goal[domain].get("reqt") or [] if r in REQT_NAMES]

    # -- the public entry point ---------------------------------------------------------------------------

    def reply(self, history: list[dict[str, str]]) -> str:
        """The user's next message given the visible conversation (text turns only)."""
        if not self.order:
            return stable_rng(self.seed, len(history)).choice(BYE)
        state, text, agent_text, started = self._start(), "", "", False
        for i, message in enumerate([*history, {"role": "user", "content": ""}]):
            if message.get("role") == "assistant":
                agent_text += " " + (message.get("content") or "")
            if message.get("role") != "user":
                continue
            if started:
                state = self._observe(state, agent_text)
            turn = sum(m["role"] == "user" for m in history[:i])
            state, text = self._plan(state, stable_rng(self.seed, i), agent_text, turn)
            agent_text, started = "", True
        return text

    def _start(self, idx: int = 0, acked: bool = False) -> _State:
        if idx >= len(self.order):
            return _State(idx=idx, acked=acked)
        d = self.order[idx]
        return _State(idx=idx, use_fail=self._has_fail(d), use_fail_book=self._has_fail_book(d), acked=acked)

    # -- observing the agent -----------------------------------------------------------------------------

    def _next_phase(self, s: _State) -> _State:
        """After the search: book, ask for attributes, or move to the next domain."""
        d = self.order[s.idx]
        if self._book(d, False):
            return replace(s, phase="book", strikes=0, pending="")
        if self._reqt(d):
            return replace(s, phase="reqt", strikes=0, pending="")
        return self._start(s.idx + 1, acked=True)

    def _observe(self, s: _State, agent: str) -> _State:
        """Update the agenda after the agent's reply to the user's last act."""
        if s.ended or s.idx >= len(self.order):
            return s
        d = self.order[s.idx]
        failed = bool(NO_MATCH.search(agent))
        if s.phase == "search":
            target = self._info(d, s.use_fail)
            if s.use_fail and (failed or set(target) <= s.revealed):
                return replace(s, use_fail=False, pending="switch", strikes=0)
            if failed:
                return replace(s, strikes=s.strikes + 1, pending="restate" if set(target) <= s.revealed else "")
            if set(target) <= s.revealed:
                if OFFERED.search(agent):
                    return self._next_phase(s)
                return replace(s, strikes=s.strikes + 1, pending="suggest")
            return replace(s, pending="")
        if s.phase == "book":
            if failed and s.use_fail_book:
                return replace(s, use_fail_book=False, pending="rebook", strikes=0)
            if REFERENCE.search(agent) and not failed:
                return self._start(s.idx + 1, acked=True)
            return replace(s, strikes=s.strikes + 1, pending="rebook")
        if failed:  # reqt
            return replace(s, strikes=s.strikes + 1, requested=False)
        return self._start(s.idx + 1, acked=True)

    # -- planning and surface text ------------------------------------------------------------------------

    def _plan(self, s: _State, rng: random.Random, agent: str, turn: int) -> tuple[_State, str]:
        """The next act and its surface text."""
        if s.ended:
            return s, END
        if s.idx >= len(self.order):
            return replace(s, ended=True), rng.choice(BYE)
        if turn >= MAX_TURNS - 1 or (s.strikes >= MAX_STRIKES and s.idx == len(self.order) - 1):
            return replace(s, ended=True), rng.choice(GIVE_UP)
        if s.strikes >= MAX_STRIKES:  # give up on this domain, carry on with the next one
            s = self._start(s.idx + 1, acked=False)
            s, text = self._plan(s, rng, "", turn)
            return s, rng.choice(MOVE_ON) + text
        d = self.order[s.idx]
        if s.phase == "search":
            return self._plan_search(s, d, rng, agent)
        if s.phase == "book":
            return self._plan_book(s, d, rng)
        reqt = _join([REQT_NAMES[r] for r in self._reqt(d)])
        return replace(s, requested=True), rng.choice(REQUEST).format(r=reqt)

    def _plan_search(self, s: _State, d: str, rng: random.Random, agent: str) -> tuple[_State, str]:
        target = self._info(d, s.use_fail)
        unrevealed = [k for k in target if k not in s.revealed]
        if not s.opened:
            n = rng.choice((1, 2)) if d != "train" else 2
            say = unrevealed[:n]
            greet = rng.choice(ACK) if s.acked and s.idx > 0 else rng.choice(GREETING) if s.idx == 0 else ""
            text = rng.choice(OPEN).format(greet=greet, intent=rng.choice(INTENT[d]),
                                           c=self._phrases(target, say, rng))
            return replace(s, opened=True, revealed=s.revealed | set(say), acked=False), text
        if s.pending == "switch":
            info, fail = self._info(d, False), self._info(d, True)
            changed = [k for k in info if info[k] != fail.get(k)]
            say = changed + [k for k in info if k not in changed and k not in s.revealed][:2]
            text = rng.choice(SWITCH).format(c=self._phrases(info, say, rng))
            return replace(s, pending="", revealed=s.revealed | set(say)), text
        asked = asked_slots(agent)
        # Slots the agent asks about that the goal leaves open: say so (never invent a value).
        dontcare = [k for k in DONTCARE_NAMES if k in asked and k not in target and k in REVEAL_ORDER[d]][:2]
        parts = [rng.choice(DONTCARE).format(s=_join([DONTCARE_NAMES[k] for k in dontcare]))] if dontcare else []
        if s.pending == "suggest":
            return replace(s, pending=""), " ".join([*parts, rng.choice(SUGGEST)])
        if s.pending == "restate" or not unrevealed:
            text = rng.choice(RESTATE).format(c=self._phrases(target, list(target), rng))
            return replace(s, pending="", revealed=s.revealed | set(target)), text
        answer = [k for k in unrevealed if k in asked or (k in ("leaveAt", "arriveBy") and "time" in asked)]
        say = answer + [k for k in unrevealed if k not in answer][: rng.choice((2, 3))]
        templates = TRAIN_REVEAL if d == "train" else REVEAL
        parts.append(rng.choice(templates).format(c=self._phrases(target, say, rng)))
        return replace(s, revealed=s.revealed | set(say)), " ".join(parts)

    def _plan_book(self, s: _State, d: str, rng: random.Random) -> tuple[_State, str]:
        book = self._book(d, s.use_fail_book)
        slots = _join(self._book_phrases(d, book, rng))
        if s.pending == "rebook":
            return replace(s, pending=""), rng.choice(REBOOK).format(c=slots)
        text = rng.choice(BOOK[d]).format(c=slots)
        if self._reqt(d) and not s.requested:
            text += rng.choice(ALSO_REQUEST).format(r=_join([REQT_NAMES[r] for r in self._reqt(d)]))
        return replace(s, requested=True), text

    @staticmethod
    def _phrases(values: dict[str, str], keys: list[str], rng: random.Random) -> str:
        """Constraint phrases for `keys`, values verbatim: 'in the north and with free parking'."""
        parts = []
        for k in keys:
            key = f"{k}={values[k]}" if k in ("parking", "internet") else k
            templates = SLOT_PHRASES.get(key, ("with " + k + " {v}",))  # unexpected values: said as they are
            parts.append(rng.choice(templates).format(v=values[k]))
        return _join(parts)

    @staticmethod
    def _book_phrases(domain: str, book: dict[str, str], rng: random.Random) -> list[str]:
        """Booking slot phrases: 'for 3 people', 'for 2 nights', 'starting on friday', 'at 18:45'."""
        parts = []
        for k in ("people", "stay", "day", "time"):
            if k not in book:
                continue
            v = book[k]
            key = k
            if k == "people":
                key = "people=1" if v == "1" else "train_people" if domain == "train" else "people"
            elif k == "stay" and v == "1":
                key = "stay=1"
            elif k == "day" and domain == "hotel":
                key = "hotel_day"
            parts.append(rng.choice(BOOK_PHRASES[key]).format(v=v))
        return parts
