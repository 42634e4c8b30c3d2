"""Value normalisation and the subset test shared by tools and rewards (reference §3.2, §4.1)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

# "Unconstrained" spellings, as the reference lists them, and as they read after normalisation.
EMPTY_VALUES = frozenset({"", "dont care", "don't care", "dontcare", "do n't care", "not mentioned"})
_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
_SPACES = re.compile(r"\s+")
_TIME = re.compile(r"^(\d{1,2})\s*[:.]\s*(\d{2})$")


def reference_normalise(value: Any) -> Any:
    """The reference's normalisation: lowercase, delete every `'`; non-strings untouched."""
    return value.lower().replace("'", "") if isinstance(value, str) else value


def normalise(value: str) -> str:
    """Our normalisation (`fixed`): lowercase, no apostrophes, single spaces, trimmed. Idempotent."""
    return _SPACES.sub(" ", _APOSTROPHES.sub("", value.lower())).strip()


def is_empty(value: Any) -> bool:
    """True for values that mean "no constraint" (None, '', 'dontcare', 'not mentioned', ...)."""
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    return value in EMPTY_VALUES or normalise(value) in _EMPTY_NORMALISED


_EMPTY_NORMALISED = frozenset(normalise(v) for v in EMPTY_VALUES)


def parse_time(value: str) -> int | None:
    """'9:05' / '09.05' -> minutes after midnight (545); None if it is not a time. Allows up to 24:59."""
    m = _TIME.match(value.strip())
    if not m:
        return None
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours > 24 or minutes > 59:
        return None
    return hours * 60 + minutes


def format_time(minutes: int) -> str:
    """545 -> '09:05'."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def canonical(param: str, value: str) -> str:
    """Normalised value of `param`: times become zero-padded HH:MM when they parse."""
    norm = normalise(value)
    if param in ("leaveAt", "arriveBy", "time"):
        minutes = parse_time(norm)
        if minutes is not None:
            return format_time(minutes)
    return norm


def clean(params: Mapping[str, Any]) -> dict[str, Any]:
    """Reference §4.1: drop empty values, lowercase strings and delete apostrophes."""
    return {k: reference_normalise(v) for k, v in params.items() if not is_empty(v)}


def is_subset(sub: Mapping[str, Any], main: Mapping[str, Any]) -> bool:
    """Reference §4.1: every non-empty (key, value) of `sub` appears identically in `main` after cleaning."""
    return contains_clean(main, clean(sub))


def contains_clean(main: Mapping[str, Any], cleaned: Mapping[str, Any]) -> bool:
    """`is_subset(sub, main)` for `cleaned = clean(sub)`, cleaning only the keys asked about (= every key of
    `cleaned` is in `clean(main)` with its value): parity search checks every row of a table against one goal."""
    return all(k in main and not is_empty(main[k]) and reference_normalise(main[k]) == v for k, v in cleaned.items())


# -- untrusted values ----------------------------------------------------------------------------------------
#
# Model output is untrusted bytes: JSON text may decode to lone surrogates ("\ud800"), which no UTF-8 store
# (DuckDB, Arrow, a tokenizer) accepts, to non-finite floats, or to absurd nesting. Every value that reaches a
# query or the warehouse goes through `storable` / `to_json` first, so it can always be written.

MAX_DEPTH = 32  # nesting kept in a stored value; anything deeper is replaced by a marker string
DEEP_MARKER = "<nested deeper than 32 levels>"


def storable_text(text: str) -> str:
    """`text` as valid Unicode: each lone surrogate becomes U+FFFD (a surrogate pair becomes its character)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def is_valid_text(text: str) -> bool:
    """No lone surrogate and no NUL: text a tool argument may hold."""
    return "\x00" not in text and storable_text(text) == text


def storable(value: Any, depth: int = 0) -> Any:
    """A copy of a JSON-like value that any store accepts: text valid Unicode, NaN/inf as the strings
    'NaN'/'Infinity'/'-Infinity', integers too long to print as a marker, tuples as lists, keys as text,
    nesting cut at MAX_DEPTH; other objects (datetimes, ...) are returned as they are."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INT_BITS:
        return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, (dict, list, tuple)):
        if depth >= MAX_DEPTH:
            return DEEP_MARKER
        if isinstance(value, dict):
            return {storable_text(str(k)): storable(v, depth + 1) for k, v in value.items()}
        return [storable(v, depth + 1) for v in value]
    return value


_MAX_INT_BITS = 13_000  # ~3,900 decimal digits: below Python's 4,300-digit str() limit


def to_json(value: Any) -> str:
    """Strict JSON text of an untrusted value (see `storable`); never raises."""
    try:
        text = json.dumps(value, allow_nan=False)
        if "\\ud" not in text and "\\uD" not in text:  # no surrogate escape: nothing to repair
            return text
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return json.dumps(storable(value), allow_nan=False, default=str)
    except (ValueError, TypeError, RecursionError):  # an int too long to print, ...
        return json.dumps(storable_text(type(value).__name__))
