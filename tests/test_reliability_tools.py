"""Reliability: hostile tool calls. Every one of the 8 tools, both semantics, one call at a time and batched,
fed random keys, types, broken Unicode (lone surrogates, other digit classes, NUL), huge strings, absurd
nesting and injection strings. Each case must not raise, must fail (if it fails) with a known error kind, must
give the same answer one by one as in a batch, and its record must go into the real `tool_calls` table as it is.

16 tests (8 tools x 2 semantics) x CASES examples; each example is a batch of 1-6 calls.
"""

from __future__ import annotations

import json
import os
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sql
from toolwoz.schemas import API_DEFS, TOOL_NAMES
from toolwoz.tools import ErrorKind, ToolRequest

CASES = int(os.environ.get("FACTORY_RELIABILITY_CASES", 640))  # per (tool, semantics): 16 x 640 = 10,240
TOOLS = list(TOOL_NAMES)
PARAMS = sorted({p for params, _ in API_DEFS.values() for p in params})

NASTY = ["\ud800", "\udfff", "a\ud83d", "\ud83d\ude00", "\x00", "a\x00b", "²", "٣", "①", "𝟚", "½", "\u200b",
         "İstanbul", "ǅ", "\u0301", "\ufeff", "\r\n", "'; DROP TABLE tasks; --", "' OR 1=1 --", "$p0", "?", "%s",
         "{0}", "\\", '"', "NULL", "null", "dontcare", "Don't Care", "09:30", "9.5", "25:00", "-1", "0", "99", "100",
         "1e3", "2", " 2 ", "monday", "cambridge", "acorn guest house", "TR7075"]
nasty_char = st.characters(codec=None, exclude_categories=()) | st.sampled_from(["\ud800", "\udc00", "\x00", "²"])
nasty_text = (st.sampled_from(NASTY) | st.text(nasty_char, max_size=12)
              | st.tuples(st.sampled_from(NASTY), st.integers(50, 120_000)).map(lambda t: t[0] * t[1]))


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


scalars = (st.none() | st.booleans() | st.integers() | st.integers(0, 5).map(lambda i: 10**4000 + i)
           | st.floats() | nasty_text)
values = (st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(nasty_text, inner, max_size=3), max_leaves=5)
          | st.integers(33, 3000).map(nested))


def wire_text(value: Any) -> str:
    """JSON text as a model would send it (absurd nesting as deep brackets)."""
    try:
        return json.dumps(value, default=str)
    except (RecursionError, ValueError):
        return "[" * 5000


def arguments_for(tool: str) -> st.SearchStrategy[Any]:
    own = API_DEFS[tool][0] or ["name"]
    keys = st.sampled_from(own) | st.sampled_from(PARAMS) | nasty_text
    objects = st.dictionaries(keys, values, max_size=6)
    as_text = objects.map(wire_text)  # the wire form: surrogates as \ud800 escapes
    deep_text = st.integers(50, 200_000).map(lambda n: "[" * n + "]" * (n % 3))
    return objects | as_text | deep_text | values | nasty_text


@pytest.fixture(scope="module")
def store() -> duckdb.DuckDBPyConnection:
    """The warehouse's own tables (schema migrations), in memory."""
    con = duckdb.connect()
    for path in sorted((sql.ROOT / "schema").glob("*.sql")):
        con.execute(path.read_text())
    return con


class Inserts:
    """Inserts each example's records exactly as produced (no repair on the way, like the writer's fast path)
    into one open transaction, rolled back at the end: a transaction per example would cost more than the calls.
    A failed insert rolls back and starts afresh, so the next example does not inherit an aborted transaction."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con, self.examples = con, 0
        con.execute("BEGIN TRANSACTION")

    def insert(self, calls: list[Any]) -> None:
        self.examples += 1
        rollout = f"r{self.examples}"  # the primary keys of one example's rows, unique in the transaction
        rows = pa.Table.from_pylist([{"rollout_id": rollout, "node_id": 0, "pos": i, **c.record()}
                                     for i, c in enumerate(calls)])
        msgs = pa.Table.from_pylist([{"rollout_id": rollout, "node_id": 0, "pos": i, "role": "tool",
                                      "content": c.content} for i, c in enumerate(calls)])
        try:
            self.con.execute("INSERT INTO tool_calls BY NAME SELECT * FROM rows")
            self.con.execute("INSERT INTO messages BY NAME SELECT * FROM msgs")
        except BaseException:
            self.con.execute("ROLLBACK")
            self.con.execute("BEGIN TRANSACTION")
            raise

    def close(self) -> None:
        self.con.execute("ROLLBACK")


def summary(call: Any) -> tuple:
    return (call.name, json.dumps(call.result), call.ok, call.error_kind, call.error, call.n_rows)


@pytest.mark.slow
@pytest.mark.parametrize("semantics", ["fixed", "parity"])
@pytest.mark.parametrize("tool", TOOLS)
def test_hostile_calls_never_raise_agree_batched_and_store(env, store, tool, semantics) -> None:
    task_ids = [None, "MUL0016.json", *sorted({t for t, _ in env.hidden})[:20]]
    requests = st.lists(st.builds(ToolRequest, st.just(tool) | st.sampled_from(TOOLS), arguments_for(tool),
                                  st.sampled_from(task_ids), st.just(semantics)), min_size=1, max_size=6)

    @settings(max_examples=CASES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(requests)
    def check(batch: list[ToolRequest]) -> None:
        batched = env.call_many(batch)
        single = [env.call(r.name, r.arguments, task_id=r.task_id, semantics=r.semantics) for r in batch]
        assert [summary(c) for c in batched] == [summary(c) for c in single]
        for call in batched:
            assert isinstance(call.content, str)
            assert call.ok == (call.error_kind is None)
            if not call.ok:
                assert isinstance(call.error_kind, ErrorKind) and call.error
        inserts.insert(batched)

    inserts = Inserts(store)
    try:
        check()
    finally:
        inserts.close()
    assert store.execute("SELECT count(*) FROM tool_calls").fetchone() == (0,)  # rolled back


def test_a_lone_surrogate_is_a_bad_value_in_fixed_and_matches_nothing_in_parity(env) -> None:
    fixed = env.call("search_hotel", '{"name": "\\ud800"}')
    assert not fixed.ok and fixed.error_kind == "bad_value" and "not text" in fixed.error
    parity = env.call("search_hotel", {"name": "\ud800"}, semantics="parity")
    assert parity.ok and parity.result == [] and parity.n_rows == 0


def test_one_bad_call_does_not_touch_the_others_of_its_batch(env) -> None:
    good = ToolRequest("search_hotel", {"name": "acorn guest house"}, None, "parity")
    bad = ToolRequest("search_hotel", {"name": "\ud800", "area": "\x00"}, None, "parity")
    results = env.call_many([good, bad, good])
    assert [c.n_rows for c in results] == [1, 0, 1]
    assert results[0].result == results[2].result and results[0].result[0]["name"] == "acorn guest house"


@pytest.mark.parametrize("people", ["²", "٣", "①", "𝟚", "½", "2\x00"])
def test_other_digit_classes_are_bad_values(env, people) -> None:
    args = {"name": "acorn guest house", "people": people, "day": "monday", "stay": "2"}
    call = env.call("book_hotel", args)
    assert not call.ok and call.error_kind == "bad_value"
    batch = env.call_many([ToolRequest("book_hotel", args), ToolRequest("book_hotel", {**args, "people": "2"})])
    assert [c.ok for c in batch] == [False, True]
