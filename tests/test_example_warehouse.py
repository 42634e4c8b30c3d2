"""The committed example warehouse (`make example`): every `sql/examples` query runs on it through the real CLI.

`warehouse.duckdb.example` is part of the repository, so a missing file is a failure, not a skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from factory.store import warehouse
from tests.conftest import ROOT, query, run

EXAMPLE = ROOT / "warehouse.duckdb.example"
EXAMPLES = ROOT / "sql" / "examples"
REBUILD = "rebuild it with `make example` and commit it"

COLUMNS = {
    "01_reward_by_domain": ["kind", "agent", "domain", "rollouts", "goals", "credited", "goal_rate", "mean_reward"],
    "02_branch_divergence": ["agent", "turn", "forks", "children", "diverged", "decisive"],
    "03_tool_errors": ["agent", "tool", "error_kind", "errors", "share_of_calls", "example"],
    "04_collapse_depth": ["agent", "depth", "collapses", "first_collapses", "goals_credited", "mean_width", "pruned"],
    "05_kto_pairs": ["agent", "beam", "kto_desirable", "kto_undesirable", "kto_paired_prompts", "dpo_pairs",
                     "sft_rows"],
    "06_golden_calls": ["agent", "beam", "golden_calls", "met_goal", "failed", "ungraded", "ungraded_share"],
    "07_branch_writes": ["run_id", "table_name", "key", "change", "writes", "golden", "pruned"],
}


@pytest.fixture(scope="module")
def example() -> Path:
    if not EXAMPLE.is_file():
        pytest.fail(f"{EXAMPLE.name} is missing (it is committed); {REBUILD}")
    return EXAMPLE


def test_every_example_query_is_checked() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.sql")) == sorted(COLUMNS)


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_example_query_runs_on_the_example_warehouse(example: Path, name: str) -> None:
    path = EXAMPLES / f"{name}.sql"
    assert isinstance(sqlglot.parse_one(path.read_text(), read="duckdb"), exp.Query), "examples are read-only SELECTs"
    result = run("sql", "-w", str(example), "-f", str(path), "--format", "json", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows, f"{name} returned no rows on {EXAMPLE.name}"
    assert list(rows[0]) == COLUMNS[name]


def test_example_has_a_teacher_run_and_a_tiny_model_harvest(example: Path) -> None:
    runs = query(example, """SELECT kind, agent_model, backend, status, (SELECT count(*) FROM rollouts AS o
                                                                        WHERE o.run_id = r.run_id)
                             FROM runs AS r""")
    assert {(kind, agent) for kind, agent, *_ in runs} >= {("eval", "teacher"), ("harvest", "teacher")}
    tiny = [r for r in runs if r[0] == "harvest" and r[2] == "transformers" and r[1].endswith("tiny-toolwoz")]
    assert len(tiny) == 1, runs
    assert all(status == "done" for *_, status, _ in runs), runs
    assert query(example, "SELECT count(*) > 0 FROM runs WHERE env = 'retail' AND kind = 'harvest'") == [(True,)]
    assert all(rollouts > 0 for kind, *_, rollouts in runs if kind in ("eval", "harvest")), runs


def test_example_views_are_current(example: Path) -> None:
    """`factory sql` reads the views stored in the file: they must be today's `sql/views` definitions."""
    fresh = duckdb.connect()
    warehouse.migrate(fresh)
    warehouse.create_views(fresh)
    views = "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal AND schema_name = 'main' ORDER BY view_name"
    assert query(example, views) == fresh.execute(views).fetchall(), f"views changed since the build; {REBUILD}"
