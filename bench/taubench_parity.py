"""Our SQL-backed τ-bench tools against τ-bench's own Python tools, on every gold action of every task.

    python bench/taubench_parity.py --reference /work/ref/tau-bench-eval [--domain retail] [--taubench PATH]

For each task, τ-bench's tool classes (loaded from the reference checkout by file path; its package `__init__`s,
which pull in litellm, are skipped) run the gold actions on a fresh load of the reference's own JSON data, as
`Env.step` does (`Error: {e}` for a raised exception, `Unknown action NAME`), and our `TauEnv` runs them on a fresh
branch. Every observation must be byte-identical, and so must every row either side changed. A few malformed calls
per tool (no arguments, an unknown argument) check the argument errors too. Prints the counts and timings; exit 1
on any mismatch.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import inspect
import json
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taubench import data as tbdata  # noqa: E402
from taubench.env import TauEnv, registry  # noqa: E402
from taubench.state import Branch  # noqa: E402


def reference_tools(reference: Path, domain: str) -> dict[str, Any]:
    """name -> τ-bench tool class, loaded from `tau_bench/envs/<domain>/tools/*.py` by file path."""
    package = reference / "tau_bench"
    for name, folder in (("tau_bench", package), ("tau_bench.envs", package / "envs")):
        if name not in sys.modules:  # bare packages: their real __init__ imports litellm and pydantic
            module = types.ModuleType(name)
            module.__path__ = [str(folder)]
            sys.modules[name] = module
    from tau_bench.envs.tool import Tool  # the real file

    tools = {}
    for path in sorted((package / "envs" / domain / "tools").glob("*.py")):
        if path.name == "__init__.py":
            continue
        spec = importlib.util.spec_from_file_location(f"_tau_{domain}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, Tool) and obj is not Tool:
                tools[obj.get_info()["function"]["name"]] = obj
    return tools


def reference_step(tools: dict[str, Any], db: dict[str, Any], name: str, kwargs: dict[str, Any]) -> str:
    """τ-bench's `Env.step` for a tool action."""
    if name not in tools:
        return f"Unknown action {name}"
    try:
        return tools[name].invoke(data=db, **kwargs)
    except Exception as e:
        return f"Error: {e}"


def changed_rows(before: dict[str, dict[str, str]], after: dict[str, Any]) -> dict[tuple[str, str], str | None]:
    """(tbl, key) -> the row's JSON text in `after` for every row whose text differs from `before`'s (None =
    removed)."""
    out = {}
    for tbl, rows in after.items():
        for key in set(rows) | set(before[tbl]):
            new = json.dumps(rows[key]) if key in rows else None
            if new != before[tbl].get(key):
                out[(tbl, key)] = new
    return out


# Airline calls no gold action makes (the one-stop search, odd dates and expressions), run after task 0's.
AIRLINE_PROBES = [
    *[("search_onestop_flight", {"origin": o, "destination": d, "date": day})
      for o, d in (("LGA", "SEA"), ("JFK", "SEA"), ("MIA", "LAX"), ("ORD", "PHL"))
      for day in ("2024-05-16", "2024-05-20", "2024-05-30", "2024-05-5", "tomorrow", 16)],
    *[("search_direct_flight", {"origin": "JFK", "destination": "SEA", "date": day})
      for day in ("2024-05-31", "2024-05-14", "", None, ["2024-05-20"])],
    *[("calculate", {"expression": e}) for e in ("1/0", "(1)(2)", "()", "2**2000", "(-8)**0.5", " 3*4", "1+")],
]


def run(reference: Path, domain: str, folder: Path, show: int) -> dict[str, Any]:
    tools = reference_tools(reference, domain)
    data_dir = reference / "tau_bench" / "envs" / domain / "data"
    texts = {tbl: (data_dir / f"{tbl}.json").read_text() for tbl in tbdata.TABLES[domain]}
    base = {tbl: {k: json.dumps(r) for k, r in json.loads(text).items()} for tbl, text in texts.items()}
    con = tbdata.in_memory(domain, folder=folder)
    env = TauEnv.open(con, domain)
    ours = registry(domain)
    counts = {"domain": domain, "tasks": 0, "calls": 0, "observation_mismatches": 0, "state_mismatches": 0,
              "reference_s": 0.0, "ours_s": 0.0, "missing_tools": sorted(set(tools) - set(ours))}
    shown = 0

    def report(kind: str, task_id: str, what: str, got: str | None, want: str | None) -> None:
        nonlocal shown
        counts[kind] += 1
        if shown < show:
            got, want = str(got), str(want)
            at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            print(f"  {kind.replace('_mismatches', ' mismatch')} in {task_id}, {what[:200]}, at character {at}:\n"
                  f"    ours:    ...{got[max(at - 60, 0):at + 60]}\n    τ-bench: ...{want[max(at - 60, 0):at + 60]}",
                  file=sys.stderr)
            shown += 1

    malformed = [(name, {}) for name in tools] + [(name, {"no_such_argument": 1}) for name in tools]
    for task in env.tasks.values():
        counts["tasks"] += 1
        calls = [(a.name, a.kwargs) for a in task.tool_actions]
        if task.index == 0:
            calls += malformed + (AIRLINE_PROBES if domain == "airline" else [])
        db = {tbl: json.loads(text) for tbl, text in texts.items()}  # τ-bench's fresh `load_data()`
        branch = Branch(f"parity/{task.task_id}", (0,))
        for name, kwargs in calls:
            if name in tools and name not in ours:
                continue
            counts["calls"] += 1
            t0 = time.perf_counter()
            expected = reference_step(tools, db, name, copy.deepcopy(kwargs))
            t1 = time.perf_counter()
            got = env.call(name, copy.deepcopy(kwargs), branch=branch).content
            counts["reference_s"] += t1 - t0
            counts["ours_s"] += time.perf_counter() - t1
            if got != expected:
                report("observation_mismatches", task.task_id, f"{name} {kwargs}", got, expected)
        expected_rows = changed_rows(base, db)
        written = {(w["tbl"], w["key"]) for w in env.state_changes(branch.rollout_id)}
        for tbl, key in sorted(set(expected_rows) | written):
            row = env.read(branch, tbl, key)
            got = None if row is None else json.dumps(row)
            want = expected_rows.get((tbl, key), base[tbl].get(key))
            if got != want:
                report("state_mismatches", task.task_id, f"row {tbl}/{key}", got, want)
        env.forget(branch.rollout_id)
    counts["reference_s"], counts["ours_s"] = round(counts["reference_s"], 3), round(counts["ours_s"], 3)
    return counts


def main() -> int:
    warnings.filterwarnings("ignore", category=SyntaxWarning)  # calculate's eval of e.g. "2(3)", either side
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, type=Path, help="the tau-bench-eval checkout")
    parser.add_argument("--taubench", type=Path, default=None, help="τ-bench data folder (default: located)")
    parser.add_argument("--domain", choices=("retail", "airline", "both"), default="both")
    parser.add_argument("--show", type=int, default=5, help="mismatches to print")
    args = parser.parse_args()
    folder = tbdata.locate(args.taubench)
    domains = ("retail", "airline") if args.domain == "both" else (args.domain,)
    bad = 0
    for domain in domains:
        if not registry(domain):
            print(json.dumps({"domain": domain, "skipped": "no tools module yet"}))
            continue
        counts = run(args.reference, domain, folder, args.show)
        print(json.dumps(counts))
        bad += counts["observation_mismatches"] + counts["state_mismatches"] + len(counts["missing_tools"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
