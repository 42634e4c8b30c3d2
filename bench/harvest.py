"""Harvest benchmark: shared-prefix vs flat decode, prefix reuse vs none, the batch fill, serial, raw `generate`.

Fixed workload: a model (`--model`, default the tiny model), the first N `val_harvest` tasks (sorted ids), the
rule user, beam B, temperature 1.0, the same `max_new_tokens` everywhere. Compared, side by side in one run:
1. the batched harvest with the prefix cache vs. the same harvest without it (`prefix_cache_tokens=0`, every
   prompt prefilled in full): conversations/min, and the prompt tokens the model computed against what the
   same tree needs without reuse (`prefill tokens vs no reuse`). Rows keep their seeds, so both build the
   same trees (checked: per-rollout generated tokens);
2. the batch fill: rows per generate against the live leaves of the rollouts in flight when it started
   (`rows per generate vs live leaves`), with the next step's first calls requested ahead at JOSH's step
   barrier (`search/ahead.py`, the product's schedule; such a row counts only if a turn took its answer) and,
   side by side, the same harvest without (`ahead=False`): conversations/min, fill, and the trees checked equal;
3. serial (`SearchConfig(serial=True)`, concurrency 1, `max_batch=1`; the reference's schedule);
4. raw batched `generate`: the no-reuse harvest's batches replayed through plain `model.generate` (left
   padding, every row generating `max_new_tokens`), generated tokens/s against the harvest's;
5. shared-prefix decode (`search/backends/cascade.py`, the product's) against today's flat buffer
   (`share_prefix=False`, every row's whole context, padding included): conversations/min over harvests in the
   order shared, flat, flat, shared; decode ms per row-step over the harvest's batches replayed, each decoded both
   ways back to back (a drift of the machine's speed cancels out: single runs here vary by 20%); K/V bytes read
   per decode step against the distinct tokens of the live rows' contexts (the floor); the trees checked equal;
   and one decode step profiled (forward, sampling, the loop around them, time off the CPU, page
   faults) next to the bare forward at the flat harvest's mean rows and columns;
6. tool time and warehouse write time as shares of wall time (`write share`: the busy time of the writer
   thread of `factory.store.Writer.grouped`, which commits every group of ready rollouts in one
   transaction, as `factory harvest` does), peak RSS and the load average. Timings are printed, never asserted.
`--agent forced` replaces sampling by teacher forcing: the rule-based teacher picks every assistant turn and
the model runs its tokens (prefill + one decode step per token), so contexts, cache hits and stopping are
those of an agent that calls tools well (what a trained M0 produces), even with an untrained model.
`--agent teacher` is a teacher harvest (the rule-based teacher agent, no model; 15 turns as `factory harvest`):
rollouts/min with grouped writes vs one write session and transaction per rollout (as before), side by side,
and the grouped harvest's `write share`.

    python bench/harvest.py [--model PATH] [--agent model|forced] [--tasks 20] [--beam 8] [--max-new-tokens 48]
                            [--max-turns 4] [--concurrency 20] [--skip-serial] [--skip-raw]
    python bench/harvest.py --agent teacher --split val --tasks 200 --beam 8
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
from dataclasses import dataclass, field, replace
from functools import wraps
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from factory.store.writer import Writer
from search.ahead import AheadBackend
from search.backends.base import Completion, Request
from search.backends.decoding import DecodeLoop, LoopStats, Row
from search.backends.prefix_cache import PrefixCache
from search.backends.teacher import TeacherBackend
from search.backends.transformers import BackendStats, TransformersBackend
from search.josh import HARVEST, Rollout, RolloutResult, SearchConfig, branch_seed
from search.runner import ToolRunner, max_batch, run_all
from toolwoz import multiwoz, tables
from toolwoz.environment import ToolWOZ
from toolwoz.tasks import Task
from toolwoz.tools import ToolEnv
from toolwoz.user_rule import RuleUser

TARGET_RATIO, TARGET_RAW_SHARE, TARGET_OVERHEAD_SHARE = 2.0, 0.70, 0.02
TARGET_PREFILL, TARGET_FILL, TARGET_REUSE_SPEEDUP, TARGET_TEACHER_SPEEDUP = 0.30, 0.80, 1.8, 2.5
TARGET_DECODE, TARGET_SHARED_SPEEDUP, TARGET_KV_FLOOR = 3.0, 2.0, 2.0


class RecordingBackend(TransformersBackend):
    """The transformers backend, remembering every batch it ran and the live leaves when it started."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)  # the batcher binds `self.generate_batch`, i.e. the method below
        self.recorded: list[list[Request]] = []
        self.answers: list[list[Completion]] = []
        self.live_leaves: list[int] = []
        self.at_barrier: list[int] = []  # of those, leaves whose agent turn of this step already ended
        self.in_flight: set[Rollout] = set()

    def generate_batch(self, requests: Sequence[Request]) -> list[Completion]:
        self.recorded.append(list(requests))
        leaves = [leaf for r in list(self.in_flight) for leaf in r.live_leaves()]
        self.live_leaves.append(len(leaves))
        # A leaf whose turn is set spoke already: JOSH's step barrier holds it until its siblings end their
        # turns (tool calls, more model calls), so it cannot be in this batch.
        self.at_barrier.append(sum(bool(leaf.turn.messages) for leaf in leaves))
        self.answers.append(super().generate_batch(requests))
        return self.answers[-1]


