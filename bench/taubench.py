"""τ-bench on DuckDB, measured side by side in one run.

    python bench/taubench.py [--domain retail] [--tasks 40] [--beam 8] [--reference PATH_TO_TAU_BENCH]

1. Tool calls: every gold action of the first `--tasks` tasks, run by our SQL tools one call at a time
   (`TauEnv.call`) and batched (`TauEnv.call_many`, the i-th actions of every task in one batch), and, with
   `--reference` (a τ-bench checkout, e.g. the JOSH reference's `tau-bench-eval`), by τ-bench's own Python tools on
   a deep copy of the data per task as its `Env.reset` gives; the observations must be identical.
2. Branch state of JOSH trees: the real engine (`search.josh.Rollout`) harvests the same tasks with the oracle
   agent at temperature 1 and beam `--beam`, every branch's writes as rows over one copy of the base tables.
   Against it, the state the reference keeps for the same trees: it deep-copies the whole environment for every
   node and keeps the tree (`copy.deepcopy` of the database per node, all alive until the tree ends), measured
   here by doing exactly that for as many nodes as each of our trees had (time; traced memory of the largest
   tree, against the traced peak of our whole harvest, which holds 16 trees at once).
Prints the figures, the ratios, and the load average (run it alone: a loaded 2-core machine distorts timings).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.backends.scripted import ScriptedBackend  # noqa: E402
from search.josh import HARVEST, Rollout, branch_seed  # noqa: E402
from search.runner import ToolRunner, run_all  # noqa: E402
from taubench import data as tbdata  # noqa: E402
from taubench.env import TauEnv, TauRequest  # noqa: E402
from taubench.environment import TauBench  # noqa: E402
from taubench.state import Branch  # noqa: E402


def tool_calls(tau: TauBench, tasks: list[Any], reference: Path | None) -> dict[str, Any]:
    """Our tools one by one and batched, and τ-bench's own on deep copies, on every gold action of `tasks`."""
    env = tau.env
    plans = [[a for a in t.task.actions if a.name != tbdata.RESPOND] for t in tasks]
    n_calls = sum(map(len, plans))
    start = time.perf_counter()
    single = []
    for i, plan in enumerate(plans):
        branch = Branch(f"bench-single-{i}", (0,))
        single.append([env.call(a.name, a.kwargs, branch=branch, pos=p).content for p, a in enumerate(plan)])
        env.forget(branch.rollout_id)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched: list[list[str]] = [[] for _ in plans]
    for p in range(max(map(len, plans), default=0)):
        requests = [(i, TauRequest(plan[p].name, plan[p].kwargs, Branch(f"bench-batch-{i}", (0,)), p))
                    for i, plan in enumerate(plans) if p < len(plan)]
        for (i, _), call in zip(requests, env.call_many([r for _, r in requests])):
            batched[i].append(call.content)
    for i in range(len(plans)):
        env.forget(f"bench-batch-{i}")
    batched_s = time.perf_counter() - start
    out = {"calls": n_calls, "ours_single_s": single_s, "ours_batched_s": batched_s,
           "batched_same": batched == single}
    if reference is not None:
        from bench.taubench_parity import reference_step, reference_tools

        tools = reference_tools(reference, tau.name)
        base = tbdata.load_database(tbdata.locate(None), tau.name)
        theirs, copy_s, calls_s = [], 0.0, 0.0
        for plan in plans:
            start = time.perf_counter()
            db = copy.deepcopy(base)  # Env.reset: a fresh database per task
            copy_s += time.perf_counter() - start
            start = time.perf_counter()
            theirs.append([reference_step(tools, db, a.name, dict(a.kwargs)) for a in plan])
            calls_s += time.perf_counter() - start
        out |= {"reference_s": calls_s, "reference_copy_s": copy_s, "reference_same": theirs == single}
    return out


async def _harvest(tau: TauBench, tasks: list[Any], beam: int) -> list[Any]:
    config = dataclasses.replace(HARVEST, beam=beam, temperature=1.0, max_turns=30)
    tools = ToolRunner(tau)
    results = []

    def job(task: Any):
        async def run() -> Any:
            rollout_id = f"bench/{task.task_id}/0"
            agent = ScriptedBackend("oracle", tau.scripted_agent("oracle", task))
            user = tau.user("rule", task, branch_seed(0, task.task_id, 0, -2), None)
            result = await Rollout(task, agent, user, tools, config, rollout_id=rollout_id, run_id="bench").run()
            tau.forget(rollout_id)
            return result
        return run

    await run_all([job(t) for t in tasks], concurrency=16, on_result=results.append)
    return results


