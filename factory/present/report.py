"""`factory report`: a self-contained HTML page (and the PNGs it embeds) about some runs, or a loop.

The report is a view of the warehouse, not a second computation: every figure plots the rows of one query
in `sql/queries/report_*.sql` (each built on the views), the page shows those rows beside the figure, and the
loop section re-reads the eval runs a loop.json names (`eval_summary`) and re-runs their paired bootstrap
(`runs.compare` over `queries/paired_rewards`) with the loop's seed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sql
from factory.errors import UserError
from factory.present import plots
from factory.store import runs, warehouse

HTML_NAME = "report.html"
LOOP_PNG = "loop.png"


@dataclass(frozen=True)
class Section:
    """One figure: the query whose rows it plots, a title, what it shows, and how to draw it."""

    query: str
    title: str
    caption: str
    draw: Callable[[list[dict[str, Any]], list[str], Path], Path]


SECTIONS = (
    Section("report_reward_by_domain", "Reward per domain",
            "Share of the tasks' goals (ground-truth search_* / book_* calls) that were credited, per domain.",
            lambda rows, ids, png: plots.goal_rates(rows, "domain", ids, "Goals credited per domain", png)),
    Section("report_reward_by_goal_kind", "Reward per goal kind",
            "Share of search goals and of book goals that were credited.",
            lambda rows, ids, png: plots.goal_rates(rows, "goal_kind", ids, "Goals credited per goal kind", png)),
    Section("report_branch_width", "Branch width and live leaves per step",
            "Nodes created per JOSH step (branch_stats.width) and the branches still live after it, "
            "averaged over the rollouts that reached the step.", plots.branch_width),
    Section("report_end_reasons", "End reasons", "Why rollouts ended, and why their branches ended.",
            plots.end_reasons),
    Section("report_tool_errors", "Tool-error kinds", "Failed tool calls per error kind (tool_errors view).",
            plots.tool_errors),
    Section("report_collapse_depth", "Collapse depth",
            "Depth at which a tree collapsed onto a branch that met a goal (branch_stats.goals_credited).",
            plots.collapse_depth),
    Section("report_tokens", "Tokens per rollout",
            "Prompt tokens read and tokens generated over every branch of a rollout (the teacher generates none).",
            plots.tokens),
)


@dataclass
class Report:
    """What `build_report` wrote."""

    html: Path
    pngs: list[Path] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    empty_runs: list[str] = field(default_factory=list)


def _records(cur) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def load_loop(path: Path) -> dict[str, Any]:
    """A `factory loop` output: its loop.json, or the folder holding it."""
    file = path / "loop.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"no loop.json at {file}; pass the --out folder of `factory loop` or its loop.json")
    try:
        loop = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{file} is not JSON ({e.msg} at line {e.lineno}); pass a loop.json") from None
    if not isinstance(loop, dict) or not plots.loop_iterations(loop)[0]["scores"]:
        raise UserError(f"{file} has no `scores`; pass the loop.json that `factory loop` wrote")
    return loop


def loop_runs(loop: dict[str, Any]) -> list[str]:
    """Every run a loop.json names (stages, then each iteration's), in order."""
    stages = [loop.get("runs") or {}] + [it.get("runs") or {} for it in loop.get("iterations") or []]
    return list(dict.fromkeys(run for s in stages for run in s.values()))


def _scores(con, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = _records(con.execute("SELECT * FROM eval_summary WHERE list_contains(?, run_id)", [run_ids]))
    return {r["run_id"]: r for r in rows}


def refresh_loop(loop: dict[str, Any], warehouse_path: str) -> dict[str, Any]:
    """The loop.json with its scores and comparisons re-read from the warehouse (same shape, so plot_loop
    draws either). A run the warehouse lacks is a UserError naming the fix."""
    seed = (loop.get("config") or {}).get("seed", 0)
    wanted = [s["run_id"] for it in plots.loop_iterations(loop) for s in it["scores"].values()]
    with warehouse.opened(warehouse_path, read_only=True) as con:
        found = _scores(con, wanted)
    if missing := [r for r in wanted if r not in found]:
        raise UserError(f"the loop's eval run {missing[0]} is not in warehouse {warehouse_path}; pass the "
                        "warehouse the loop wrote (-w)")

    def refresh(entry: dict[str, Any]) -> dict[str, Any]:
        return {**entry,
                "scores": {m: found[s["run_id"]] | runs.reward_interval(warehouse_path, s["run_id"], seed=seed)
                           for m, s in entry.get("scores", {}).items()},
                "comparisons": {name: runs.compare(warehouse_path, c["run_a"], c["run_b"], seed=seed)
                                for name, c in entry.get("comparisons", {}).items()}}

    if loop.get("iterations"):
        return {**loop, "iterations": [refresh(it) for it in loop["iterations"]]}
    return refresh(loop)


def eval_comparison(con, run_ids: list[str], warehouse_path: str) -> dict[str, Any] | None:
    """For two or more eval runs given directly: a loop-shaped dict comparing each with the first."""
    scores = _scores(con, run_ids)
    evals = [r for r in run_ids if r in scores and scores[r]["rollouts"]]
    if len(evals) < 2:
        return None
    base = evals[0]
    comparisons = {}
    for other in evals[1:]:
        try:
            comparisons[f"{other} - {base}"] = runs.compare(warehouse_path, other, base)
        except UserError:
            continue  # no shared task: nothing to pair
    return {"scores": {r: scores[r] for r in evals}, "comparisons": comparisons}


def build_report(warehouse_path: str, run_ids: list[str], out_dir: Path, *, loop_file: Path | None = None,
                 force: bool = False) -> Report:
    """Write `out_dir/report.html` and its PNGs for `run_ids` (unique prefixes work) and/or a loop output."""
    if out_dir.exists() and not force:
        raise UserError(f"{out_dir} exists; pass --force to write into it, or another --out")
    if not out_dir.parent.is_dir():
        raise UserError(f"folder {out_dir.parent} does not exist; create it or pass another --out")
    loop = load_loop(loop_file) if loop_file else None
    requested = list(run_ids) or (loop_runs(loop) if loop else [])
    with warehouse.opened(warehouse_path, read_only=True) as con:
        ids = list(dict.fromkeys(runs.resolve_run(con, r) for r in requested))
        params = {"run_ids": ids}
        summary = _records(con.execute(sql.load("queries/report_runs"), params))
        data = {s.query: _records(con.execute(sql.load(f"queries/{s.query}"), params)) for s in SECTIONS}
        comparison = None if loop else eval_comparison(con, ids, warehouse_path)
    if loop:
        comparison = refresh_loop(loop, warehouse_path)

    out_dir.mkdir(exist_ok=True)
    for stale in [*out_dir.glob("report_*.png"), out_dir / LOOP_PNG]:
        stale.unlink(missing_ok=True)
    report = Report(html=out_dir / HTML_NAME, runs=ids,
                    empty_runs=[r["run_id"] for r in summary if not r["rollouts"]])
    with_rollouts = [r["run_id"] for r in summary if r["rollouts"]]
    sections = []
    for s in SECTIONS if with_rollouts else ():
        rows = data[s.query]
        png = s.draw(rows, with_rollouts, out_dir / f"{s.query}.png") if rows else None  # one colour per run
        report.pngs += [png] if png else []
        sections.append({"id": s.query, "title": s.title, "caption": s.caption, "rows": rows,
                         "image": _data_uri(png) if png else None})
    loop_section = None
    if comparison and any(it["scores"] for it in plots.loop_iterations(comparison)):
        png = plots.plot_loop(comparison, out_dir / LOOP_PNG)
        report.pngs.append(png)
        loop_section = {"image": _data_uri(png), "title": "Self-training loop" if loop else "Eval runs compared",
                        "scores": [{"iteration": it["label"], "model": m, **{k: s.get(k) for k in (
                            "run_id", "rollouts", "average_reward", "success_rate")}}
                                   for it in plots.loop_iterations(comparison) for m, s in it["scores"].items()],
                        "comparisons": [{"iteration": it["label"], "comparison": name, **{k: c[k] for k in (
                            "diff", "low", "high", "p_not_better", "tasks")}}
                                        for it in plots.loop_iterations(comparison)
                                        for name, c in it["comparisons"].items()]}
    html = _templates().get_template("report.html.j2").render(
        runs=summary, sections=sections, loop=loop_section, empty_runs=report.empty_runs,
        warehouse=str(Path(warehouse_path).resolve()), loop_file=str(loop_file) if loop_file else None,
        generated=datetime.now().strftime("%Y-%m-%d %H:%M"), fmt=_fmt)
    report.html.write_text(html, encoding="utf-8")
    return report


def _fmt(value: Any) -> str:
    return "NULL" if value is None else str(value)


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _templates():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("factory.present", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined)