class ForcedBackend(RecordingBackend):
    """Teacher forcing: the teacher writes each assistant turn, the model runs its tokens as if it had
    sampled them (prompt prefill, then one decode step per token, the prefix cache as usual)."""

    def __init__(self, *args: Any, teacher: TeacherBackend, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self._answers: dict[int, Completion] = {}

    async def complete(self, request: Request) -> Completion:
        self._answers[id(request)] = await self.teacher.complete(request)
        try:
            return await super().complete(request)
        finally:
            self._answers.pop(id(request), None)

    def _rows(self, requests: Sequence[Request], results: list[Completion | None]) -> list[tuple[int, Row]]:
        rows = super()._rows(requests, results)
        for i, row in rows:
            answer = self._answers.get(id(requests[i]))
            if answer is None:  # the warm-up request
                continue
            message = answer.message
            full = self.tokenizer.apply_chat_template([*requests[i].messages, message], tools=requests[i].tools,
                                                      return_dict=True)["input_ids"]
            turn = list(full[len(row.ids):]) if list(full[:len(row.ids)]) == row.ids else []
            end = next((k for k, t in enumerate(turn) if t in self.eos_ids), len(turn) - 1)
            row.forced = turn[:end + 1] or [self.eos_ids[0]]
        return rows

    def _completion(self, row: Row, request: Request) -> Completion:
        completion = super()._completion(row, request)
        answer = self._answers.get(id(request))
        return completion if answer is None else replace(completion, message=answer.message, parse_error=None)


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
    backend: Any  # a RecordingBackend, or the teacher
    load: tuple[float, float] = field(default=(0.0, 0.0))  # 1-min load average at start and end
    write_sessions: int = 0  # transactions that wrote the rollouts
    aheads: list[AheadBackend] = field(default_factory=list)  # each rollout's calls requested ahead
    faults: int = 0  # minor page faults of the process during the harvest
    cpu_s: tuple[float, float] = (0.0, 0.0)  # user and system CPU seconds of the process during the harvest

    @property
    def per_min(self) -> float:
        return len(self.rollouts) / self.wall_s * 60

    @property
    def tokens(self) -> int:
        return sum(r["completion_tokens"] for r in self.rollouts)

    @property
    def fill(self) -> float:
        """Rows per generate over the live leaves of the rollouts in flight when it started; a row requested
        ahead counts only if a turn took its answer."""
        rows = sum(len(b) for b in self.backend.recorded) - self.wasted_rows
        return rows / max(sum(self.backend.live_leaves), 1)

    @property
    def wasted_rows(self) -> int:
        """Rows generated for calls requested ahead that no turn took."""
        wasted = {id(r) for a in self.aheads for r in a.dropped}
        return sum(id(r) in wasted for b in self.backend.recorded for r in b)

    def ahead_line(self) -> str:
        requested, used = sum(a.requested for a in self.aheads), sum(a.used for a in self.aheads)
        return (f"{self.label}: {requested} first calls requested ahead at the step barrier, {used} taken by a turn "
                f"({used / max(requested, 1):.0%}); {self.wasted_rows} generated rows of the guesses that did not "
                f"come true")


def harvest(label: str, env: ToolEnv, tasks: list[Task], backend: Any, config: SearchConfig, concurrency: int,
            *, grouped: bool = True, ahead: bool = True) -> Harvest:
    """Run one rollout per task into a fresh temporary warehouse; time tools and writes. Writes go as the
    product's (`Writer.grouped`: a writer thread commits every ready group in one transaction; write time is
    that thread's busy time) or, with `grouped=False`, as before: one session and transaction per rollout."""
    tool_clock, write_clock = [0.0], [0.0]
    env.call_many = timed(ToolEnv.call_many.__get__(env), tool_clock)  # ToolRunner binds it at construction
    tools = ToolRunner(ToolWOZ(env))
    rollouts: list[dict[str, Any]] = []
    aheads: list[AheadBackend] = []
    in_flight = getattr(backend, "in_flight", set())
    load_start, usage = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as tmp, Writer(Path(tmp) / "bench.duckdb", f"bench/harvest.py {label}") as w:
        group = w.grouped() if grouped else None
        append = group.append if group else timed(w.append, write_clock)

        def on_result(result: RolloutResult) -> None:
            append(result.tables())
            rollouts.append(result.rollout)

        def job(task: Task) -> Callable[[], Any]:
            async def run() -> RolloutResult:
                user = RuleUser(task.goal, branch_seed(config.seed, task.task_id, 0, -2))
                rollout = Rollout(task, backend, user, tools, config, rollout_id=f"{label}/{task.task_id}/0",
                                  run_id=label, ahead=ahead)
                in_flight.add(rollout)
                try:
                    return await rollout.run()
                finally:
                    in_flight.discard(rollout)
                    if rollout.ahead is not None:
                        aheads.append(rollout.ahead)
            return run

        start = time.perf_counter()
        if group is None:
            asyncio.run(run_all([job(t) for t in tasks], concurrency=concurrency, on_result=on_result))
        else:
            with group:  # its exit commits the last group: part of the wall time
                asyncio.run(run_all([job(t) for t in tasks], concurrency=concurrency, on_result=on_result))
            write_clock[0] = group.busy_s
        wall = time.perf_counter() - start
    del env.call_many
    end = resource.getrusage(resource.RUSAGE_SELF)
    return Harvest(label, wall, rollouts, tool_clock[0], write_clock[0], backend, (load_start, os.getloadavg()[0]),
                   group.sessions if group else len(rollouts), aheads, end.ru_minflt - usage.ru_minflt,
                   (end.ru_utime - usage.ru_utime, end.ru_stime - usage.ru_stime))


@dataclass
class Replay:
    tokens: int = 0  # generated
    seconds: float = 0.0
    prompt: int = 0  # real prompt tokens
    padded: int = 0  # prompt tokens with padding
    rows: int = 0


def raw_generate(backend: TransformersBackend, batches: list[list[Request]], repeat: int = 2) -> Replay:
    """Replay `batches` through plain `model.generate`, every row generating the batch's `max_new_tokens`;
    each batch's time is the best of `repeat` runs."""
    replay = Replay()
    for requests in batches:
        rows = [(backend.render(r), r.params.max_new_tokens) for r in requests]
        rows = [(ids, n) for ids, n in rows if len(ids) <= backend.max_context - n]  # overflows never ran
        if not rows:
            continue
        width, new = max(len(ids) for ids, _ in rows), max(n for _, n in rows)
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


def retokenisation_loss(backend: RecordingBackend) -> tuple[int, int]:
    """(prompt tokens a cache would also skip if it held each answered turn as the next prompt renders it,
    prompt tokens) over the recorded batches, counted on token ids with an unbounded cache. The model samples
    one of many token sequences for a text; the chat template renders the parsed message canonically, so a
    child's prompt can diverge from its parent's cached generation before the text does."""
    ids_only = lambda a, b: torch.empty(0)  # noqa: E731 - matching only: no K/V
    generated, rendered = PrefixCache(1 << 62), PrefixCache(1 << 62)
    lost = total = 0
    for requests, answers in zip(backend.recorded, backend.answers):
        ran = [(backend.render(r), r, a) for r, a in zip(requests, answers) if "token_ids" in a.extra]
        for ids, _, _ in {tuple(ids): x for x in ran for ids in [x[0]]}.values():  # identical prompts: once
            limit = len(ids) - 1
            lost += max(0, rendered.match(ids, limit).length - generated.match(ids, limit).length)
        total += sum(len(ids) for ids, _, _ in ran)
        for ids, request, answer in ran:
            generated.store(ids + answer.extra["token_ids"], ids_only)
            turn = backend.tokenizer.apply_chat_template([*request.messages, answer.message], tools=request.tools,
                                                         return_dict=True)["input_ids"]
            rendered.store(list(turn), ids_only)
            rendered.store(ids + answer.extra["token_ids"], ids_only)
    return lost, total


def ensure_model(path: Path, env: ToolEnv) -> Path:
    if not (path / "config.json").exists():
        from toolwoz.corpus import build_corpus
        from train.tiny_model import init_model

        print(f"creating the tiny model in {path} ...", flush=True)
        init_model(path, build_corpus(env.rows, env.tasks.values()))
    return path


def load(model: Path, batch: int, *, reuse: bool = True, share: bool = True,
         teacher: TeacherBackend | None = None) -> RecordingBackend:
    """A recording backend, warmed up (one-time costs of the first batch are not timed); `share=False`: decode
    from the flat buffer (every row's whole context) instead of shared prompt segments."""
    cache = None if reuse else 0
    backend = (ForcedBackend(model, max_batch=batch, prefix_cache_tokens=cache, share_prefix=share, teacher=teacher)
               if teacher else RecordingBackend(model, max_batch=batch, prefix_cache_tokens=cache, share_prefix=share))
    TransformersBackend.generate_batch(backend, [Request([{"role": "user", "content": "warm up"}])])
    backend.loop.prefix_cache.clear()
    backend.stats = BackendStats()
    return backend


def same_trees(a: Harvest, b: Harvest) -> bool:
    shape = lambda h: {r["task_id"]: (r["n_nodes"], r["completion_tokens"], r["reward"]) for r in h.rollouts}  # noqa: E731
    return shape(a) == shape(b)


def step_profile(h: Harvest) -> str:
    """Where one decode step of `h` goes: the forward, sampling, the loop around them, time off the CPU."""
    s = h.backend.stats
    n = max(s.decode_steps, 1)
    ms = lambda x: x / n * 1000  # noqa: E731
    rest = s.decode_s - s.decode_forward_s - s.sample_s
    return (f"{h.label}: one decode step {ms(s.decode_s):.1f} ms for {s.decode_rows / n:.1f} rows: forward "
            f"{ms(s.decode_forward_s):.1f}, sampling {ms(s.sample_s):.1f}, the loop around them {ms(rest):.1f} "
            f"(compaction, prefix-cache stores, per-row Python); off the CPU {ms(s.decode_s - s.decode_cpu_s):.1f} "
            f"(waiting for the GIL or the scheduler); process: {h.cpu_s[0]:.0f} s user, {h.cpu_s[1]:.0f} s system "
            f"({h.cpu_s[1] / max(h.cpu_s[0], 1e-9):.0%} of user), {(h.cpu_s[0] + h.cpu_s[1]) / h.wall_s:.0%} CPU, "
            f"{h.faults / n:.0f} minor page faults per decode step")


def bare_forward(backend: TransformersBackend, rows: int, columns: int, repeat: int = 20) -> float:
    """Seconds of one decode forward alone: `rows` rows of one token over `columns` columns of random K/V in
    the decode loop's flat buffer (mean of `repeat`, after a warm-up)."""
    from search.backends.decoding import slot_cache
    layout, model = backend.loop.layout, backend.model
    assert layout is not None
    kv = torch.randn((layout.layers, 2, rows, layout.heads, columns + 1, layout.head_dim), dtype=layout.dtype)
    ids = torch.randint(3, model.config.vocab_size, (rows, 1))
    mask = torch.ones((rows, columns + 1), dtype=torch.bool)
    positions = torch.full((rows, 1), columns)
    with torch.inference_mode():
        times = []
        for _ in range(repeat + 2):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                  **{backend.loop.cache_kw: slot_cache(kv, columns)})
            times.append(time.perf_counter() - start)
    return statistics.mean(times[2:])


