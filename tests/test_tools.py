"""The 8 ToolWOZ tools on the real MultiWOZ DB: schemas, both semantics, batching and bad input.

Expected rows come from a plain-Python filter of the MultiWOZ DB written here from the spec
(toolwoz.md "Tools", reference §3.2-3.3), never from toolwoz.tools helpers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REFERENCE_DIR
from toolwoz.errors import UnknownTask
from toolwoz.schemas import API_DEFS, tool_schemas
from toolwoz.tools import COMPACT_FIELDS, PARITY_INVALID, PARITY_LISTS, RESULTS, ErrorKind, ToolRequest

DOMAINS = ("restaurant", "hotel", "attraction", "train")
SEARCH_PARAMS = {
    "restaurant": ("food", "pricerange", "name", "area"),
    "hotel": ("name", "area", "parking", "pricerange", "stars", "internet", "type"),
    "attraction": ("type", "name", "area"),
    "train": ("leaveAt", "destination", "day", "arriveBy", "departure"),
}
UID = {"restaurant": "name", "hotel": "name", "attraction": "name", "train": "trainID"}
# The spec's "unconstrained" spellings, also as they read once apostrophes are deleted.
EMPTY = {"", "dont care", "don't care", "dontcare", "do n't care", "do nt care", "not mentioned"}
ALL_PARAMS = sorted({p for params, _ in API_DEFS.values() for p in params})


# -- an independent model of the DB filter -----------------------------------------------------------------

def fixed_norm(value: str) -> str:
    return " ".join(value.lower().replace("'", "").split())


def minutes(hhmm: str) -> int:
    hours, mins = hhmm.strip().split(":")
    return int(hours) * 60 + int(mins)


def fixed_match(row: dict[str, Any], args: dict[str, Any]) -> bool:
    """`fixed`: both sides normalised, leaveAt >= and arriveBy <= compared as minutes."""
    for key, value in args.items():
        if fixed_norm(value) in EMPTY:
            continue
        if key == "leaveAt":
            ok = minutes(row["leaveAt"]) >= minutes(value)
        elif key == "arriveBy":
            ok = minutes(row["arriveBy"]) <= minutes(value)
        else:
            ok = isinstance(row.get(key), str) and fixed_norm(row[key]) == fixed_norm(value)
        if not ok:
            return False
    return True


def parity_match(row: dict[str, Any], args: dict[str, Any]) -> bool:
    """Reference §3.3: the argument lowercased without `'`, raw DB strings, strict string time comparison."""
    for key, value in args.items():
        value = value.lower().replace("'", "")
        if value in EMPTY:
            continue
        if key == "leaveAt":
            ok = row["leaveAt"] > value
        elif key == "arriveBy":
            ok = row["arriveBy"] < value
        else:
            ok = row.get(key) == value
        if not ok:
            return False
    return True


# -- strategies --------------------------------------------------------------------------------------------

def respell(value: str, data: st.DataObject) -> str:
    """The value as an agent might type it: as is, upper, title case, or with an apostrophe inserted."""
    kind = data.draw(st.sampled_from(["same", "upper", "title", "apostrophe"]))
    if kind == "apostrophe":
        at = data.draw(st.integers(0, len(value)))
        return value[:at] + "'" + value[at:]
    return {"same": value, "upper": value.upper(), "title": value.title()}[kind]


def time_near(hhmm: str, data: st.DataObject) -> str:
    """A valid time near `hhmm` (maybe equal), sometimes without the hour's leading zero."""
    total = min(max(minutes(hhmm) + data.draw(st.sampled_from([0, 0, -1, 1, -60, 45, 120])), 0), 23 * 60 + 59)
    hours, mins = divmod(total, 60)
    return f"{hours}:{mins:02d}" if data.draw(st.booleans()) else f"{hours:02d}:{mins:02d}"


def args_from_row(domain: str, row: dict[str, Any], data: st.DataObject) -> dict[str, str]:
    """A random subset of `row`'s searchable fields, re-spelled, some replaced by 'dontcare'-style values."""
    args = {}
    for key in data.draw(st.sets(st.sampled_from(SEARCH_PARAMS[domain]), max_size=4)):
        if data.draw(st.integers(0, 5)) == 0:
            args[key] = data.draw(st.sampled_from(sorted(EMPTY))).upper()
        elif key in ("leaveAt", "arriveBy"):
            args[key] = time_near(row[key], data)
        else:
            args[key] = respell(row[key], data)
    return args


scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
           | st.tuples(st.text(min_size=1, max_size=3), st.integers(100, 20_000)).map(lambda t: t[0] * t[1]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
junk_arguments = (st.dictionaries(st.sampled_from(ALL_PARAMS) | st.text(max_size=12), json_values, max_size=5)
                  | st.dictionaries(st.sampled_from(ALL_PARAMS), json_values, max_size=4).map(json.dumps)
                  | json_values | st.text(max_size=40))
tool_names = st.sampled_from(sorted(API_DEFS)) | st.text(max_size=20)
semantics = st.sampled_from(["fixed", "parity"])


def assert_well_formed(call: Any) -> None:
    assert isinstance(call.content, str)
    json.dumps(call.record())
    if call.ok:
        assert call.error_kind is None
        json.loads(call.content)
    else:
        assert isinstance(call.error_kind, ErrorKind) and call.error


# -- schemas -----------------------------------------------------------------------------------------------

def test_tool_schemas_have_the_reference_names_parameters_and_enums() -> None:
    reference = {f["function"]["name"]: f["function"] for f in json.loads((REFERENCE_DIR / "tools.json").read_text())}
    ours = {f["function"]["name"]: f["function"] for f in tool_schemas()}
    assert list(ours) == list(reference)
    for name, ref in reference.items():
        ref_props, our_props = ref["parameters"]["properties"], ours[name]["parameters"]["properties"]
        assert list(our_props) == list(ref_props), name
        assert ours[name]["parameters"]["required"] == []
        assert all(p["type"] == "string" for p in our_props.values())
        ref_enums = {k: sorted(p["enum"]) for k, p in ref_props.items() if "enum" in p}
        assert {k: sorted(p["enum"]) for k, p in our_props.items() if "enum" in p} == ref_enums, name


def test_tool_descriptions_are_our_own_words() -> None:
    reference = {f["function"]["name"]: f["function"] for f in json.loads((REFERENCE_DIR / "tools.json").read_text())}
    for schema in tool_schemas():
        ours, ref = schema["function"], reference[schema["function"]["name"]]
        assert ours["description"] != ref["description"]
        for param, prop in ours["parameters"]["properties"].items():
            assert prop["description"] != ref["parameters"]["properties"][param]["description"]


def test_api_defs_equal_valid_api_defs() -> None:
    reference = json.loads((REFERENCE_DIR / "valid_api_defs.json").read_text())
    flat = {api: (tuple(d["parameters"]), tuple(d["returns"]))
            for apis in reference.values() for api, d in apis.items()}
    assert API_DEFS == flat


# -- properties --------------------------------------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(tool_names, junk_arguments, semantics, st.booleans())
def test_random_calls_never_raise_and_fail_with_a_known_kind(env, name, arguments, sem, with_task) -> None:
    call = env.call(name, arguments, task_id="MUL0016.json" if with_task else None, semantics=sem)
    assert_well_formed(call)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fixed_search_serves_the_first_k_matching_rows(env, mw, data) -> None:
    domain = data.draw(st.sampled_from(DOMAINS))
    with_hidden = sorted({t for t, d in env.hidden if d == domain})
    task_id = data.draw(st.none() | st.sampled_from(with_hidden)) if with_hidden else None
    hidden = set(env.hidden.get((task_id, domain), ()))
    # Rows a task hides are drawn often, so the test sees them hidden.
    idx = data.draw(st.sampled_from(sorted(hidden)) | st.integers(0, len(mw.dbs[domain]) - 1) if hidden
                    else st.integers(0, len(mw.dbs[domain]) - 1))
    args = args_from_row(domain, mw.dbs[domain][idx], data)
    call = env.call(f"search_{domain}", args, task_id=task_id)
    expected = [i for i, row in enumerate(mw.dbs[domain]) if i not in hidden and fixed_match(row, args)]
    assert call.ok, call.error
    assert [r["row_idx"] for r in call.rows] == expected[:3]
    assert call.n_rows == len(expected)
    for served, i in zip(call.result, expected):
        raw = mw.dbs[domain][i]
        assert {k: v for k, v in served.items() if k in raw} == {k: raw[k] for k in served if k in raw}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_compact_search_serves_the_first_row_with_its_filled_compact_fields(env, mw, data) -> None:
    domain = data.draw(st.sampled_from(DOMAINS))
    row = data.draw(st.sampled_from(mw.dbs[domain]))
    args = args_from_row(domain, row, data)
    full = env.call(f"search_{domain}", args)
    compact = env.call(f"search_{domain}", args, results="compact")
    assert compact.ok and compact.n_rows == full.n_rows  # the same filter; only what is shown differs
    assert [r["row_idx"] for r in compact.rows] == [r["row_idx"] for r in full.rows][:1]
    for served, raw in zip(compact.result, compact.rows):
        assert set(served) <= set(COMPACT_FIELDS[domain])
        assert served == {k: raw[k] for k in COMPACT_FIELDS[domain] if raw.get(k) not in (None, "", "?")}
        assert served[UID[domain]]  # what a booking needs is always shown


def test_results_must_be_known(env) -> None:
    assert RESULTS == ("full", "compact")
    with pytest.raises(ValueError, match="results must be one of"):
        env.call("search_hotel", {"area": "east"}, results="tiny")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_parity_search_serves_the_first_row_of_the_reference_filter(env, mw, data) -> None:
    domain = data.draw(st.sampled_from(DOMAINS))
    row = data.draw(st.sampled_from(mw.dbs[domain]))
    args = args_from_row(domain, row, data)
    call = env.call(f"search_{domain}", args, semantics="parity")
    expected = [i for i, r in enumerate(mw.dbs[domain]) if parity_match(r, args)]
    assert call.ok
    assert call.result == [mw.dbs[domain][i] for i in expected[:1]]
    assert call.n_rows == len(expected)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_call_many_equals_one_call_each(env, mw, data) -> None:
    # Tasks that hide rows or hold a fail_book overlay, so batching must keep them apart.
    task_ids = ["MUL0016.json", *sorted({t for t, _ in env.hidden})]
    requests = []
    for _ in range(data.draw(st.integers(1, 12))):
        task_id = data.draw(st.none() | st.sampled_from(task_ids))
        sem = data.draw(semantics)
        if data.draw(st.booleans()):
            domain = data.draw(st.sampled_from(DOMAINS))
            kind = data.draw(st.sampled_from(["search", "book"]))
            row = data.draw(st.sampled_from(mw.dbs[domain]))
            args = args_from_row(domain, row, data)
            if kind == "book":
                args = {UID[domain]: row[UID[domain]], "people": "2", "day": "monday", "time": "18:00"}
                args = {k: v for k, v in args.items() if k in API_DEFS[f"book_{domain}"][0]}
            requests.append(ToolRequest(f"{kind}_{domain}", args, task_id, sem, data.draw(st.sampled_from(RESULTS))))
        else:
            requests.append(ToolRequest(data.draw(tool_names), data.draw(junk_arguments), task_id, sem))
    batched = env.call_many(requests)
    one_by_one = [env.call(r.name, r.arguments, task_id=r.task_id, semantics=r.semantics, results=r.results)
                  for r in requests]
    summary = [(c.result, c.ok, c.error_kind, c.n_rows) for c in batched]
    assert summary == [(c.result, c.ok, c.error_kind, c.n_rows) for c in one_by_one]


def test_hidden_rows_are_the_fail_info_rows_that_miss_the_goal(env, mw) -> None:
    expected = {}
    for task in env.tasks.values():
        for domain in task.domains:
            info, fail = task.goal[domain].get("info") or {}, task.goal[domain].get("fail_info") or {}
            if fail:
                overlay = {k: fail.get(k, info.get(k, "")) for k in SEARCH_PARAMS[domain]}
                rows = tuple(i for i, r in enumerate(mw.dbs[domain]) if fixed_match(r, overlay)
                             and not fixed_match(r, {k: v for k, v in info.items() if k in SEARCH_PARAMS[domain]}))
                if rows:
                    expected[(task.task_id, domain)] = rows
    assert expected and env.hidden == expected


# -- exact values ------------------------------------------------------------------------------------------

LKC_MONDAY = {"departure": "cambridge", "destination": "london kings cross", "day": "monday"}


def test_train_leave_at_exact_rows(env) -> None:
    fixed = env.call("search_train", {**LKC_MONDAY, "leaveAt": "09:00"})
    assert [r["trainID"] for r in fixed.result] == ["TR7409", "TR1111", "TR6110"] and fixed.n_rows == 8
    assert env.call("search_train", {**LKC_MONDAY, "leaveAt": "9:00"}).result == fixed.result
    parity = env.call("search_train", {**LKC_MONDAY, "leaveAt": "09:00"}, semantics="parity")
    assert [r["trainID"] for r in parity.result] == ["TR1111"] and parity.n_rows == 7  # strict >


def test_train_arrive_by_exact_rows(env) -> None:
    fixed = env.call("search_train", {**LKC_MONDAY, "arriveBy": "11:51"})
    assert [r["trainID"] for r in fixed.result] == ["TR7075", "TR2289", "TR7409"] and fixed.n_rows == 4
    parity = env.call("search_train", {**LKC_MONDAY, "arriveBy": "11:51"}, semantics="parity")
    assert [r["trainID"] for r in parity.result] == ["TR7075"] and parity.n_rows == 3  # strict <


# -- bad input ---------------------------------------------------------------------------------------------

def test_unknown_tool(env) -> None:
    call = env.call("fly_plane", {"to": "paris"})
    assert (call.ok, call.error_kind) == (False, ErrorKind.UNKNOWN_TOOL)
    assert call.content.startswith("Error: there is no tool 'fly_plane'")
    assert env.call("search_taxi", {}).error_kind == ErrorKind.UNKNOWN_TOOL  # not a ToolWOZ tool
    parity = env.call("fly_plane", {}, semantics="parity")
    assert (parity.content, parity.error_kind) == (PARITY_INVALID, ErrorKind.UNKNOWN_TOOL)
    assert env.call("search_taxi", {}, semantics="parity").result == []  # defined by the reference


def test_unknown_argument(env) -> None:
    call = env.call("search_hotel", {"area": "east", "people": "2"})
    assert (call.ok, call.error_kind, call.rows) == (False, ErrorKind.UNKNOWN_ARGUMENT, [])
    assert "'people'" in call.content
    parity = env.call("search_hotel", {"area": "east", "people": "2"}, semantics="parity")
    assert (parity.ok, parity.content) == (False, PARITY_INVALID)


def test_int_values_are_coerced_in_fixed(env, mw) -> None:
    booking = env.call("book_hotel", {"name": "a and b guest house", "people": 4, "day": "monday", "stay": 2})
    assert booking.ok and booking.normalised["people"] == "4" and booking.normalised["stay"] == "2"
    assert env.call("search_hotel", {"stars": 4}).result == env.call("search_hotel", {"stars": "4"}).result
    parity = env.call("search_hotel", {"stars": 4}, semantics="parity")  # reference: non-strings ignored
    assert parity.result == [mw.dbs["hotel"][0]] and parity.n_rows == len(mw.dbs["hotel"])


@pytest.mark.parametrize("value", [True, [4], {"n": 4}, 2.5])
def test_non_string_values_are_bad_in_fixed(env, value) -> None:
    call = env.call("book_hotel", {"name": "a and b guest house", "people": value, "day": "monday", "stay": "2"})
    assert (call.ok, call.error_kind) == (False, ErrorKind.BAD_VALUE)
    assert call.content == f"Error: people must be a string, not {type(value).__name__}"


@pytest.mark.parametrize("value", [[4], {"n": 4}, []])
def test_lists_and_dicts_get_the_reference_string_in_parity(env, value) -> None:
    call = env.call("search_hotel", {"stars": value}, semantics="parity")
    assert (call.ok, call.error_kind, call.content) == (False, ErrorKind.BAD_VALUE, PARITY_LISTS)


def test_empty_and_dontcare_values_are_unconstrained(env, mw) -> None:
    args = {"food": "dontcare", "area": "", "pricerange": "Don't Care", "name": "not mentioned"}
    fixed = env.call("search_restaurant", args)
    assert fixed.ok and fixed.n_rows == len(mw.dbs["restaurant"]) and [r["row_idx"] for r in fixed.rows] == [0, 1, 2]
    assert fixed.normalised == {}
    parity = env.call("search_restaurant", args, semantics="parity")
    assert parity.result == [mw.dbs["restaurant"][0]] and parity.n_rows == len(mw.dbs["restaurant"])


@pytest.mark.parametrize("sem", ["fixed", "parity"])
def test_unicode_values_match_nothing(env, sem) -> None:
    for value in ("café ünïcödé 🍕", "中文", "ＩＴＡＬＩＡＮ", "\u200bitalian"):
        call = env.call("search_restaurant", {"food": value}, semantics=sem)
        assert (call.ok, call.result, call.n_rows) == (True, [], 0), value


def test_ten_thousand_character_value(env) -> None:
    value = "x" * 10_000
    fixed = env.call("search_hotel", {"name": value})
    assert (fixed.ok, fixed.error_kind) == (False, ErrorKind.BAD_VALUE)
    assert fixed.content == "Error: name is longer than 200 characters"
    parity = env.call("search_hotel", {"name": value}, semantics="parity")
    assert (parity.ok, parity.result) == (True, [])


SQL_LOOKING = ["x' OR 1=1 --", "; DROP TABLE toolwoz.train; --", "' OR ''='", "\"); DELETE FROM tasks; --"]


@pytest.mark.parametrize("value", SQL_LOOKING)
def test_sql_looking_values_match_nothing(env, con, mw, value) -> None:
    for sem in ("fixed", "parity"):
        for domain in DOMAINS:
            param = "departure" if domain == "train" else "name"
            call = env.call(f"search_{domain}", {param: value}, semantics=sem)
            assert (call.ok, call.result, call.n_rows) == (True, [], 0)
    assert env.call("book_train", {"trainID": value, "people": "1"}).error_kind == ErrorKind.UNKNOWN_ENTITY
    for domain in DOMAINS:
        assert con.execute(f"SELECT count(*) FROM toolwoz.{domain}").fetchone()[0] == len(mw.dbs[domain])
    assert con.execute("SELECT count(*) FROM tasks").fetchone()[0] == len(env.tasks)


def test_unknown_task_raises(env) -> None:
    with pytest.raises(UnknownTask, match="NOPE.json"):
        env.call("search_hotel", {}, task_id="NOPE.json")
    with pytest.raises(UnknownTask):
        env.call_many([ToolRequest("search_hotel", {}), ToolRequest("search_hotel", {}, "NOPE.json")])


def test_book_with_missing_slots(env) -> None:
    call = env.call("book_restaurant", {"name": "the missing sock", "day": "monday"})
    assert (call.ok, call.error_kind) == (False, ErrorKind.MISSING_ARGUMENT)
    assert call.content == "Error: book_restaurant needs time, people; ask the customer"
    assert env.call("book_train", {"people": "2", "trainID": "dontcare"}).error_kind == ErrorKind.MISSING_ARGUMENT


def test_book_of_an_unknown_name(env) -> None:
    call = env.call("book_restaurant", {"name": "the ritz", "day": "monday", "time": "18:00", "people": "2"})
    assert (call.ok, call.error_kind, call.n_rows) == (False, ErrorKind.UNKNOWN_ENTITY, 0)
    assert "'the ritz'" in call.content


def test_attractions_are_not_bookable(env) -> None:
    call = env.call("book_attraction", {})
    assert (call.ok, call.error_kind) == (False, ErrorKind.NOT_BOOKABLE)
    assert env.call("book_attraction", {}, semantics="parity").result == {"success": False, "return": {}}


def fail_book_case(env) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """The first task whose booking first failed: (task id, domain, doomed slots, goal booking args)."""
    for task_id, task in sorted(env.tasks.items()):
        for domain, truth in task.ground_truth.items():
            failed, booked = truth["failure"].get(f"book_{domain}"), truth["success"].get(f"book_{domain}")
            if failed and booked:
                goal = booked["parameters"]
                return task_id, domain, {**failed["parameters"], UID[domain]: goal[UID[domain]]}, goal
    raise AssertionError("no task with a fail_book overlay")


def test_fail_book_overlay_has_no_availability(env) -> None:
    task_id, domain, doomed, goal = fail_book_case(env)
    failed = env.call(f"book_{domain}", doomed, task_id=task_id)
    assert (failed.ok, failed.error_kind) == (False, ErrorKind.NO_AVAILABILITY)
    assert env.call(f"book_{domain}", doomed).ok  # only that task's wizard had no room
    booked = env.call(f"book_{domain}", goal, task_id=task_id)
    assert booked.ok and booked.result[UID[domain]] == goal[UID[domain]]


@pytest.mark.parametrize("domain,name,row_name", [
    ("attraction", "King's College", "king's college"),
    ("attraction", "kings college", "king's college"),
    ("restaurant", "Pizza Express Fen Ditton", "pizza express Fen Ditton"),
    ("hotel", "ROSAS bed and breakfast", "rosa's bed and breakfast"),
])
def test_names_with_apostrophes_or_capitals_are_found_in_fixed(env, domain, name, row_name) -> None:
    call = env.call(f"search_{domain}", {"name": name})
    assert [r["name"] for r in call.result] == [row_name]
    if domain != "attraction":
        slots = {"day": "friday", "people": "2", "time": "19:00", "stay": "1"}
        args = {k: v for k, v in slots.items() if k in API_DEFS[f"book_{domain}"][0]}
        assert env.call(f"book_{domain}", {**args, "name": name}).result["name"] == row_name


def test_absurdly_nested_json_arguments_are_a_bad_arguments_error(env):
    call = env.call("search_hotel", "[" * 100_000)
    assert not call.ok and call.error_kind == "bad_arguments"
