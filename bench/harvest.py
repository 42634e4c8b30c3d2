"""Harvest benchmark: the batched JOSH scheduler vs. the serial one, and the harvest vs. raw batched `generate`.

Fixed workload: the default tiny model, the first N `val_harvest` tasks (sorted ids), the rule user, beam B,
temperature 1.0, the same `max_new_tokens` in every mode. Compared:
1. batched (`SearchConfig(serial=False)`, all tasks at once through `run_all`, one backend batching every
   pending request) vs. serial (`serial=True`, concurrency 1, a backend with `max_batch=1`: one leaf's request
   at a time): conversations/min and their ratio;
2. the batched harvest's generated tokens/s vs. raw batched `generate`: the very batches the harvest ran
   (recorded, re-rendered to token ids), replayed through plain `model.generate` with left padding at the same
   batch sizes and `min_new_tokens = max_new_tokens` (every row generates the full length), best of 2 per batch;
3. tool time (`ToolEnv.call_many`) and warehouse write time (`Writer.append`) as shares of the harvest's wall
   time, and peak RSS. Timings are printed, never asserted.

    python bench/harvest.py [--tasks 20] [--beam 8] [--max-new-tokens 48] [--max-steps 4] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import wraps
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from factory.warehouse import Writer
from search.backends.base import Completion, Request
from search.backends.transformers import BackendStats, TransformersBackend
from search.josh import SearchConfig, branch_seed, run_rollout
from search.runner import ToolRunner, max_batch, run_all
from toolwoz import multiwoz, tables
from toolwoz.tasks import Task
from toolwoz.tools import ToolEnv
from toolwoz.user_rule import RuleUser

TARGET_RATIO, TARGET_RAW_SHARE, TARGET_OVERHEAD_SHARE = 2.0, 0.70, 0.02


class RecordingBackend(TransformersBackend):
    """The transformers backend, remembering every batch of requests it ran (for the raw replay)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)  # the batcher binds `self.generate_batch`, i.e. the method below
        self.recorded: list[list[Request]] = []

    def generate_batch(self, requests: Sequence[Request]) -> list[Completion]:
        self.recorded.append(list(requests))
        return super().generate_batch(requests)


def timed(fn: Callable[..., Any], clock: list[float]) -> Callable[..., Any]:
    """`fn`, adding the seconds each call takes to `clock[0]`."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[0] += time.perf_counter() - start
    return wrapper


@dataclass
class Harvest:
    label: str
    wall_s: float
    rollouts: list[dict[str, Any]]
    tool_s: float
    write_s: float
    backend: RecordingBackend

    @property
    def per_min(self) -> float:
        return len(self.rollouts) / self.wall_s * 60

    @property
    def tokens(self) -> int:
        return sum(r["completion_tokens"] for r in self.rollouts)


def harvest(label: str, env: ToolEnv, tasks: list[Task], backend: RecordingBackend, config: SearchConfig,
            concurrency: int) -> Harvest:
    """Run one rollout per task into a fresh temporary warehouse; time tools and writes."""
    tool_clock, write_clock = [0.0], [0.0]
    env.call_many = timed(ToolEnv.call_many.__get__(env), tool_clock)  # ToolRunner binds it at construction
    tools = ToolRunner(env)
    rollouts: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, Writer(Path(tmp) / "bench.duckdb", f"bench/harvest.py {label}") as w:
        append = timed(w.append, write_clock)

        def on_result(result: Any) -> None:
            append(result.tables())
            rollouts.append(result.rollout)

        def job(task: Task) -> Callable[[], Any]:
            user = RuleUser(task.goal, branch_seed(config.seed, task.task_id, 0, -2))
            return lambda: run_rollout(task, backend, user, tools, config, rollout_id=f"{label}/{task.task_id}/0",
                                       run_id=label)

        start = time.perf_counter()
        asyncio.run(run_all([job(t) for t in tasks], concurrency=concurrency, on_result=on_result))
        wall = time.perf_counter() - start
    del env.call_many
    return Harvest(label, wall, rollouts, tool_clock[0], write_clock[0], backend)


@dataclass
class Replay:
    tokens: int = 0  # generated
    seconds: float = 0.0
    prompt: int = 0  # real prompt tokens
    padded: int = 0  # prompt tokens with padding
    rows: int = 0


def raw_generate(backend: TransformersBackend, batches: list[list[Request]], new_tokens: int | None = None,
                 repeat: int = 2) -> Replay:
    """Replay `batches` through plain `model.generate`, every row generating the batch's `max_new_tokens`
    (or `new_tokens`: 1 times the prefill alone); each batch's time is the best of `repeat` runs."""
    replay = Replay()
    for requests in batches:
        rows = [(backend.render(r), r.params.max_new_tokens) for r in requests]
        rows = [(ids, n) for ids, n in rows if len(ids) <= backend.max_context - n]  # overflows never ran
        if not rows:
            continue
        width, new = max(len(ids) for ids, _ in rows), new_tokens or max(n for _, n in rows)
        input_ids = torch.full((len(rows), width), backend.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, _) in enumerate(rows):
            input_ids[r, width - len(ids):] = torch.tensor(ids)
            attention[r, width - len(ids):] = 1
        config = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=None, min_new_tokens=new,
                                  max_new_tokens=new, pad_token_id=backend.pad_id, eos_token_id=backend.eos_ids)
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            with torch.inference_mode():
                out = backend.model.generate(input_ids=input_ids.to(backend.device),
                                             attention_mask=attention.to(backend.device), generation_config=config)
            best = min(best, time.perf_counter() - start)
        replay.seconds += best
        replay.tokens += (out.shape[1] - width) * len(rows)
        replay.prompt += sum(len(ids) for ids, _ in rows)
        replay.padded += width * len(rows)
        replay.rows += len(rows)
    return replay