def describe(h: Harvest) -> str:
    stats, sizes = h.backend.stats, [len(b) for b in h.backend.recorded]
    ends: dict[str, int] = {}
    for r in h.rollouts:
        ends[r["end_reason"]] = ends.get(r["end_reason"], 0) + 1
    failed = sum(r["status"] != "done" for r in h.rollouts)
    return (f"{h.label:>9}: {len(h.rollouts)} rollouts ({failed} failed; ends {ends}) in {h.wall_s:.1f} s; "
            f"{len(sizes)} batches, rows/batch mean {statistics.mean(sizes or [0]):.1f} max {max(sizes or [0])} "
            f"(live leaves mean {statistics.mean(h.backend.live_leaves or [0]):.1f}); {h.tokens} tokens generated; "
            f"prompt tokens {stats.prompt_tokens}, prefilled {stats.prefill_tokens} (padded {stats.prefill_padded}), "
            f"reused {stats.cached_tokens} (rows hitting the cache {stats.cache_hits}, rows copying an identical "
            f"prompt's prefill {stats.shared_rows}); {stats.forwards} forwards, "
            f"{stats.decode_rows} row-steps of decode, {stats.compactions} compactions, {stats.shared_runs} of "
            f"{len(sizes)} batches decoded from shared prompt segments; in the decode loop "
            f"{stats.generate_s:.1f} s ({stats.generate_s / h.wall_s:.0%} of wall: prefill {stats.prefill_s:.1f} s, "
            f"decode {stats.decode_s:.1f} s); mean reward "
            f"{statistics.mean([r['reward'] for r in h.rollouts] or [0]):.3f}")


