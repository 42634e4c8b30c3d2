"""Runs: identity, registration and resume.

A run is named by `--run NAME` or, by default, by a hash of the settings that define its data (agent,
user, split, protocol, semantics, search settings, seed). Re-running the same command therefore finds the
same run and resumes it: tasks whose rollouts are committed are skipped. Settings that only change how
much or how fast (`--limit`, `--concurrency`) are not part of the identity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import duckdb

from factory import __version__
from factory.errors import UserError
from factory.warehouse import Writer
from search.josh import SearchConfig
from toolwoz.schemas import tool_schemas

VOLATILE = ("limit", "concurrency", "tasks")


@dataclass
class RunSettings:
    """Everything a harvest or eval run is made of; recorded as `runs.config`."""

    kind: str  # eval | harvest
    agent: str  # model path / Hub id, openai:MODEL, or teacher
    backend: str  # transformers | openai | teacher
    user: str  # rule | llm
    user_model: str | None
    split: str
    search: SearchConfig
    base_url: str | None = None
    limit: int | None = None
    tasks: list[str] | None = None
    concurrency: int = 16
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        data = asdict(self)
        data["search"] = asdict(self.search)
        return data

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.config().items() if k not in VOLATILE}

    def default_run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.kind}-{digest}"


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def start(writer: Writer, settings: RunSettings, run_id: str | None) -> tuple[str, set[str]]:
    """Register the run (or find it to resume); returns (run_id, rollout ids already committed)."""
    run_id = run_id or settings.default_run_id()
    with writer.session() as con:
        row = con.execute("SELECT kind, config FROM runs WHERE run_id = ?", [run_id]).fetchall()
        done = {r[0] for r in con.execute("SELECT rollout_id FROM rollouts WHERE run_id = ?", [run_id]).fetchall()}
    if row:
        kind, config = row[0][0], json.loads(row[0][1])
        old = {k: v for k, v in config.items() if k not in VOLATILE}
        if kind != settings.kind or old != settings.identity():
            changed = sorted(k for k in {*old, *settings.identity()} if old.get(k) != settings.identity().get(k))
            raise UserError(f"run {run_id!r} exists with other settings ({', '.join(changed) or 'kind'} differ); "
                            "pass another --run or repeat its settings to resume it")
        writer.append({}, statements=[("UPDATE runs SET status = 'running', finished_at = NULL, config = ? "
                                       "WHERE run_id = ?", [json.dumps(settings.config()), run_id])])
        return run_id, done
    cfg = settings.search
    writer.append({"runs": [{
        "run_id": run_id, "kind": settings.kind, "created_at": _now(), "finished_at": None, "status": "running",
        "config": json.dumps(settings.config()), "agent_model": settings.agent,
        "user_model": settings.user_model or settings.user, "backend": settings.backend, "protocol": cfg.protocol,
        "split": settings.split, "semantics": cfg.semantics, "beam_size": cfg.beam, "seed": cfg.seed,
        "code_version": __version__, "tools": json.dumps(tool_schemas()) if cfg.protocol == "tools" else None,
    }]})
    return run_id, done


def finish(writer: Writer, run_id: str, status: str) -> None:
    """Mark the run done / interrupted / failed."""
    writer.append({}, statements=[("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                                   [status, _now(), run_id])])


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
