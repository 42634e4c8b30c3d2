"""`factory toolwoz ...` end to end: the real CLI in a subprocess on a temporary warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tests.conftest import MULTIWOZ_DIR, one_line_error, run


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """A warehouse built once by `factory toolwoz build`."""
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    result = run("toolwoz", "build", "--multiwoz", str(MULTIWOZ_DIR), "-w", str(path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tasks"] == 1598 + 2000  # MultiWOZ tasks + the synthetic `synth` split
    return path


@pytest.mark.slow
def test_build_then_info_reports_counts_per_split(built):
    result = run("toolwoz", "info", "--json", "-w", str(built))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    counts = {s["split"]: s["tasks"] for s in info["splits"]}
    assert counts == {"test": 450, "test_full": 805, "val": 793, "val_boot": 397, "val_harvest": 396, "train": 0,
                      "synth": 2000}
    goals = {(g["split"], g["domain"]): g for g in info["goals"]}
    assert goals[("test", "attraction")]["book_goals"] == 0
    assert sum(g["search_goals"] + g["book_goals"] for g in info["goals"] if g["split"] == "test") == \
        next(s["goals"] for s in info["splits"] if s["split"] == "test")


@pytest.mark.slow
def test_build_is_idempotent(built):
    again = run("toolwoz", "build", "--multiwoz", str(MULTIWOZ_DIR), "-w", str(built), "--json")
    assert again.returncode == 0, again.stderr
    con = duckdb.connect(str(built), read_only=True)
    try:
        assert con.execute("select count(*), count(distinct task_id) from tasks").fetchall() == [(3598, 3598)]
        assert con.execute("select count(*) from toolwoz.train").fetchall() == [(2828,)]
        assert con.execute("select count(*) from toolwoz.build_info").fetchall() == [(1,)]
    finally:
        con.close()


@pytest.mark.slow
def test_call_returns_rows_from_the_warehouse(built):
    args = {"departure": "cambridge", "destination": "ely", "day": "friday", "leaveAt": "17:00"}
    result = run("toolwoz", "call", "search_train", json.dumps(args), "-w", str(built))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["trainID"] for r in rows] == ["TR9933", "TR6053", "TR9842"]
    assert all(r["leaveAt"] >= "17:00" and r["destination"] == "ely" for r in rows)


@pytest.mark.slow
def test_call_record_and_parity(built):
    result = run("toolwoz", "call", "search_hotel", '{"area": "north", "stars": "4"}', "--task", "MUL0003",
                 "--semantics", "parity", "--record", "-w", str(built))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["semantics"] == "parity" and record["ok"] is True and record["task_id"] == "MUL0003.json"
    assert len(record["result"]) == 1  # the reference serves at most one row


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["search_trainx", "{}"], "unknown tool 'search_trainx'"),
    (["search_hotel", '{"price": "cheap"}'], "search_hotel has no argument 'price'"),
    (["search_hotel", "{bad json"], "ARGUMENTS is not JSON"),
    (["search_hotel", '{"area": ["north"]}'], "area must be a string"),
    (["book_hotel", '{"name": "acorn guest house"}'], "book_hotel needs stay, day, people"),
    (["search_hotel", '{"area": "north"}', "--task", "NOPE"], "unknown task 'NOPE'"),
    (["search_hotel", "{}", "--semantics", "nonsense"], "Invalid value for '--semantics'"),
])
def test_call_bad_input_is_one_line_exit_2(built, args, fragment):
    result = run("toolwoz", "call", *args, "-w", str(built))
    assert result.returncode == 2
    assert fragment in one_line_error(result)


@pytest.mark.slow
def test_sql_looking_values_match_nothing_and_change_nothing(built):
    for value in ["x' OR 1=1 --", "'; DROP TABLE toolwoz.hotel; --"]:
        result = run("toolwoz", "call", "search_hotel", json.dumps({"name": value}), "-w", str(built))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == []
    con = duckdb.connect(str(built), read_only=True)
    try:
        assert con.execute("select count(*) from toolwoz.hotel").fetchall() == [(33,)]
    finally:
        con.close()


@pytest.mark.slow
def test_show_prints_goal_truth_and_dialogue(built):
    result = run("toolwoz", "show", "MUL0003", "--json", "--multiwoz", str(MULTIWOZ_DIR), "-w", str(built))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["task_id"] == "MUL0003.json"
    assert shown["ground_truth"]["hotel"]["success"]["book_hotel"]["unique_id"] == "alexander bed and breakfast"
    assert shown["dialogue"][0]["role"] == "user" and "guesthouse" in shown["dialogue"][0]["text"]


@pytest.mark.slow
def test_audit_lists_tasks_whose_goal_contradicts_the_db(built):
    result = run("toolwoz", "audit", "--split", "test_full", "--check", "fixed_oracle", "--json", "-w", str(built))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tasks"] == 805
    assert report["counts"]["fixed_oracle"] == len(report["findings"]) > 0
    assert all(f["reason"] for f in report["findings"])


def test_missing_multiwoz_path_is_exit_2(tmp_path):
    result = run("toolwoz", "build", "--multiwoz", str(tmp_path / "nope"), "-w", str(tmp_path / "w.duckdb"))
    assert result.returncode == 2
    assert "does not exist" in one_line_error(result)


def test_no_multiwoz_anywhere_names_the_fix(tmp_path):
    env = {"FACTORY_MULTIWOZ": "", "FACTORY_HOME": str(tmp_path), "FACTORY_MULTIWOZ_URL": "http://127.0.0.1:9/x.zip"}
    result = run("toolwoz", "build", "-w", str(tmp_path / "w.duckdb"), env=env)
    assert result.returncode == 2
    assert "--multiwoz PATH" in one_line_error(result)


def test_commands_before_build_say_what_to_run(tmp_path):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    for args in (["info"], ["call", "search_hotel", "{}"], ["show", "MUL0003"]):
        result = run("toolwoz", *args, "-w", str(path))
        assert result.returncode == 2
        assert "factory toolwoz build" in one_line_error(result)


def test_warehouse_in_missing_folder_is_exit_2(tmp_path):
    result = run("toolwoz", "info", "-w", str(tmp_path / "no" / "such" / "w.duckdb"))
    assert result.returncode == 2
    assert "does not exist" in one_line_error(result)


def test_every_command_has_help_with_an_example():
    for args in ([], ["toolwoz"], ["toolwoz", "build"], ["toolwoz", "info"], ["toolwoz", "audit"],
                 ["toolwoz", "call"], ["toolwoz", "show"]):
        result = run(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "Example:" in result.stdout, args