def ensure_model(path: Path, env: ToolEnv) -> Path:
    if not (path / "config.json").exists():
        from toolwoz.corpus import build_corpus
        from train.tiny_model import init_model

        print(f"creating the tiny model in {path} ...", flush=True)
        init_model(path, build_corpus(env.rows, env.tasks.values()))
    return path


def load(model: Path, max_batch: int) -> RecordingBackend:
    """A recording backend, warmed up (one-time costs of the first `generate` are not timed)."""
    backend = RecordingBackend(model, max_batch=max_batch)
    backend.generate_batch([Request([{"role": "user", "content": "warm up"}])])
    backend.recorded.clear()
    backend.stats = BackendStats()
    return backend


def describe(h: Harvest) -> str:
    stats, sizes = h.backend.stats, [len(b) for b in h.backend.recorded]
    ends: dict[str, int] = {}
    for r in h.rollouts:
        ends[r["end_reason"]] = ends.get(r["end_reason"], 0) + 1
    failed = sum(r["status"] != "done" for r in h.rollouts)
    return (f"{h.label:>8}: {len(h.rollouts)} rollouts ({failed} failed; ends {ends}) in {h.wall_s:.1f} s; "
            f"{len(sizes)} generate batches, rows/batch mean {statistics.mean(sizes or [0]):.1f} "
            f"median {statistics.median(sizes or [0]):.0f} max {max(sizes or [0])}; "
            f"{h.tokens} tokens generated; inside model.generate {stats.generate_s:.1f} s "
            f"({stats.generate_s / h.wall_s:.0%} of wall); mean reward "
            f"{statistics.mean([r['reward'] for r in h.rollouts] or [0]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multiwoz", default=os.environ.get("FACTORY_MULTIWOZ"),
                        help="MultiWOZ folder or zip (default: $FACTORY_MULTIWOZ)")
    parser.add_argument("--tasks", type=int, default=20, help="first N val_harvest tasks (default 20)")
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48, help="per model call, both modes (default 48)")
    parser.add_argument("--max-steps", type=int, default=4, help="agent turns per branch (default 4)")
    parser.add_argument("--concurrency", type=int, default=20, help="rollouts in flight when batched (default 20)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="rows per batched generate (default: concurrency x beam, search.runner.max_batch)")
    parser.add_argument("--model", type=Path, default=None, help="default: the tiny model (created if missing)")
    parser.add_argument("--skip-serial", action="store_true", help="only the batched harvest (development)")
    args = parser.parse_args()

    from factory.default_model import location

    load_start = os.getloadavg()[0]

    env = ToolEnv.from_connection(tables.in_memory(multiwoz.load(args.multiwoz)))
    tasks = sorted((t for t in env.tasks.values() if "val_harvest" in t.splits), key=lambda t: t.task_id)[:args.tasks]
    model = args.model or ensure_model(location(), env)
    batch = args.max_batch or max_batch(args.concurrency, args.beam)
    config = SearchConfig(beam=args.beam, max_steps=args.max_steps, temperature=1.0,
                          max_new_tokens=args.max_new_tokens)
    print(f"settings: model {model}; {len(tasks)} val_harvest tasks ({tasks[0].task_id} .. {tasks[-1].task_id}); "
          f"rule user; beam {args.beam}; max_steps {args.max_steps}; max_new_tokens {args.max_new_tokens}; "
          f"temperature 1.0; batched concurrency {args.concurrency}, max_batch "
          f"{batch}; torch threads {torch.get_num_threads()}",
          flush=True)

    batched_backend = load(model, max_batch=batch)
    batched = harvest("batched", env, tasks, batched_backend, config, args.concurrency)
    print(describe(batched), flush=True)
    raw = raw_generate(batched_backend, batched_backend.recorded)
    prefill = raw_generate(batched_backend, batched_backend.recorded, new_tokens=1)
    serial = None
    if not args.skip_serial:
        serial = harvest("serial", env, tasks, load(model, max_batch=1), replace(config, serial=True), 1)
        print(describe(serial), flush=True)
        same = {r["task_id"]: r["completion_tokens"] for r in serial.rollouts} == \
            {r["task_id"]: r["completion_tokens"] for r in batched.rollouts}
        print(f"per-rollout generated tokens equal in both modes (per-row seeds): {same}")
    raw_rate, harvest_rate = raw.tokens / raw.seconds, batched.tokens / batched.wall_s
    tool_share, write_share = batched.tool_s / batched.wall_s, batched.write_s / batched.wall_s
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\nraw batched generate: the batched harvest's {len(batched_backend.recorded)} batches replayed through "
          f"plain model.generate (same prompts, batch sizes, left padding; min_new_tokens = max_new_tokens; best of 2 per batch): "
          f"{raw.tokens} tokens in {raw.seconds:.1f} s (the prefill alone, max_new_tokens=1: {prefill.seconds:.1f} s); "
          f"{raw.rows} rows, mean prompt {raw.prompt / max(raw.rows, 1):.0f} tokens, padding efficiency "
          f"{raw.prompt / max(raw.padded, 1):.0%} (real / padded prompt tokens)")
    verdict = {True: "met", False: "MISSED"}
    rows = [("batched conversations/min", f"{batched.per_min:.1f}", "", "")]
    if serial is not None:
        ratio = batched.per_min / serial.per_min
        rows += [("serial conversations/min", f"{serial.per_min:.1f}", "", ""),
                 ("batched / serial", f"{ratio:.2f}x", f">= {TARGET_RATIO:.0f}x", verdict[ratio >= TARGET_RATIO])]
    share = harvest_rate / raw_rate
    rows += [("harvest generated tokens/s", f"{harvest_rate:.0f}", "", ""),
             ("raw batched generate tokens/s", f"{raw_rate:.0f}", "", ""),
             ("harvest / raw", f"{share:.0%}", f">= {TARGET_RAW_SHARE:.0%}", verdict[share >= TARGET_RAW_SHARE]),
             ("tool time / harvest wall", f"{tool_share:.2%} ({batched.tool_s:.2f} s)",
              f"<= {TARGET_OVERHEAD_SHARE:.0%}", verdict[tool_share <= TARGET_OVERHEAD_SHARE]),
             ("write time / harvest wall", f"{write_share:.2%} ({batched.write_s:.2f} s)",
              f"<= {TARGET_OVERHEAD_SHARE:.0%}", verdict[write_share <= TARGET_OVERHEAD_SHARE]),
             ("peak RSS", f"{peak_mb:.0f} MB", "", "")]
    outside = batched.wall_s - batched_backend.stats.generate_s
    print(f"where the batched harvest's {batched.wall_s:.1f} s went: {batched_backend.stats.generate_s:.1f} s inside the "
          f"backend's model.generate (raw replay of the same batches: {raw.seconds:.1f} s), {outside:.1f} s outside it")
    print(f"load average (1 min): {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end, on {os.cpu_count()} CPUs "
          "(other processes' load distorts every timing here)")
    print(f"\n{'measure':<32}{'value':>22}{'target':>10}{'':>8}")
    for name, value, target, ok in rows:
        print(f"{name:<32}{value:>22}{target:>10}{ok:>8}")


if __name__ == "__main__":
    main()
