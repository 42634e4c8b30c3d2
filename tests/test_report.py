"""`factory report`: the page's numbers are the views' numbers, for real harvest and eval runs and a loop.json;
bad input; the loop plot; the page rendered in headless Chromium."""

from __future__ import annotations

import html.parser
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from factory.present import plots
from factory.store import runs as run_lib
from tests import browser
from tests.conftest import one_line_error, query, run
from toolwoz.rewards import paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "warehouse.duckdb.example"
FIGURES = ("report_reward_by_domain", "report_reward_by_goal_kind", "report_branch_width", "report_end_reasons",
           "report_tool_errors", "report_collapse_depth", "report_tokens")


@pytest.fixture(scope="module")
def runs(template, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A teacher harvest (temperature 1, so some calls fail) and three teacher evals on the same test tasks."""
    wh = tmp_path_factory.mktemp("report") / "warehouse.duckdb"
    shutil.copy(template, wh)
    ids = {}
    result = run("harvest", "--agent", "teacher", "--split", "val_harvest", "--limit", "4", "--beam", "4",
                 "--temperature", "1.0", "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    ids["harvest"] = json.loads(result.stdout)["run_id"]
    for name, extra in {"M0": ["--temperature", "1.0"], "M0'": ["--temperature", "1.0", "--seed", "3"],
                        "M1": []}.items():
        result = run("eval", "--agent", "teacher", "--split", "test", "--limit", "8", *extra, "--json",
                     "-w", str(wh))
        assert result.returncode == 0, result.stderr
        ids[name] = json.loads(result.stdout)["run_id"]
    return wh, ids


class _Tables(html.parser.HTMLParser):
    """Every `<table data-query=...>` of the page as a list of {column: text} rows."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self._query: str | None = None
        self._row: list[str] | None = None
        self._header: list[str] = []
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "data-query" in a:
            self._query, self._header = a["data-query"], []
            self.tables[self._query] = []
        elif tag == "tr" and self._query:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if not self._header:
                self._header = self._row
            else:
                self.tables[self._query].append(dict(zip(self._header, self._row)))
            self._row = None
        elif tag == "table":
            self._query = None


def page_tables(out: Path) -> dict[str, list[dict[str, str]]]:
    parser = _Tables()
    parser.feed((out / "report.html").read_text())
    return parser.tables


def number(text: str) -> float | None:
    return None if text == "NULL" else float(text)


@pytest.mark.slow
def test_report_numbers_are_the_views_numbers(runs, tmp_path):
    wh, ids = runs
    out = tmp_path / "report"
    result = run("report", ids["harvest"], ids["M0"], "--out", str(out), "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert sorted(Path(p).name for p in written["pngs"]) == sorted(f"{f}.png" for f in FIGURES)
    for png in written["pngs"]:
        assert browser.pixel_stddev(Path(png)) > 5
    assert browser.external_links((out / "report.html").read_text()) == []
    tables = page_tables(out)
    assert set(FIGURES) | {"report_runs"} <= set(tables)
    for run_id in (ids["harvest"], ids["M0"]):
        def mine(name: str) -> list[dict[str, str]]:
            return [r for r in tables[name] if r["run_id"] == run_id]

        # run metrics: run_scores (the one definition of Average Reward) and reward_audit
        (row,) = mine("report_runs")
        scores = query(wh, "select rollouts, average_reward, success_rate from run_scores where run_id = ?", [run_id])
        assert (int(row["rollouts"]), number(row["average_reward"]), number(row["success_rate"])) == scores[0]
        audit = query(wh, "select tool_calls, tool_error_rate from reward_audit where run_id = ?", [run_id])[0]
        assert (int(row["tool_calls"]), number(row["tool_error_rate"])) == audit
        # reward per domain / goal kind: the goals add up to the rollouts' goals_total and goals_done
        totals = query(wh, "select sum(goals_total), sum(goals_done) from rollouts where run_id = ?", [run_id])[0]
        for name in ("report_reward_by_domain", "report_reward_by_goal_kind"):
            assert (sum(int(r["goals"]) for r in mine(name)), sum(int(r["credited"]) for r in mine(name))) == totals
        credited = dict(query(wh, "select w.domain, count(distinct (w.rollout_id, w.goal)) from rewards w join "
                                  "rollouts o using (rollout_id) where o.run_id = ? and w.credited group by 1",
                              [run_id]))
        by_domain = {r["domain"]: int(r["credited"]) for r in mine("report_reward_by_domain")}
        assert {domain: n for domain, n in by_domain.items() if n} == credited
        # branch width per step: branch_stats
        widths = query(wh, "select step, count(*), round(avg(width), 4), max(width), sum(pruned) from branch_stats "
                           "where run_id = ? group by step order by step", [run_id])
        assert [(int(r["step"]), int(r["rollouts"]), number(r["mean_width"]), int(r["max_width"]), int(r["pruned"]))
                for r in mine("report_branch_width")] == widths
        live = query(wh, "select created_step, round(count(*) filter (not ended) / count(distinct rollout_id), 4) "
                         "from nodes join rollouts using (rollout_id) where run_id = ? group by 1 order by 1",
                     [run_id])
        assert [(int(r["step"]), number(r["mean_live"])) for r in mine("report_branch_width")] == live
        # end reasons: rollouts and nodes
        ends = dict(query(wh, "select end_reason, count(*) from rollouts where run_id = ? group by 1", [run_id]))
        assert {r["end_reason"]: int(r["n"]) for r in mine("report_end_reasons") if r["scope"] == "rollout"} == ends
        branch_ends = dict(query(wh, "select nodes.end_reason, count(*) from nodes join rollouts using (rollout_id) "
                                     "where run_id = ? and ended group by 1", [run_id]))
        assert {r["end_reason"]: int(r["n"]) for r in mine("report_end_reasons")
                if r["scope"] == "branch"} == branch_ends
        # tool errors: the tool_errors view
        errors = dict(query(wh, "select error_kind, sum(errors) from tool_errors where run_id = ? group by 1",
                            [run_id]))
        assert {r["error_kind"]: int(r["errors"]) for r in mine("report_tool_errors")} == errors
        # collapse depth: one collapse per credited step of branch_stats, crediting every goal done
        collapses = query(wh, "select count(*), sum(goals_credited) from branch_stats where run_id = ? "
                              "and goals_credited > 0", [run_id])[0]
        assert (sum(int(r["collapses"]) for r in mine("report_collapse_depth")),
                sum(int(r["goals_credited"]) for r in mine("report_collapse_depth"))) == (collapses[0], totals[1])
        # tokens per rollout: the rollouts table
        tokens = query(wh, "select rollout_id, prompt_tokens, completion_tokens from rollouts where run_id = ? "
                           "order by rollout_id", [run_id])
        assert [(r["rollout_id"], int(r["prompt_tokens"]), int(r["completion_tokens"]))
                for r in mine("report_tokens")] == tokens
    assert any(r["run_id"] == ids["harvest"] for r in tables["report_tool_errors"]), "some calls failed"


@pytest.mark.slow
def test_loop_report_rereads_scores_and_intervals(runs, tmp_path):
    wh, ids = runs
    evals = {m: ids[m] for m in ("M0", "M0'", "M1")}
    # the shape factory/jobs/loop.py writes (LoopResult), from the functions the loop uses
    loop = {"config": {"seed": 0}, "runs": {f"eval {m}": r for m, r in evals.items()},
            "scores": {m: run_lib.scored(str(wh), r) for m, r in evals.items()},
            "comparisons": {f"M1 - {o}": run_lib.compare(str(wh), evals["M1"], evals[o], seed=0)
                            for o in ("M0", "M0'")}}
    for m, score in loop["scores"].items():  # each model's own interval: a bootstrap of its per-task rewards
        rewards = [r for (r,) in query(wh, "select avg(reward) from rollouts where run_id = ? group by task_id "
                                           "order by task_id", [evals[m]])]
        alone = paired_bootstrap(rewards, [0.0] * len(rewards))
        assert (score["reward_low"], score["reward_high"]) == (alone["low"], alone["high"])
        assert score["reward_low"] <= score["average_reward"] <= score["reward_high"]
    loop_dir = tmp_path / "loop"
    loop_dir.mkdir()
    (loop_dir / "loop.json").write_text(json.dumps(loop, default=str))
    out = tmp_path / "report"
    result = run("report", "--loop", str(loop_dir), "--out", str(out), "-w", str(wh))
    assert result.returncode == 0, result.stderr
    assert browser.pixel_stddev(out / "loop.png") > 5
    tables = page_tables(out)
    assert sorted(r["run_id"] for r in tables["report_runs"]) == sorted(evals.values())
    scores = {r["model"]: (r["run_id"], number(r["average_reward"]), number(r["success_rate"]))
              for r in tables["loop_scores"]}
    assert scores == {m: tuple(query(wh, "select run_id, average_reward, success_rate from eval_summary "
                                         "where run_id = ?", [r])[0]) for m, r in evals.items()}
    compared = {r["comparison"]: tuple(number(r[k]) for k in ("diff", "low", "high", "p_not_better", "tasks"))
                for r in tables["loop_comparisons"]}
    assert compared == {name: tuple(float(c[k]) for k in ("diff", "low", "high", "p_not_better", "tasks"))
                        for name, c in loop["comparisons"].items()}
    paired = query(wh, "select count(*) from rollouts a join rollouts b using (task_id) where a.run_id = ? "
                       "and b.run_id = ?", [evals["M1"], evals["M0"]])[0][0]
    assert compared["M1 - M0"][4] == paired


@pytest.mark.slow
def test_two_eval_runs_are_compared_with_the_first(runs, tmp_path):
    wh, ids = runs
    out = tmp_path / "report"
    result = run("report", ids["M0"], ids["M1"], "--out", str(out), "-w", str(wh))
    assert result.returncode == 0, result.stderr
    (row,) = page_tables(out)["loop_comparisons"]
    expected = run_lib.compare(str(wh), ids["M1"], ids["M0"])
    assert row["comparison"] == f"{ids['M1']} - {ids['M0']}"
    assert number(row["diff"]) == expected["diff"] and number(row["low"]) == expected["low"]


def test_report_on_the_example_warehouse(tmp_path):
    out = tmp_path / "report"
    result = run("report", "harvest-e5961ad826", "harvest-849e68576c", "eval-86130c73c5", "--out", str(out),
                 "-w", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{f}.png" for f in FIGURES)
    tables = page_tables(out)
    assert [r["run_id"] for r in tables["report_runs"]] == ["harvest-e5961ad826", "harvest-849e68576c",
                                                             "eval-86130c73c5"]
    summary = dict(query(EXAMPLE, "select run_id, nodes from harvest_summary where run_id in "
                                  "('harvest-e5961ad826', 'harvest-849e68576c')"))
    assert {r["run_id"]: int(r["nodes"]) for r in tables["report_runs"] if r["kind"] == "harvest"} == summary


def test_bad_input_is_one_line_exit_2(tmp_path):
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(EXAMPLE, copy)
    con = duckdb.connect(str(copy))
    con.execute("insert into runs (run_id, kind, created_at, status, config) values "
                "('harvest-empty', 'harvest', now(), 'done', '{}')")
    con.close()
    existing = tmp_path / "exists"
    existing.mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    cases = {("nope",): "unknown run 'nope'",
             ("harvest-e5961ad826", "--out", str(existing)): "exists; pass --force",
             ("--loop", str(tmp_path / "missing")): "no loop.json at",
             ("--loop", str(tmp_path / "bad.json")): "is not JSON",
             (): "pass one or more RUN ids"}
    for args, message in cases.items():
        out = [] if "--out" in args else ["--out", str(tmp_path / "new")]
        result = run("report", *args, *out, "-w", str(copy))
        assert result.returncode == 2, (args, result.stderr)
        assert message in one_line_error(result), args
        assert not (tmp_path / "new").exists()
    # --force writes into the existing folder
    result = run("report", "harvest-e5961ad826", "--out", str(existing), "--force", "-w", str(copy))
    assert result.returncode == 0, result.stderr
    assert (existing / "report.html").is_file()
    # a run without rollouts: the report says so and draws nothing
    result = run("report", "harvest-empty", "--out", str(tmp_path / "empty"), "-w", str(copy))
    assert result.returncode == 0, result.stderr
    assert "no rollouts in harvest-empty" in result.stderr
    page = (tmp_path / "empty" / "report.html").read_text()
    assert "No rollouts in run harvest-empty: there is nothing to plot" in page
    assert list((tmp_path / "empty").glob("*.png")) == []


def test_plot_loop_draws_todays_loop_json_and_iterations(tmp_path):
    comparison = {"diff": 0.0092, "low": -0.0025, "high": 0.025, "p_not_better": 0.096, "tasks": 100}
    today = {"scores": {"M0": {"average_reward": 0.0158, "success_rate": 0.0}, "M0'": {"average_reward": 0.0075},
                        "M1": {"average_reward": 0.0167, "success_rate": 0.0}},
             "comparisons": {"M1 - M0": {**comparison, "diff": 0.0008, "low": -0.0175, "high": 0.0192},
                             "M1 - M0'": comparison}}
    assert [it["label"] for it in plots.loop_iterations(today)] == ["iteration 1"]
    later = {"iterations": [today, {"scores": {"M1": {"average_reward": 0.0167}, "M2": {"average_reward": 0.03},
                                               "M1'": {"average_reward": 0.02},
                                               "M1^rft": {"average_reward": 0.025, "reward_low": 0.01,
                                                          "reward_high": 0.04}},
                                    "comparisons": {"M2 - M1": comparison, "M2 - M1'": comparison,
                                                    "M2 - M1^rft": comparison}}]}
    assert [len(it["comparisons"]) for it in plots.loop_iterations(later)] == [2, 3]
    chain, rivals = plots._chain(plots.loop_iterations(later))
    assert [name for name, _ in chain] == ["M0", "M1", "M2"]  # the curve; each rival beside the model it rivals
    assert [(x, name) for x, name, _ in rivals] == [(1, "M0'"), (2, "M1'"), (2, "M1^rft")]
    for name, loop in {"today": today, "later": later}.items():
        png = plots.plot_loop(loop, tmp_path / f"{name}.png")
        assert png.stat().st_size > 10_000 and browser.pixel_stddev(png) > 5


@pytest.mark.slow
def test_report_renders_in_chromium_without_console_errors(runs, tmp_path):
    browser.need_chromium()
    wh, ids = runs
    out = tmp_path / "report"
    assert run("report", ids["harvest"], ids["M0"], ids["M1"], "--out", str(out), "-w", str(wh)).returncode == 0
    png = tmp_path / "report.png"
    assert browser.screenshot(out / "report.html", png, tmp_path / "profile", size=(1200, 2400)) == []
    assert browser.pixel_stddev(png) > 10, "the screenshot is not blank"
    rendered = browser.dom(out / "report.html", tmp_path / "profile2")
    assert rendered.count('<img src="data:image/png;base64,') == len(FIGURES) + 1
