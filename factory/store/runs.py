"""Runs: identity, registration and resume.

A run is named by `--run NAME` or, by default, by a hash of the settings that define its data: agent, user,
split and task selection (`--limit`, `--tasks`), protocol, semantics, search settings, seed. So a run id
names exactly the tasks it covers, and re-running the same command finds the same run and resumes it: tasks
whose rollouts are committed are skipped. Only `--concurrency` (how fast, not what) is left out.

The hashed form is frozen (`identity`): run ids made before a setting was renamed stay the same, and a
command without `--limit` / `--tasks` (the whole split) keeps the id it had before the selection was hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

import sql
from factory import __version__
from factory.errors import UserError
from factory.store import warehouse
from factory.store.writer import Writer
from search.josh import CHOICES, SearchConfig
from toolwoz.clock import utc_now
from toolwoz.rewards import paired_bootstrap

# Settings added after run ids were first hashed: part of the identity only when set.
_ADDED_LATER = ("engine",)
# SearchConfig fields added since: part of the identity only when they differ from this value.
_SEARCH_ADDED_LATER = {"results": "full"}
# SearchConfig fields renamed since run ids were first hashed: new name -> (hashed name, the value meaning True).
_HASHED_AS = {"seed_policy": ("distinct_seeds", "distinct"), "credit": ("credit_all", "all"),
              "unrewarded": ("keep_unrewarded", "keep")}
# SearchConfig fields renamed with the same values: new name -> hashed (and earlier recorded) name.
_RENAMED = {"max_turns": "max_steps"}


@dataclass(frozen=True)
class RunSettings:
    """Everything a harvest or eval run is made of; recorded as `runs.config` under these names (the flags')."""

    kind: str  # eval | harvest
    agent: str  # model path / Hub id, openai:MODEL, or teacher
    backend: str  # transformers | openai | teacher
    user: str  # rule | llm
    user_model: str | None
    split: str
    search: SearchConfig
    base_url: str | None = None  # the agent's endpoint (openai:)
    user_base_url: str | None = None  # the llm user's endpoint (openai:)
    limit: int | None = None  # the first N tasks of the split (after --tasks)
    tasks: tuple[str, ...] | None = None  # only these task ids (`MUL0003.json` form, sorted)
    concurrency: int = 16  # conversations in flight: not part of the identity
    engine: dict[str, Any] | None = None  # the backend's engine when it matters to the tokens (vLLM's version...)
    env: str = "toolwoz"  # the environment (`--env`): part of the run id unless toolwoz (ids made before it stay)

    def config(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = list(self.tasks) if self.tasks is not None else None
        return data

    def default_run_id(self) -> str:
        return f"{self.kind}-{digest(identity(self.config()))}"


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed form of a run's `config` (today's names, or those of a run recorded before a rename)."""
    search = dict(config.get("search") or {})
    for name, old_value in _SEARCH_ADDED_LATER.items():
        if search.get(name, old_value) == old_value:
            search.pop(name, None)
    for name, (hashed, true_value) in _HASHED_AS.items():
        if name in search:
            search[hashed] = search.pop(name) == true_value
    for name, hashed in _RENAMED.items():
        if name in search:
            search[hashed] = search.pop(name)
    unhashed = ("search", "user_base_url", "limit", "tasks", "concurrency", "extra", "env", *_ADDED_LATER)
    hashed_form = {k: v for k, v in config.items() if k not in unhashed}
    hashed_form["search"] = search
    user_base_url = config.get("user_base_url") or (config.get("extra") or {}).get("user_base_url")
    hashed_form["extra"] = {"user_base_url": user_base_url} if user_base_url else {}
    for key in ("limit", "tasks", *_ADDED_LATER):  # unset, they hash as before they existed
        if config.get(key) is not None:
            hashed_form[key] = config[key]
    if config.get("env", "toolwoz") != "toolwoz":
        hashed_form["env"] = config["env"]
    return hashed_form


def named_today(config: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded `config` with today's setting names (the flags'), whenever the run was recorded."""
    if "search" not in config:
        return dict(config)
    renamed = {hashed: name for name, hashed in _RENAMED.items()}
    flags = {hashed: (name, true_value) for name, (hashed, true_value) in _HASHED_AS.items()}
    search = {}
    for key, value in (config["search"] or {}).items():  # in the recorded order
        if key in renamed:
            key = renamed[key]
        elif key in flags:
            key, true_value = flags[key]
            value = true_value if value else next(c for c in CHOICES[key] if c != true_value)
        search[key] = value
    return {**config, "search": search}


def digest(hashed_form: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(hashed_form, sort_keys=True).encode()).hexdigest()[:10]


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The settings (today's names) in which two hashed forms differ."""
    names = ({hashed: name for name, (hashed, _) in _HASHED_AS.items()} | {v: k for k, v in _RENAMED.items()}
             | {"extra": "user_base_url"})
    top = [names.get(k, k) for k in {*old, *new} if k != "search" and old.get(k) != new.get(k)]
    search_old, search_new = old.get("search", {}), new.get("search", {})
    nested = [names.get(k, k) for k in {*search_old, *search_new} if search_old.get(k) != search_new.get(k)]
    return sorted(top) + sorted(nested)


def start(writer: Writer, settings: RunSettings, run_id: str | None,
          tools: list[dict[str, Any]] | None = None) -> tuple[str, set[str]]:
    """Register the run (or find it to resume); returns (run_id, rollout ids already committed). `tools`: the
    schemas the agent is offered (recorded for the `tools` protocol)."""
    run_id = run_id or settings.default_run_id()
    with writer.session() as con:
        row = con.execute("SELECT kind, config FROM runs WHERE run_id = ?", [run_id]).fetchall()
        done = {r[0] for r in con.execute("SELECT rollout_id FROM rollouts WHERE run_id = ?", [run_id]).fetchall()}
    if row:
        kind, old, new = row[0][0], identity(json.loads(row[0][1])), identity(settings.config())
        if kind != settings.kind or old != new:
            changed = _differences(old, new)
            raise UserError(f"run {run_id!r} exists with other settings ({', '.join(changed) or 'kind'} differ); "
                            "pass another --run or repeat its settings to resume it")
        writer.append({}, statements=[("UPDATE runs SET status = 'running', finished_at = NULL, config = ? "
                                       "WHERE run_id = ?", [json.dumps(settings.config()), run_id])])
        return run_id, done
    cfg = settings.search
    writer.append({"runs": [{
        "run_id": run_id, "kind": settings.kind, "created_at": utc_now(), "finished_at": None, "status": "running",
        "config": json.dumps(settings.config()), "agent_model": settings.agent,
        "user_model": settings.user_model or settings.user, "backend": settings.backend, "protocol": cfg.protocol,
        "split": settings.split, "semantics": cfg.semantics, "beam": cfg.beam, "seed": cfg.seed,
        "code_version": __version__, "tools": json.dumps(tools) if cfg.protocol == "tools" and tools else None,
        "env": settings.env,
    }]})
    return run_id, done


# The tables whose rows belong to one rollout, children first: what a retried rollout replaces and what
# `factory runs delete` removes (then the rollouts themselves, then the run).
ROLLOUT_TABLES = ("rewards", "tool_calls", "messages", "state_changes", "nodes")


def replace_rollout(rollout_id: str) -> list[tuple[str, list[str]]]:
    """Statements that drop a committed rollout's rows (run in the transaction that commits its retry)."""
    return [(f"DELETE FROM {table} WHERE rollout_id = ?", [rollout_id])  # table: a code constant
            for table in (*ROLLOUT_TABLES, "rollouts")]


def delete(writer: Writer, run_id: str) -> None:
    """Delete a run and every row it produced, in one transaction."""
    in_run = "rollout_id IN (SELECT rollout_id FROM rollouts WHERE run_id = ?)"
    statements = [(f"DELETE FROM {table} WHERE {in_run}", [run_id]) for table in ROLLOUT_TABLES]
    statements += [("DELETE FROM rollouts WHERE run_id = ?", [run_id]), ("DELETE FROM runs WHERE run_id = ?", [run_id])]
    writer.append({}, statements=statements)


def finish(writer: Writer, run_id: str, status: str) -> None:
    """Mark the run done / interrupted / failed."""
    writer.append({}, statements=[("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                                   [status, utc_now(), run_id])])


def resolve_run(con: duckdb.DuckDBPyConnection, run_id: str) -> str:
    """The run id, or a UserError listing what exists (a unique prefix also works)."""
    rows = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id",
                                      [run_id]).fetchall()]
    if run_id in rows:
        return run_id
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise UserError(f"unknown run {run_id!r}; list runs with `factory runs`")
    raise UserError(f"run {run_id!r} is ambiguous ({', '.join(rows[:5])}); give more of the id")


def compare(warehouse_path: str, run_a: str, run_b: str, resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Run A vs run B on the tasks both finished: mean reward and 100% success of each, and the paired-bootstrap
    interval of A - B (toolwoz.rewards.paired_bootstrap). Run ids may be unique prefixes."""
    with warehouse.opened(warehouse_path, read_only=True) as con:
        a, b = resolve_run(con, run_a), resolve_run(con, run_b)
        rows = con.execute(sql.load("queries/paired_rewards"), {"run_a": a, "run_b": b}).fetchall()
    if not rows:
        raise UserError(f"runs {a} and {b} share no finished task; evaluate both on the same split")
    reward_a, reward_b = [r[1] for r in rows], [r[2] for r in rows]
    stats = paired_bootstrap(reward_a, reward_b, resamples=resamples, seed=seed)
    return {"run_a": a, "run_b": b, "reward_a": round(sum(reward_a) / len(rows), 4),
            "reward_b": round(sum(reward_b) / len(rows), 4),
            "success_a": round(sum(r[3] for r in rows) / len(rows), 4),  # is_success, in SQL
            "success_b": round(sum(r[4] for r in rows) / len(rows), 4), **stats}


def run_summary(view: str, warehouse_path: str, run_id: str) -> dict[str, Any]:
    """The run's row of `view` (eval_summary / harvest_summary), with `failed` (rollouts a backend or user error
    ended) from run_scores where the view has no such column."""
    with warehouse.opened(warehouse_path, read_only=True) as con:
        cur = con.execute(f"SELECT * FROM {view} WHERE run_id = ?", [run_id])  # view: ours
        row = dict(zip([d[0] for d in cur.description], cur.fetchall()[0]))
        if "failed" not in row:
            row["failed"] = con.execute("SELECT failed FROM run_scores WHERE run_id = ?", [run_id]).fetchall()[0][0]
        return row


def split_task_ids(warehouse_path: str, split: str, env: str = "toolwoz") -> list[str]:
    """The ids of `split`'s tasks in the order runs take them (the environment must be built in the warehouse)."""
    with warehouse.opened(warehouse_path, read_only=True) as con:
        if env != "toolwoz":
            return [r[0] for r in con.execute(sql.load("queries/taubench_split_task_ids"),
                                              {"env": env, "split": split}).fetchall()]
        warehouse.require_toolwoz(con, warehouse_path)
        return [r[0] for r in con.execute(sql.load("queries/split_task_ids"), {"split": split}).fetchall()]


def harvest_yield(warehouse_path: str, run_ids: list[str], min_reward: float) -> dict[str, int]:
    """What the runs' finished rollouts cost and found (sql/queries/harvest_yield.sql): generated_tokens, kept
    (rollouts with reward >= min_reward), tasks_kept, full_successes."""
    with warehouse.opened(warehouse_path, read_only=True) as con:
        cur = con.execute(sql.load("queries/harvest_yield"), {"run_ids": run_ids, "min_reward": min_reward})
        return dict(zip([d[0] for d in cur.description], cur.fetchone()))


def reward_interval(warehouse_path: str, run_id: str, resamples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """`reward_low` / `reward_high`: the 95% bootstrap interval (over its tasks) of the run's Average Reward, with
    each task's reward as `compare` reads it (empty for a run without rollouts)."""
    with warehouse.opened(warehouse_path, read_only=True) as con:
        rewards = [r[1] for r in con.execute(sql.load("queries/paired_rewards"), {"run_a": run_id, "run_b": run_id})
                   .fetchall()]
    if not rewards:
        return {}
    stats = paired_bootstrap(rewards, [0.0] * len(rewards), resamples=resamples, seed=seed)  # the mean against 0
    return {"reward_low": stats["low"], "reward_high": stats["high"]}


def scored(warehouse_path: str, run_id: str, seed: int = 0) -> dict[str, Any]:
    """The eval run's eval_summary row with its `reward_interval`."""
    return run_summary("eval_summary", warehouse_path, run_id) | reward_interval(warehouse_path, run_id, seed=seed)