def load_average(harvests: Sequence[Harvest]) -> str:
    now = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    during = ", ".join(f"{h.load[0]:.2f} -> {h.load[1]:.2f} during the {h.label} harvest" for h in harvests)
    return (f"load average: 1 min {during}; now {now} (1/5/15 min) on {os.cpu_count()} CPUs (other processes' "
            "load distorts every timing here)")


def teacher_writes(env: ToolEnv, tasks: list[Task], config: SearchConfig, args: argparse.Namespace) -> None:
    """A teacher harvest (no model: what writes cost is most visible) with grouped writes, then the same
    harvest with one write session and transaction per rollout (as before `Writer.grouped`)."""
    print(f"settings: agent teacher; {len(tasks)} {args.split} tasks ({tasks[0].task_id} .. {tasks[-1].task_id}); "
          f"rule user; beam {config.beam}; max_turns {config.max_turns}; temperature 1.0; concurrency "
          f"{args.concurrency}", flush=True)
    runs = [harvest(label, env, tasks, TeacherBackend(env.rows), config, args.concurrency, grouped=grouped)
            for label, grouped in (("grouped", True), ("per-rollout", False))]
    for h in runs:
        print(f"{h.label:>11}: {len(h.rollouts)} rollouts in {h.wall_s:.1f} s, {h.write_sessions} write sessions, "
              f"writes {h.write_s:.2f} s ({h.write_s / h.wall_s:.1%} of wall), tools {h.tool_s:.2f} s; mean reward "
              f"{statistics.mean([r['reward'] for r in h.rollouts] or [0]):.3f}", flush=True)
    grouped, single = runs
    nodes = [{r["task_id"]: r["n_nodes"] for r in h.rollouts} for h in runs]
    same = nodes[0] == nodes[1]
    print(f"the same trees both ways (nodes per rollout): {same}")
    ratio = grouped.per_min / single.per_min
    verdict = {True: "met", False: "MISSED"}
    print(f"\n{'measure':<40}{'value':>12}{'target':>10}{'':>8}")
    for name, value, target, ok in [
            ("rollouts/min, grouped writes", f"{grouped.per_min:.1f}", "", ""),
            ("rollouts/min, a transaction per rollout", f"{single.per_min:.1f}", "", ""),
            ("grouped / per-rollout", f"{ratio:.2f}x", f">= {TARGET_TEACHER_SPEEDUP}x",
             verdict[ratio >= TARGET_TEACHER_SPEEDUP]),
            ("per-rollout write share", f"{single.write_s / single.wall_s:.1%}", "", "")]:
        print(f"{name:<40}{value:>12}{target:>10}{ok:>8}")
    print(f"\n{load_average(runs)}")
    share = grouped.write_s / grouped.wall_s
    print(f"write share: {share:.0%} ({grouped.write_s:.2f} s of {grouped.wall_s:.1f} s, the writer thread, "
          f"{grouped.write_sessions} sessions for {len(grouped.rollouts)} rollouts; target <= "
          f"{TARGET_OVERHEAD_SHARE:.0%}: {verdict[share <= TARGET_OVERHEAD_SHARE]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multiwoz", default=None,
                        help="MultiWOZ folder or zip (default: as the CLI finds it: $FACTORY_MULTIWOZ, the path a "
                             "command was last given, the cache in $FACTORY_HOME)")
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (e.g. a bootstrapped M0); default: the tiny model, created if missing")
    parser.add_argument("--agent", choices=("model", "forced", "teacher"), default="model",
                        help="model: the model samples; forced: teacher forcing through the model; teacher: a "
                             "teacher harvest (no model), grouped vs per-rollout writes (default model)")
    parser.add_argument("--split", default="val_harvest", help="task split (default val_harvest)")
    parser.add_argument("--tasks", type=int, default=20, help="first N tasks of the split, sorted ids (default 20)")
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48, help="per model call, every mode (default 48)")
    parser.add_argument("--max-turns", type=int, default=None,
                        help="agent turns per branch (default 4; --agent teacher: 15, the harvest default)")
    parser.add_argument("--concurrency", type=int, default=20, help="rollouts in flight when batched (default 20)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="rows per batch (default: concurrency x beam, search.runner.max_batch)")
    parser.add_argument("--skip-serial", action="store_true", help="no serial harvest")
    parser.add_argument("--skip-raw", action="store_true", help="no raw generate replay")
    args = parser.parse_args()

    from factory.jobs.default_model import location

    try:  # the CLI's resolution, without the download: one line when MultiWOZ is nowhere
        data = multiwoz.load(args.multiwoz, allow_download=False)
    except multiwoz.DataError as e:
        parser.error(str(e))
    env = ToolEnv.from_connection(tables.in_memory(data))
    tasks = sorted((t for t in env.tasks.values() if args.split in t.splits), key=lambda t: t.task_id)[:args.tasks]
    if not tasks:
        raise SystemExit(f"Error: no tasks in split {args.split!r}; pass --split val, val_harvest, test or train")
    max_turns = args.max_turns or (HARVEST.max_turns if args.agent == "teacher" else 4)
    config = SearchConfig(beam=args.beam, max_turns=max_turns, temperature=1.0, max_new_tokens=args.max_new_tokens)
    if args.agent == "teacher":
        return teacher_writes(env, tasks, config, args)
    model = args.model or ensure_model(location(), env)
    teacher = TeacherBackend(env.rows) if args.agent == "forced" else None
    batch = args.max_batch or max_batch(args.concurrency, args.beam)
    print(f"settings: model {model}; agent {args.agent}; {len(tasks)} {args.split} tasks ({tasks[0].task_id} .. "
          f"{tasks[-1].task_id}); rule user; beam {args.beam}; max_turns {max_turns}; max_new_tokens "
          f"{args.max_new_tokens}; temperature 1.0; concurrency {args.concurrency}, max_batch {batch}; "
          f"grouped writes; torch threads {torch.get_num_threads()}", flush=True)

    reuse = harvest("reuse", env, tasks, load(model, batch, teacher=teacher), config, args.concurrency)
    print(describe(reuse), flush=True)
    # Shared-prefix vs flat decode in the order A B B A: a drift of the machine's speed cancels out.
    flat = harvest("flat", env, tasks, load(model, batch, share=False, teacher=teacher), config, args.concurrency)
    print(describe(flat), flush=True)
    flat_again = harvest("flat again", env, tasks, load(model, batch, share=False, teacher=teacher), config,
                         args.concurrency)
    shared_again = harvest("shared again", env, tasks, load(model, batch, teacher=teacher), config, args.concurrency)
    print(f"the same trees with shared-prefix and flat decode (nodes, generated tokens, reward per rollout): "
          f"{same_trees(reuse, flat) and same_trees(reuse, shared_again) and same_trees(reuse, flat_again)}")
    plain = harvest("no reuse", env, tasks, load(model, batch, reuse=False, teacher=teacher), config,
                    args.concurrency)
    print(describe(plain), flush=True)
    print(f"per-rollout generated tokens equal with and without reuse (per-row seeds): {same_trees(reuse, plain)}")
    behind = harvest("no ahead", env, tasks, load(model, batch, teacher=teacher), config, args.concurrency,
                     ahead=False)
    print(describe(behind), flush=True)
    print(f"the same trees with and without calls requested ahead (nodes, generated tokens, reward per rollout): "
          f"{same_trees(reuse, behind)}")
    serial = None
    if not args.skip_serial:
        serial = harvest("serial", env, tasks, load(model, 1, reuse=False, teacher=teacher),
                         replace(config, serial=True), 1)
        print(describe(serial), flush=True)
    raw = None
    if not args.skip_raw and teacher is None:
        raw = raw_generate(plain.backend, plain.backend.recorded)
        print(f"raw batched generate: the no-reuse harvest's {len(plain.backend.recorded)} batches replayed through "
              f"plain model.generate (same prompts and batch sizes, left padding, min_new_tokens = max_new_tokens, "
              f"best of 2 per batch): {raw.tokens} tokens in {raw.seconds:.1f} s; {raw.rows} rows, mean prompt "
              f"{raw.prompt / max(raw.rows, 1):.0f} tokens, padding efficiency {raw.prompt / max(raw.padded, 1):.0%}")

    lost, total = retokenisation_loss(reuse.backend)
    print(f"re-tokenisation: prompts diverge from their parent's sampled tokens before the rendered text does; a "
          f"cache that also held each turn as re-rendered would skip {lost} more prompt tokens "
          f"({lost / max(total, 1):.1%} of {total})")
    stats = reuse.backend.stats
    prefill = stats.prefill_tokens / max(stats.prompt_tokens, 1)
    write_share = reuse.write_s / reuse.wall_s
    speedup = reuse.per_min / plain.per_min
    verdict = {True: "met", False: "MISSED"}
    rows = [("conversations/min with reuse", f"{reuse.per_min:.1f}", "", ""),
            ("conversations/min without reuse", f"{plain.per_min:.1f}", "", ""),
            ("with / without reuse", f"{speedup:.2f}x", f">= {TARGET_REUSE_SPEEDUP}x",
             verdict[speedup >= TARGET_REUSE_SPEEDUP]),
            ("conversations/min, nothing ahead", f"{behind.per_min:.1f}", "", ""),
            ("with / without requests ahead", f"{reuse.per_min / behind.per_min:.2f}x", "", "")]
    if serial is not None:
        ratio = reuse.per_min / serial.per_min
        rows += [("serial conversations/min", f"{serial.per_min:.1f}", "", ""),
                 ("batched / serial", f"{ratio:.2f}x", f">= {TARGET_RATIO:.0f}x", verdict[ratio >= TARGET_RATIO])]
    if raw is not None:
        share = (plain.tokens / plain.wall_s) / (raw.tokens / raw.seconds)
        rows += [("no-reuse harvest / raw tokens/s", f"{share:.0%}", f">= {TARGET_RAW_SHARE:.0%}",
                  verdict[share >= TARGET_RAW_SHARE])]
    rows += [("tool time / harvest wall", f"{reuse.tool_s / reuse.wall_s:.2%} ({reuse.tool_s:.2f} s)",
              f"<= {TARGET_OVERHEAD_SHARE:.0%}", verdict[reuse.tool_s / reuse.wall_s <= TARGET_OVERHEAD_SHARE]),
             ("peak RSS", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", "", "")]
    print(f"\n{'measure':<34}{'value':>22}{'target':>10}{'':>8}")
    for name, value, target, ok in rows:
        print(f"{name:<34}{value:>22}{target:>10}{ok:>8}")
    print(f"\n{load_average([reuse, flat, flat_again, shared_again, plain, behind])}")
    # The three lines scripts read (keep these words).
    print(f"prefill tokens vs no reuse: {prefill:.0%} ({stats.prefill_tokens} of {stats.prompt_tokens}; target "
          f"<= {TARGET_PREFILL:.0%}: {verdict[prefill <= TARGET_PREFILL]})")
    print(f"rows per generate vs live leaves: {reuse.fill:.0%} (target >= {TARGET_FILL:.0%}: "
          f"{verdict[reuse.fill >= TARGET_FILL]}; rows requested ahead count only when a turn took them)")
    print(f"    {reuse.ahead_line()}")
    barrier = sum(behind.backend.at_barrier) / max(sum(behind.backend.live_leaves), 1)
    print(f"    without requests ahead: {behind.fill:.0%}; of the live leaves at a batch's start {barrier:.0%} had "
          f"ended this step's agent turn (JOSH's step barrier: waiting for siblings still in theirs)")
    print(f"write share: {write_share:.0%} ({reuse.write_s:.2f} s of {reuse.wall_s:.1f} s, the writer thread, "
          f"{reuse.write_sessions} sessions for {len(reuse.rollouts)} rollouts; target <= "
          f"{TARGET_OVERHEAD_SHARE:.0%}: {verdict[write_share <= TARGET_OVERHEAD_SHARE]})")
    decode_lines([reuse, shared_again], [flat, flat_again], verdict)


def decode_replay(backend: RecordingBackend) -> dict[bool, LoopStats]:
    """The harvest's batches again (the same prompts, seeds and limits), each decoded shared and flat back to
    back, which one first alternating, over one prefix cache: decode time with the machine's drift cancelled."""
    loops = {share: DecodeLoop(backend.model, eos_ids=backend.eos_ids, pad_id=backend.pad_id, share_prefix=share)
             for share in (True, False)}
    loops[True].prefix_cache.max_tokens = backend.loop.prefix_cache.max_tokens
    loops[False].prefix_cache = loops[True].prefix_cache
    stats = {True: LoopStats(), False: LoopStats()}
    for k, requests in enumerate(backend.recorded):
        for share in (True, False) if k % 2 == 0 else (False, True):
            rows = [row for _, row in TransformersBackend._rows(backend, requests, [None] * len(requests))]
            loops[share].run(rows, stats[share])
    return stats


def decode_lines(shared_runs: list[Harvest], flat_runs: list[Harvest], verdict: dict[bool, str]) -> None:
    """The decode step profiled, and shared-prefix decode against the flat buffer, side by side."""
    shared, flat = shared_runs[0], flat_runs[0]
    s, f = shared.backend.stats, flat.backend.stats
    print(f"\ndecode step, profiled:\n    {step_profile(shared)}\n    {step_profile(flat)}")
    rows, columns = round(f.decode_rows / max(f.decode_steps, 1)), round(f.kv_read_tokens / max(f.decode_rows, 1))
    bare = bare_forward(flat.backend, rows, columns)
    step = f.decode_s / max(f.decode_steps, 1)
    print(f"    bare forward at the flat harvest's mean batch ({rows} rows x {columns} columns of K/V, random values, "
          f"mean of 20): {bare * 1000:.1f} ms; flat decode step / bare forward: {step / bare:.2f}x")
    layout = shared.backend.loop.layout
    per_token = layout.bytes_per_token() if layout is not None else 0
    replay = decode_replay(shared.backend)
    per_row_shared, per_row_flat = (st.decode_s / max(st.decode_rows, 1) * 1000 for st in (replay[True], replay[False]))
    ratio = per_row_flat / per_row_shared
    per_min = {label: sum(len(h.rollouts) for h in runs) / sum(h.wall_s for h in runs) * 60
               for label, runs in (("shared", shared_runs), ("flat", flat_runs))}
    speed = per_min["shared"] / per_min["flat"]
    kv = s.kv_read_tokens / max(s.kv_floor_tokens, 1)
    mb = lambda st: st.kv_read_tokens / max(st.decode_steps, 1) * per_token / 1e6  # noqa: E731
    # The three lines scripts read (keep these words).
    print(f"decode ms per row-step, flat / shared: {ratio:.2f}x (flat {per_row_flat:.3f} ms, shared "
          f"{per_row_shared:.3f} ms, the harvest's {len(shared.backend.recorded)} batches replayed, each both ways "
          f"back to back; target >= {TARGET_DECODE:.0f}: {verdict[ratio >= TARGET_DECODE]})")
    walls = ", ".join(f"{h.label} {h.wall_s:.1f} s" for h in (shared_runs[0], *flat_runs, *shared_runs[1:]))
    print(f"conversations/min, shared / today's flat engine: {speed:.2f}x ({per_min['shared']:.1f} vs "
          f"{per_min['flat']:.1f}; harvests in the order {walls}; target >= {TARGET_SHARED_SPEEDUP:.0f}: "
          f"{verdict[speed >= TARGET_SHARED_SPEEDUP]})")
    print(f"K/V bytes read per decode step / distinct-token floor: {kv:.2f}x (shared {mb(s):.1f} MB per step; flat "
          f"{mb(f):.1f} MB, {f.kv_read_tokens / max(f.kv_floor_tokens, 1):.2f}x the floor; target <= "
          f"{TARGET_KV_FLOOR:.0f}: {verdict[kv <= TARGET_KV_FLOOR]})")


if __name__ == "__main__":
    main()
