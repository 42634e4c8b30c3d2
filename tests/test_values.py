"""Laws of value normalisation, the empty test, the subset test and time parsing (toolwoz.values)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from toolwoz.values import (
    EMPTY_VALUES,
    canonical,
    clean,
    contains_clean,
    format_time,
    is_empty,
    is_subset,
    normalise,
    parse_time,
)

PARAMS = ("leaveAt", "arriveBy", "time", "name", "food", "day", "people")
# Text that might be a time ("9:05", " 09 . 05", "24:59") mixed with arbitrary text.
time_like = st.builds(
    lambda h, sep, m, pad: f"{pad}{h}{sep}{m:02d}{pad}",
    st.integers(0, 99), st.sampled_from([":", ".", " : ", "\u00a0:"]), st.integers(0, 99), st.sampled_from(["", " "]),
)
any_text = st.text() | time_like

# Dict values for the subset laws: a small pool so keys often collide, spelled in mixed case / with apostrophes.
WORDS = ("centre", "king's college", "cheap", "4", "09:15", "Italian")
KEYS = ("a", "b", "c", "d")


def respell(value: str, data: st.DataObject) -> str:
    """A spelling of `value` the subset test must treat as equal: random case and an extra apostrophe."""
    chars = [c.upper() if data.draw(st.booleans()) else c.lower() for c in value]
    if data.draw(st.booleans()):
        chars.insert(data.draw(st.integers(0, len(chars))), "'")
    return "".join(chars)


def empty_spelling(data: st.DataObject) -> str | None:
    return data.draw(st.sampled_from([None, "", "dontcare", "Don't Care", "NOT MENTIONED", "do n't care"]))


plain_dicts = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(WORDS) | st.integers(0, 5), max_size=4)


@given(any_text)
def test_normalise_is_idempotent(value: str) -> None:
    once = normalise(value)
    assert normalise(once) == once


@given(st.sampled_from(PARAMS), any_text)
def test_canonical_is_idempotent_per_param(param: str, value: str) -> None:
    once = canonical(param, value)
    assert canonical(param, once) == once


def test_canonical_pads_times_only_for_time_params() -> None:
    assert canonical("leaveAt", " 9.05 ") == "09:05"
    assert canonical("time", "9:05") == "09:05"
    assert canonical("name", "9:05") == "9:05"
    assert canonical("name", "  King's   College ") == "kings college"


@given(st.sampled_from(sorted(EMPTY_VALUES)), st.data())
def test_every_empty_spelling_is_empty_in_any_case(spelling: str, data: st.DataObject) -> None:
    cased = "".join(c.upper() if data.draw(st.booleans()) else c.lower() for c in spelling)
    assert is_empty(cased)


def test_none_is_empty_and_real_values_are_not() -> None:
    assert is_empty(None)
    for value in ("centre", "dontcares", "care", "0", 0, False, "not"):
        assert not is_empty(value), value


with_empties = st.dictionaries(st.sampled_from(KEYS), st.sampled_from([None, "", "dontcare", "Don't Care", *WORDS]),
                               max_size=4)


@given(plain_dicts | with_empties, plain_dicts | with_empties)
def test_subset_cleans_only_the_keys_asked_about_and_agrees_with_the_definition(sub: dict, main: dict) -> None:
    main_clean = clean(main)  # reference §4.1, literally: clean both, compare the pairs of `sub`
    expected = all(k in main_clean and main_clean[k] == v for k, v in clean(sub).items())
    assert is_subset(sub, main) == contains_clean(main, clean(sub)) == expected


@given(plain_dicts)
def test_subset_is_reflexive(d: dict) -> None:
    assert is_subset(d, d)


@given(plain_dicts)
def test_empty_dict_is_subset_of_anything(d: dict) -> None:
    assert is_subset({}, d)


@given(plain_dicts, st.data())
def test_subset_is_transitive(c: dict, data: st.DataObject) -> None:
    # Build a ⊆ b ⊆ c from sub-dicts with re-spelled values, then check the law on the three dicts.
    b_keys = data.draw(st.sets(st.sampled_from(sorted(c)))) if c else set()
    b = {k: respell(v, data) if isinstance(v, str) else v for k, v in c.items() if k in b_keys}
    a_keys = data.draw(st.sets(st.sampled_from(sorted(b)))) if b else set()
    a = {k: respell(v, data) if isinstance(v, str) else v for k, v in b.items() if k in a_keys}
    assert is_subset(a, b) and is_subset(b, c)
    assert is_subset(a, c)


@given(plain_dicts, plain_dicts, plain_dicts)
def test_subset_transitivity_on_unrelated_dicts(a: dict, b: dict, c: dict) -> None:
    if is_subset(a, b) and is_subset(b, c):
        assert is_subset(a, c)


@given(plain_dicts, st.sampled_from(("x", "y")), st.sampled_from(WORDS) | st.integers(0, 5))
def test_extra_non_empty_key_breaks_subset(d: dict, key: str, value: object) -> None:
    bigger = {**d, key: value}
    assert is_subset(d, bigger)
    assert not is_subset(bigger, d)


@given(plain_dicts, plain_dicts, st.data())
def test_empty_values_are_ignored_on_both_sides(a: dict, b: dict, data: st.DataObject) -> None:
    expected = is_subset(a, b)
    a_padded = {**a, **{f"e{i}": empty_spelling(data) for i in range(data.draw(st.integers(0, 3)))}}
    b_padded = {**b, **{f"f{i}": empty_spelling(data) for i in range(data.draw(st.integers(0, 3)))}}
    assert is_subset(a_padded, b) == expected
    assert is_subset(a, b_padded) == expected
    assert is_subset(a_padded, b_padded) == expected


def test_subset_compares_cleaned_values_exactly() -> None:
    assert is_subset({"name": "King's College"}, {"name": "kings college", "area": "centre"})
    assert not is_subset({"people": "4"}, {"people": 4})  # reference §4.1: "4" != 4
    assert not is_subset({"area": "centre"}, {"area": "dontcare"})


@given(st.integers(0, 24), st.integers(0, 59))
def test_time_round_trip(hours: int, minutes: int) -> None:
    text = f"{hours:02d}:{minutes:02d}"
    assert parse_time(text) == hours * 60 + minutes
    assert format_time(parse_time(text)) == text
    assert parse_time(f"{hours}:{minutes:02d}") == hours * 60 + minutes


@given(st.integers(0, 24 * 60 + 59))
def test_format_then_parse_is_identity(minutes: int) -> None:
    assert parse_time(format_time(minutes)) == minutes


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs"))))
def test_parse_time_rejects_text_without_digits(value: str) -> None:
    assert parse_time(value) is None


@given(st.integers(0, 99), st.integers(0, 99))
def test_parse_time_accepts_exactly_hours_to_24_and_minutes_to_59(hours: int, minutes: int) -> None:
    assert (parse_time(f"{hours:02d}:{minutes:02d}") is None) == (hours > 24 or minutes > 59)


def test_parse_time_rejects_junk() -> None:
    for junk in ("", "noon", "25:00", "12:60", "1234", "12:5", "12:345", "-1:30", "12:30pm", "1:2:3"):
        assert parse_time(junk) is None, junk
