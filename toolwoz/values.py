"""Value normalisation and the subset test shared by tools and rewards (reference §3.2, §4.1)."""

from __future__ import annotations

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
    main_clean = clean(main)
    return all(k in main_clean and main_clean[k] == v for k, v in clean(sub).items())