def branch_state(tau: TauBench, tasks: list[Any], beam: int) -> dict[str, Any]:
    """JOSH trees on our branch state vs. the reference's deep copy per node, for the same trees. Times are taken
    without tracemalloc (it slows allocation); memory in a second, traced pass of the same work."""
    gc.collect()
    start = time.perf_counter()
    results = asyncio.run(_harvest(tau, tasks, beam))
    ours_s = time.perf_counter() - start
    gc.collect()
    tracemalloc.start()
    asyncio.run(_harvest(tau, tasks, beam))  # the same trees (every seed is derived from the task)
    ours_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    nodes = [len(r.nodes) for r in results]
    writes = [r.state_changes for r in results]
    write_bytes = sum(len(w["before"] or "") + len(w["after"] or "") for ws in writes for w in ws)
    base = tbdata.load_database(tbdata.locate(None), tau.name)
    gc.collect()
    start = time.perf_counter()
    for n in nodes:  # the reference: every node of a tree holds its own deep copy until the tree ends
        tree = [copy.deepcopy(base) for _ in range(n)]
        del tree
    copy_s = time.perf_counter() - start
    gc.collect()
    tracemalloc.start()
    tree = [copy.deepcopy(base) for _ in range(max(nodes, default=0))]  # the largest tree, alive at once
    copy_peak = tracemalloc.get_traced_memory()[1]
    del tree
    tracemalloc.stop()
    return {"trees": len(results), "nodes": sum(nodes), "max_nodes": max(nodes, default=0),
            "write_rows": sum(map(len, writes)), "write_bytes": write_bytes, "ours_s": ours_s,
            "ours_peak_bytes": ours_peak, "deepcopy_s": copy_s, "deepcopy_peak_bytes": copy_peak,
            "episode_reward": sum(r.rollout.get("episode_reward") or 0 for r in results) / max(len(results), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domain", choices=tbdata.DOMAINS, default="retail")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--reference", type=Path, default=None,
                        help="A τ-bench checkout (its tau_bench/envs/*/tools): compare with its own Python tools.")
    args = parser.parse_args()
    tau = TauBench(TauEnv.open(tbdata.in_memory(args.domain), args.domain))
    tasks = tau.tasks_in(args.split)[: args.tasks]
    calls = tool_calls(tau, tasks, args.reference)
    state = branch_state(tau, tasks, args.beam)
    mb = 1024 * 1024
    print(f"τ-bench {args.domain} {args.split}: {len(tasks)} tasks, load average {os.getloadavg()[0]:.2f}")
    print(f"tool calls (gold actions): {calls['calls']}")
    print(f"  ours, one at a time:      {calls['ours_single_s'] * 1e3 / calls['calls']:.2f} ms/call")
    print(f"  ours, batched by position: {calls['ours_batched_s'] * 1e3 / calls['calls']:.2f} ms/call "
          f"(observations identical: {calls['batched_same']})")
    if "reference_s" in calls:
        print(f"  τ-bench's Python tools on dicts: {calls['reference_s'] * 1e3 / calls['calls']:.2f} ms/call "
              f"(observations identical: {calls['reference_same']}), plus a deep copy of the database per task: "
              f"{calls['reference_copy_s'] * 1e3 / len(tasks):.0f} ms/task")
        both = calls["reference_s"] + calls["reference_copy_s"]
        ratio = calls["ours_single_s"] / calls["reference_s"]
        print(f"  ours one at a time / τ-bench's calls alone: {ratio:.1f}x the time; "
              f"/ τ-bench's calls and copies: {calls['ours_single_s'] / both:.2f}x")
    print(f"JOSH trees, oracle at temperature 1, beam {args.beam}: {state['trees']} trees, {state['nodes']} nodes "
          f"(largest {state['max_nodes']}), {state['write_rows']} write rows ({state['write_bytes'] / mb:.2f} MB), "
          f"τ-bench reward {state['episode_reward']:.2f}")
    print(f"  branch state as rows (the whole harvest, tools and reward included): {state['ours_s']:.2f} s, "
          f"peak traced Python memory {state['ours_peak_bytes'] / mb:.1f} MB (+ the write rows in DuckDB)")
    print(f"  the reference's deep copy per node (the copies alone):               {state['deepcopy_s']:.2f} s, "
          f"peak traced memory of the largest tree {state['deepcopy_peak_bytes'] / mb:.1f} MB")
    print(f"  deep copies / rows: {state['deepcopy_s'] / state['ours_s']:.2f}x the time, "
          f"{state['deepcopy_peak_bytes'] / max(state['ours_peak_bytes'], 1):.1f}x the memory")


if __name__ == "__main__":
    main()
