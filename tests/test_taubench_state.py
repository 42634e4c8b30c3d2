"""τ-bench tables and branch-local state: the build, the overlay's reads and writes, and the env's call contract.

The property test checks the heart of the design: on a random tree with random writes, every branch reads
exactly a dict model of its own path's writes over the base rows (siblings isolated, children inheriting),
scans see the same, and the SQL database comparison agrees with the model.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taubench import data as tbdata
from taubench import state
from taubench.env import TauRequest, registry
from taubench.errors import DataError, DataNotFound
from taubench.state import Branch, BranchDB
from tests.conftest import TAUBENCH_DIR

# -- data and tables ------------------------------------------------------------------------------------------


def test_build_holds_every_record_and_task(tau_con) -> None:
    for domain in tbdata.DOMAINS:
        for tbl in tbdata.TABLES[domain]:
            records = json.loads((TAUBENCH_DIR / domain / f"{tbl}.json").read_text())
            rows = tau_con.execute(f"SELECT key, doc FROM taubench_base WHERE domain = ? AND tbl = ? ORDER BY ord",
                               [domain, tbl]).fetchall()
            assert rows == [(k, json.dumps(r)) for k, r in records.items()]  # text and order as τ-bench dumps
            typed = tau_con.execute(f"SELECT count(*) FROM taubench_{domain}_{tbl}").fetchone()[0]
            assert typed == len(records)
    splits = dict(((d, s), n) for d, s, n in tau_con.execute(
        "SELECT domain, split, count(*) FROM taubench_tasks GROUP BY ALL").fetchall())
    assert splits == {("retail", "train"): 500, ("retail", "dev"): 20, ("retail", "test"): 115,
                      ("airline", "test"): 50}
    assert tau_con.execute("SELECT status FROM taubench_retail_orders WHERE order_id = '#W2611340'").fetchone() \
        == (json.loads((TAUBENCH_DIR / "retail" / "orders.json").read_text())["#W2611340"]["status"],)


def test_build_is_idempotent_and_tasks_round_trip(tau_con) -> None:
    tasks = tbdata.build(tau_con, "airline", TAUBENCH_DIR)
    assert tau_con.execute("SELECT count(*) FROM taubench_base WHERE domain = 'airline'").fetchone()[0] == 2800
    assert tau_con.execute("SELECT count(*) FROM taubench_tasks WHERE domain = 'airline'").fetchone()[0] == 50
    from_table = tbdata.tasks_from_table(tau_con, "airline")
    assert list(from_table.values()) == tasks
    first = from_table["airline/test/0"]
    raw = json.loads((TAUBENCH_DIR / "airline" / "tasks_test.json").read_text())[0]
    assert (first.index, first.user_id, first.instruction) == (0, raw["user_id"], raw["instruction"])
    assert [a.to_dict() for a in first.actions] == raw["actions"]


def test_missing_folder_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FACTORY_TAUBENCH", raising=False)
    with pytest.raises(DataNotFound) as e:
        tbdata.locate(tmp_path / "nowhere")
    assert str(e.value) == (f"τ-bench data not found at {tmp_path / 'nowhere'}: pass --taubench PATH or set "
                            "FACTORY_TAUBENCH")
    monkeypatch.setenv("FACTORY_TAUBENCH", str(TAUBENCH_DIR))
    assert tbdata.locate(None) == TAUBENCH_DIR


@pytest.mark.parametrize("broken", ["tasks_dev.json", "orders.json"])
def test_a_file_that_does_not_parse_is_named(tmp_path, broken) -> None:
    folder = tmp_path / "taubench"
    (folder / "retail").mkdir(parents=True)
    for path in (TAUBENCH_DIR / "retail").iterdir():
        (folder / "retail" / path.name).symlink_to(path)
    (folder / "retail" / broken).unlink()
    (folder / "retail" / broken).write_text('[{"instruction": ')
    with pytest.raises(DataError) as e:
        tbdata.build(tbdata.in_memory("airline", folder=TAUBENCH_DIR), "retail", folder)
    assert str(folder / "retail" / broken) in str(e.value) and "\n" not in str(e.value)


# -- the overlay: a random tree against a dict model ----------------------------------------------------------

PRODUCTS = ["9523456873", "4760268021", "6938111410", "1801728040", "new-a", "new-b"]  # 4 base rows, 2 new
VALUES = [{"v": 1}, {"v": 2}, {"a": 1, "b": 2}, {"b": 2, "a": 1}, None]  # None = delete; the two dicts are equal
call_st = st.dictionaries(st.sampled_from(PRODUCTS), st.sampled_from(VALUES), max_size=3)
node_st = st.tuples(st.integers(0, 20), st.lists(call_st, max_size=2))  # (parent pick, the node's calls)

_rollouts = iter(range(10 ** 9))


def model_rows(base: dict, tree: dict[int, tuple[int | None, list]], node: int) -> dict:
    """{key: row} of the products table as `node` must see it: base, then each call on its path in order."""
    path = []
    while node is not None:
        path.append(node)
        node = tree[node][0]
    rows = dict(base)
    order = list(base)
    for n in reversed(path):
        for call in tree[n][1]:
            for key, value in call.items():
                if value is None:
                    rows.pop(key, None)
                else:
                    if key not in rows and key not in order:
                        order.append(key)
                    rows[key] = value
    return {k: rows[k] for k in order if k in rows}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nodes=st.lists(node_st, min_size=1, max_size=6))
def test_every_branch_reads_its_own_path(tau_con, nodes) -> None:
    rollout = f"prop/{next(_rollouts)}"
    base = {k: json.loads(d) for k, d in tau_con.execute(
        "SELECT key, doc FROM taubench_base WHERE domain = 'retail' AND tbl = 'products' ORDER BY ord").fetchall()}
    tree: dict[int, tuple[int | None, list]] = {0: (None, [])}
    branches = {0: Branch(rollout, (0,))}
    for i, (pick, calls) in enumerate(nodes, start=1):
        parent = sorted(tree)[pick % len(tree)]
        tree[i] = (parent, calls)
        branches[i] = branches[parent].child(i)
        for pos, call in enumerate(calls):
            db = BranchDB(tau_con, "retail", branches[i])
            for key, value in call.items():
                if value is None:
                    db.delete("products", key)
                else:
                    db.put("products", key, value)
            state.record(tau_con, branches[i], pos, db.changes())
    try:
        for node, branch in branches.items():
            want = model_rows(base, tree, node)
            seen = BranchDB(tau_con, "retail", branch).get_many("products", PRODUCTS)
            assert {k: json.dumps(v) for k, v in seen.items() if v is not None} == \
                {k: json.dumps(want[k]) for k in PRODUCTS if k in want}
            scanned = BranchDB(tau_con, "retail", branch).rows("products")
            assert [(k, json.dumps(v)) for k, v in scanned] == [(k, json.dumps(v)) for k, v in want.items()]
            assert state.read(tau_con, "retail", branch, "products", PRODUCTS[0]) == want.get(PRODUCTS[0])
        for a in branches:
            for b in branches:
                if a < b:
                    ma, mb = model_rows(base, tree, a), model_rows(base, tree, b)
                    differ = {k for k in PRODUCTS
                              if state.canonical_hash(ma.get(k)) != state.canonical_hash(mb.get(k))}
                    assert {k for _, k in state.differences(tau_con, branches[a], branches[b])} == differ
    finally:
        state.forget(tau_con, rollout)
    assert state.state_changes(tau_con, rollout) == []


# -- the env's call contract ----------------------------------------------------------------------------------


def test_siblings_never_see_each_other_and_children_inherit(retail) -> None:
    root = Branch("siblings", (0,))
    left, right = root.child(1), root.child(2)
    done = retail.call("cancel_pending_order", {"order_id": "#W8367380", "reason": "ordered by mistake"}, branch=left)
    assert done.ok and json.loads(done.content)["status"] == "cancelled"
    assert retail.read(left, "orders", "#W8367380")["status"] == "cancelled"
    assert retail.read(left.child(3), "orders", "#W8367380")["status"] == "cancelled"
    assert retail.read(right, "orders", "#W8367380")["status"] == "pending"
    assert retail.read(root, "orders", "#W8367380")["status"] == "pending"
    again = retail.call("cancel_pending_order", {"order_id": "#W8367380", "reason": "no longer needed"},
                     branch=left.child(3))
    assert again.content == "Error: non-pending order cannot be cancelled" and not again.writes
    other = retail.call("cancel_pending_order", '{"order_id": "#W8367380", "reason": "no longer needed"}',
                        branch=right)
    assert json.loads(other.content)["cancel_reason"] == "no longer needed"
    changes = retail.state_changes("siblings")
    assert [(c["node_id"], c["pos"], c["tbl"], c["key"]) for c in changes] == [
        (1, 0, "orders", "#W8367380"), (2, 0, "orders", "#W8367380")]
    assert json.loads(changes[0]["before"])["status"] == "pending"
    assert json.loads(changes[0]["after"])["cancel_reason"] == "ordered by mistake"
    assert done.writes == changes[:1]
    retail.forget("siblings")
    assert retail.state_changes("siblings") == []
    assert retail.read(left, "orders", "#W8367380")["status"] == "pending"


def test_positions_follow_on_per_node(retail) -> None:
    branch = Branch("positions", (0, 4))
    calls = retail.call_many([
        TauRequest("modify_user_address", {"user_id": "noah_brown_6181", "address1": str(i), "address2": "",
                                           "city": "c", "state": "s", "country": "USA", "zip": "1"}, branch)
        for i in range(3)])
    assert [c.writes[0]["pos"] for c in calls] == [0, 1, 2]
    assert retail.read(branch, "users", "noah_brown_6181")["address"]["address1"] == "2"
    assert retail.call("get_user_details", {"user_id": "noah_brown_6181"}, branch=branch, pos=9).writes == []
    retail.forget("positions")


@pytest.mark.parametrize("arguments, kind, text", [
    ({"order_id": "#W8367380"}, "bad_arguments",
     "Error: CancelPendingOrder.invoke() missing 1 required positional argument: 'reason'"),
    ({}, "bad_arguments",
     "Error: CancelPendingOrder.invoke() missing 2 required positional arguments: 'order_id' and 'reason'"),
    ({"order_id": "#W8367380", "reason": "no longer needed", "note": "x"}, "bad_arguments",
     "Error: CancelPendingOrder.invoke() got an unexpected keyword argument 'note'"),
    ('{"order_id": ', "bad_arguments", None),
    ("[1, 2]", "bad_arguments", "Error: arguments must be a JSON object, not list"),
    ({"order_id": ["#W8367380"], "reason": "no longer needed"}, "tool_error", "Error: unhashable type: 'list'"),
    ({"order_id": "#W0000000", "reason": "no longer needed"}, "tool_error", "Error: order not found"),
    ({"order_id": "#W8367380", "reason": "too expensive"}, "tool_error", "Error: invalid reason"),
])
def test_a_bad_call_is_an_error_observation_that_writes_nothing(retail, arguments, kind, text) -> None:
    call = retail.call("cancel_pending_order", arguments, branch=Branch("bad", (0,)))
    assert (call.ok, call.error_kind, call.writes) == (False, kind, [])
    assert call.content.startswith("Error: ") and call.error == call.content
    if text is not None:
        assert call.content == text
    assert retail.state_changes("bad") == []
    record = call.record()
    assert (record["ok"], record["error_kind"], record["result"], record["n_rows"]) == (False, kind, None, 0)


def test_unknown_tool_and_record(retail) -> None:
    branch = Branch("record", (0,))
    unknown = retail.call("respond", {"content": "hi"}, branch=branch)
    assert (unknown.ok, unknown.error_kind, unknown.content) == (False, "unknown_tool", "Unknown action respond")
    found = retail.call("find_user_id_by_email", '{"email": "Noah.Brown7922@example.com"}', branch=branch)
    record = found.record()
    assert record["arguments"] == '{"email": "Noah.Brown7922@example.com"}'
    assert (record["ok"], record["result"], record["semantics"], record["error_kind"]) == \
        (True, '"noah_brown_6181"', None, None)
    details = retail.call("get_user_details", {"user_id": "noah_brown_6181"}, branch=branch).record()
    assert json.loads(details["result"])["email"] == "noah.brown7922@example.com"
    transfer = retail.call("transfer_to_human_agents", {"summary": "help"}, branch=branch)
    assert transfer.ends_conversation and transfer.content == "Transfer successful"
    assert not found.ends_conversation


def test_tool_schemas_are_tools_json_and_every_tool_is_there(retail) -> None:
    schemas = json.loads((TAUBENCH_DIR / "retail" / "tools.json").read_text())
    assert retail.tool_schemas == schemas
    assert sorted(registry("retail")) == sorted(s["function"]["name"] for s in schemas) and len(schemas) == 16
    assert retail.wiki == (TAUBENCH_DIR / "retail" / "wiki.md").read_text()
    assert len(retail.tasks) == 635 and retail.task("retail/dev/3").split == "dev"
