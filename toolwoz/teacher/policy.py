"""The teacher's dialogue policy: from what `understanding.read` makes of the conversation to ONE assistant
message (a tool call or text): search -> present -> book -> report.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from toolwoz.schemas import UID_KEY
from toolwoz.teacher import understanding
from toolwoz.teacher.phrases import NOUN, NOUNS, OFFER, QUESTIONS, answers, describe_args, describe_row, say
from toolwoz.teacher.understanding import BOOK_NEEDS, SEARCH_SLOTS, Dialogue, Lexicon, Message, Parse

# Slots the teacher asks about while a search has several matches, in order.
ASK_ORDER = {"restaurant": ("food", "area", "pricerange"), "hotel": ("area", "pricerange", "type", "stars"),
             "attraction": ("type", "area"), "train": ("departure", "destination", "day", "time")}


class Teacher:
    """A rule-based ToolWOZ agent: lexicon NLU, belief state, search -> present -> book -> report."""

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon

    @classmethod
    def from_rows(cls, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> Teacher:
        """A teacher whose lexicon holds the values of `rows` (domain -> DB rows, e.g. `ToolEnv.rows`)."""
        return cls(Lexicon.from_rows(rows))

    def parse(self, text: str, active: str | None, asked: Collection[str] = ()) -> Parse:
        """Read one user message (see `understanding.parse`)."""
        return understanding.parse(self.lexicon, text, active, asked)

    def read(self, messages: Sequence[Message]) -> Dialogue:
        """Belief state, searches and bookings of the conversation so far (see `understanding.read`)."""
        return understanding.read(self.lexicon, messages)

    # -- acting ---------------------------------------------------------------------------------------------

    def next_message(self, messages: Sequence[Message]) -> dict[str, Any]:
        """The next assistant message: one tool call or a text reply."""
        state = self.read(messages)
        last, d = state.last, state.active
        if last is None:
            return say("Hello! How can I help you with your trip to Cambridge?")
        if last.end:
            return say("You're welcome. Have a great trip, goodbye!")
        if d is None:
            return say("How can I help you? I can find restaurants, places to stay, attractions and trains.")
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
                return say(answers(self._offered(state, d), last.requests) + " Anything else?")
            return say(self._present(state, d))
        if not constraints:
            return say(f"Sure, I can help you find a {NOUN[d]}. " + self._question(state, d, always=True))
        return say(self._present(state, d))

    def _after_tool(self, state: Dialogue, name: str, args: dict[str, str], result: Any) -> dict[str, Any]:
        """Text (or a booking right after a search) in reply to the tool result that ends the messages."""
        kind, _, domain = name.partition("_")
        last = state.last
        assert last is not None
        if kind == "search" and isinstance(result, list):
            if not result:
                return say(f"Sorry, there is no {NOUN[domain]} {describe_args(args)}. "
                           "Would you like to try something else?")
            if last.book and domain in BOOK_NEEDS and state.calls_this_turn < 2:
                return self._book_or_ask(state, domain)
            return say(self._present(state, domain))
        if kind == "book":
            if isinstance(result, dict) and result.get("success"):
                uid = UID_KEY[domain]
                text = (f"Your booking at {result.get(uid)} is confirmed. "
                        f"The reference number is {result.get('reference')}.")
                row = self._offered(state, domain)
                if last.requests and row is not None:
                    text += " " + answers(row, last.requests)
                return say(text + " Is there anything else I can help you with?")
            error = str(result)
            if "no availability" in error:
                slots = describe_args({k: v for k, v in args.items() if k != UID_KEY[domain]})
                other = "another day or length of stay" if domain == "hotel" else "another day or time"
                return say(f"Sorry, there is no availability {slots}. Would you like to try {other}?")
            return say(f"Sorry, I could not make that booking ({error[:80]}). "
                       + self._missing_question(state, domain))
        return say(f"Sorry, something went wrong: {str(result)[:100]}. Could you rephrase your request?")

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
            return say(self._missing_question(state, d))
        uid = UID_KEY[d]
        args = {**{k: belief[k] for k in BOOK_NEEDS[d]}, uid: str(row.get(uid))}
        for tried, result in state.bookings.get(d, []):
            if tried == args:
                if isinstance(result, dict) and result.get("success"):
                    return say(f"That booking is already confirmed; the reference number is "
                               f"{result.get('reference')}.")
                return say("Sorry, that is not available. Would you like to try another day or time?")
        if state.calls_this_turn >= 2:
            return say(self._present(state, d))
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
            return (f"Sorry, I still could not find a {NOUN[d]} {describe_args(args)}. "
                    "Would you like to try something else?")
        count = "at least 3" if len(rows) >= 3 else str(len(rows))
        noun = NOUN[d] if len(rows) == 1 else NOUNS[d]
        text = f"I found {count} {noun} matching your request. {describe_row(d, rows[0])}."
        if state.last and state.last.requests:
            text += " " + answers(rows[0], state.last.requests)
        text += " " + (self._question(state, d) if len(rows) > 1 else OFFER[d])
        return text

    def _call(self, state: Dialogue, name: str, args: dict[str, str]) -> dict[str, Any]:
        call = {"id": f"call_{state.n_calls}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}
