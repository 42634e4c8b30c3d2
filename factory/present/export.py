"""Export a dataset view (or a query) as Parquet shards plus a Hub dataset card, and push the folder to the Hub.

The folder has the layout `datasets.push_to_hub` produces (`README.md`, `data/<split>-00000-of-0000N.parquet`), so
`datasets.load_dataset(folder)` and the Hub's dataset viewer read it as it is.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import sql
from common.errors import first_line
from factory import __version__
from factory.errors import FactoryError, UserError
from factory.store import staging
from factory.store.runs import named_today
from factory.store.warehouse import run_query

DATASET_VIEWS = ("sft", "kto", "dpo", "trajectories")  # what the "unknown view" error suggests
TRL_COLUMNS = ("messages", "prompt", "completion", "label", "chosen", "rejected", "tools")
LICENSE = "mit"  # MultiWOZ 2.1, which every row derives from, is MIT-licensed
TAGS = ["tool-calling", "dialogue", "josh", "toolwoz"]
BATCH_ROWS = 1_000  # rows per Arrow batch read from DuckDB, and so at most per Parquet row group
RUN_COLUMNS = ("run_id", "kind", "agent_model", "user_model", "backend", "protocol", "split", "beam", "seed",
               "semantics", "code_version", "created_at")
ABOUT = ("The conversations are between a tool-calling agent and a simulated customer on ToolWOZ tasks (built from "
         "MultiWOZ 2.1, MIT licence), searched with JOSH (beam search over the agent's turns, rewarded by the goal "
         "API calls it completes). Tool-call `arguments` and `tools` are JSON text.")
NO_ROWS_HINT = "harvest first or lower the minimum reward (-p min_reward 0.5)"
SHARD = re.compile(r"[\w.]+-\d{5}-of-\d{5}\.parquet")  # data/<split>-00000-of-00003.parquet: what we write
CARD_HEADING = "# josh-factory export: "


@dataclass
class Source:
    """What an export runs: a view of `sql/views/` or the user's query."""

    query: str
    view: str | None = None

    @property
    def label(self) -> str:
        return self.view or "query"

    @property
    def definition(self) -> str:
        """The view file's SQL (leading comment included) or the query text."""
        return sql.load(f"views/{self.view}") if self.view else self.query

    @property
    def description(self) -> str:
        """The view file's leading `--` comment: what one row is."""
        if not self.view:
            return "One row per result row of the query below."
        lines = []
        for line in self.definition.splitlines():
            if not line.startswith("--"):
                break
            lines.append(line.removeprefix("--").strip())
        text = re.sub(rf"^{self.view}:\s*", "", " ".join(lines))
        return text[:1].upper() + text[1:]


@dataclass
class ExportInfo:
    """What `export_view` wrote."""

    out_dir: Path
    split: str
    rows: int
    shards: list[Path]
    columns: list[str]
    run_ids: list[str]
    download_bytes: int
    label_counts: dict[str, int] = field(default_factory=dict)


def resolve(view_or_query: str) -> Source:
    """A bare name is a view of `sql/views/` (UserError if unknown); anything else is a query."""
    text = view_or_query.strip().rstrip(";").rstrip()
    if re.fullmatch(r"\w+", text):
        if not (sql.ROOT / "views" / f"{text}.sql").is_file():
            raise UserError(f"unknown view {text!r}; dataset views: {', '.join(DATASET_VIEWS)} "
                            f"(or pass a query, e.g. \"select * from runs\")")
        return Source(query=f"SELECT * FROM {text}", view=text)  # name checked against the view files
    return Source(query=text)


def check_query(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """UserError unless `query` parses as exactly one SELECT (parsed alone, so errors point into it)."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise UserError(first_line(e)) from e
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise UserError("pass one SELECT query (or a view name) to export")


def check_out_dir(out_dir: Path, force: bool) -> None:
    """A non-empty folder only with `force`, and never one whose README.md another tool wrote: `force` replaces
    our card and our shards, nothing else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; pass a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserError(f"--out {out_dir} is not empty; pass --force to replace its README.md and data/")
    readme = out_dir / "README.md"
    if readme.is_file() and CARD_HEADING not in readme.read_text(encoding="utf-8", errors="replace"):
        raise UserError(f"--out {out_dir} has a README.md that `factory export` did not write; --force will not "
                        "replace it, choose another folder")


def export_view(con: duckdb.DuckDBPyConnection, view_or_query: str, out_dir: str | os.PathLike, *,
                params: dict[str, str] | None = None, shard_rows: int = 100_000, split_name: str = "train",
                columns: Literal["all", "trl"] = "all", force: bool = False, repo_id: str | None = None,
                on_rows: Callable[[int, int], None] | None = None) -> ExportInfo:
    """Run a view (its parameters set as DuckDB variables) and write its rows as Parquet shards of at most
    `shard_rows` rows plus a `README.md` dataset card into `out_dir`.

    The rows stream through Arrow record batches into a staging folder beside `out_dir` (`.NAME.export-*`) that
    takes its place in one step once the shards and the card are written (`factory.store.staging.replacing`; `out_dir`'s
    files other than its card and shards carried over), so a failure or a kill leaves `out_dir` as it was or
    whole, never a card beside part of the shards; staging folders a killed export left are deleted first.
    `on_rows(rows, shards)` is called after every batch. Raises UserError for an unknown view, a bad query,
    an empty result or a non-empty `out_dir` without `force`.
    """
    out = Path(out_dir)
    staging.clean(out)
    check_out_dir(out, force)
    source = resolve(view_or_query)
    if not source.view:
        check_query(con, source.query)
    params = dict(params or {})
    # newlines: a query may end with a `--` comment
    names = run_query(con, f"SELECT * FROM (\n{source.query}\n) LIMIT 0", params).column_names
    selected = _select_columns(names, columns)
    # run_id is read even when not exported: the card lists the runs behind the rows
    read = selected + ["run_id"] if "run_id" in names and "run_id" not in selected else selected
    query = f"SELECT {', '.join(_quote(c) for c in read)} FROM (\n{source.query}\n) AS q"
    exported_at = datetime.now(UTC)
    with staging.replacing(out, keep_from_old=_not_written_by_export) as tmp:
        stats = _write_shards(con, query, selected, tmp / "data", split_name, shard_rows, on_rows,
                              user_query=not source.view)
        if stats.rows == 0:
            raise UserError(f"no rows in {source.label}: {NO_ROWS_HINT}" if source.view
                            else "no rows: the query returned nothing")
        run_ids = sorted(str(r) for r in stats.run_counts if r is not None)
        runs = _runs(con, run_ids if "run_id" in read else None)
        info = ExportInfo(out_dir=out, split=split_name, rows=stats.rows, shards=[], columns=selected,
                          run_ids=[r["run_id"] for r in runs],
                          download_bytes=sum(p.stat().st_size for p in stats.shards),
                          label_counts=stats.label_counts)
        card = dataset_card(source, stats, info, runs, params, exported_at, repo_id)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    info.shards = [out / "data" / p.name for p in stats.shards]
    return info


def _select_columns(names: list[str], columns: str) -> list[str]:
    if columns == "all":
        return names
    kept = [n for n in names if n in TRL_COLUMNS]
    if not kept:
        raise UserError(f"the result has no TRL column ({', '.join(TRL_COLUMNS)}); use --columns all")
    return kept


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _Stats:
    schema: pa.Schema | None = None
    rows: int = 0
    arrow_bytes: int = 0
    shards: list[Path] = field(default_factory=list)
    run_counts: Counter = field(default_factory=Counter)
    label_counts: dict[str, int] = field(default_factory=dict)


def _batches(con: duckdb.DuckDBPyConnection, query: str, user_query: bool) -> Iterator[pa.RecordBatch]:
    """Record batches of the query; the reader is closed so the connection can run the next statement."""
    try:
        reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
        try:
            yield from reader
        finally:
            reader.close()
    except duckdb.Error as e:
        if not user_query:
            raise
        raise UserError(first_line(e)) from e


def _write_shards(con: duckdb.DuckDBPyConnection, query: str, columns: list[str], data_dir: Path, split: str,
                  shard_rows: int, on_rows: Callable[[int, int], None] | None, user_query: bool) -> _Stats:
    """Stream the query's `columns` into `data_dir/<split>-NNNNN-of-NNNNN.parquet`, at most `shard_rows` rows each."""
    data_dir.mkdir(parents=True)
    stats = _Stats()
    writer: pq.ParquetWriter | None = None
    in_shard = 0
    try:
        for batch in _batches(con, query, user_query):
            _count(stats, batch)  # before run_id may be dropped
            batch = batch.select(columns)
            stats.schema = batch.schema
            stats.rows += batch.num_rows
            stats.arrow_bytes += batch.nbytes
            while batch.num_rows:
                if writer is None:
                    path = data_dir / f"shard-{len(stats.shards):05d}.parquet"  # renamed once the count is known
                    writer = pq.ParquetWriter(path, batch.schema)
                    stats.shards.append(path)
                    in_shard = 0
                take = min(batch.num_rows, shard_rows - in_shard)
                writer.write_batch(batch.slice(0, take))
                batch, in_shard = batch.slice(take), in_shard + take
                if in_shard == shard_rows:
                    writer.close()
                    writer = None
            if on_rows:
                on_rows(stats.rows, len(stats.shards))
    finally:
        if writer is not None:
            writer.close()
    n = len(stats.shards)
    stats.shards = [p.rename(data_dir / f"{split}-{i:05d}-of-{n:05d}.parquet") for i, p in enumerate(stats.shards)]
    return stats


def _count(stats: _Stats, batch: pa.RecordBatch) -> None:
    names = batch.schema.names
    if "run_id" in names:
        for item in pc.value_counts(batch.column("run_id")).to_pylist():
            stats.run_counts[item["values"]] += item["counts"]
    if "label" in names and pa.types.is_boolean(batch.schema.field("label").type):
        desirable = pc.sum(batch.column("label")).as_py() or 0
        stats.label_counts["true"] = stats.label_counts.get("true", 0) + desirable
        stats.label_counts["false"] = stats.label_counts.get("false", 0) + batch.num_rows - desirable


def _runs(con: duckdb.DuckDBPyConnection, run_ids: list[str] | None) -> list[dict[str, Any]]:
    """The runs behind the rows (all runs when the rows carry no run_id), config included."""
    where = "" if run_ids is None else "WHERE list_contains($ids, run_id)"
    try:
        cursor = con.execute(f"SELECT {', '.join(RUN_COLUMNS)}, config FROM runs {where} ORDER BY created_at",
                             {} if run_ids is None else {"ids": run_ids})
    except duckdb.CatalogException:
        return []  # a database without josh-factory's tables: the card just has no runs section
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _not_written_by_export(rel: Path) -> bool:
    """Is this file of an earlier export's folder someone else's (kept by --force), not its card or a shard?"""
    return rel != Path("README.md") and not (rel.parent == Path("data") and SHARD.fullmatch(rel.name))


# -- the dataset card ---------------------------------------------------------------------------------------

def card_metadata(stats: _Stats, info: ExportInfo, name: str) -> Any:
    """`DatasetCardData` built with the `datasets` helpers `push_to_hub` uses: configs, features, splits."""
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(license=LICENSE, language=["en"], task_categories=["text-generation"], tags=TAGS,
                           size_categories=[_size_category(info.rows)], pretty_name=f"josh-factory {name}")
    splits = SplitDict()
    splits.add(SplitInfo(name=info.split, num_bytes=stats.arrow_bytes, num_examples=info.rows))
    ds_info = DatasetInfo(features=Features.from_arrow_schema(stats.schema), splits=splits,
                          download_size=info.download_bytes, dataset_size=stats.arrow_bytes)
    DatasetInfosDict({"default": ds_info}).to_dataset_card_data(data)
    MetadataConfigs({"default": {"data_files": [{"split": info.split, "path": f"data/{info.split}-*"}]}}) \
        .to_dataset_card_data(data)
    return data


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if rows < limit:
            return name
    return "10M<n<100M"


def dataset_card(source: Source, stats: _Stats, info: ExportInfo, runs: list[dict[str, Any]],
                 params: dict[str, str], exported_at: datetime, repo_id: str | None) -> str:
    """README.md: YAML front matter the Hub reads, then what the rows are and where they came from."""
    fence = "`" * 3
    lines = [
        "---", str(card_metadata(stats, info, source.label)), "---", "",
        f"{CARD_HEADING}`{source.label}`", "",
        source.description, "",
        f"Exported by josh-factory {__version__} on {exported_at:%Y-%m-%d %H:%M:%S} UTC. {ABOUT}", "",
        "## Load", "",
        f"{fence}python", "from datasets import load_dataset", "",
        f'ds = load_dataset("{repo_id or "path/to/this/folder"}", split="{info.split}")', fence, "",
        "## Rows", "",
        f"{info.rows} rows in {len(stats.shards)} Parquet shard(s) (`data/{info.split}-*.parquet`).",
    ]
    if info.label_counts:
        lines.append(f"Labels: {info.label_counts.get('true', 0)} desirable (`label` true), "
                     f"{info.label_counts.get('false', 0)} undesirable.")
    lines += ["", "| column | type |", "|---|---|"]
    lines += [f"| `{f.name}` | `{f.type}` |" for f in stats.schema]
    lines += ["", "## Runs", ""]
    if runs:
        lines.append("Reward semantics: `fixed` is josh-factory's tool and reward semantics, `parity` the JOSH "
                     "reference's exactly.")
        lines += ["", "| " + " | ".join(RUN_COLUMNS) + " | rows |", "|" + "---|" * (len(RUN_COLUMNS) + 1)]
        for run in runs:
            count = stats.run_counts.get(run["run_id"], "") if stats.run_counts else ""
            lines.append("| " + " | ".join("" if run[c] is None else str(run[c]) for c in RUN_COLUMNS)
                         + f" | {count} |")
        for run in runs:
            config = json.dumps(named_today(json.loads(run["config"])), indent=2) if run["config"] else "{}"
            lines += ["", f"<details><summary>{run['run_id']} settings</summary>", "",
                      f"{fence}json", config, fence, "", "</details>"]
    else:
        lines.append("No `runs` table in the source database.")
    lines += ["", "## Parameters", ""]
    lines += [f"- `{k}` = `{v}`" for k, v in params.items()] or ["None set: the view's defaults (see below)."]
    lines += ["", "## Definition", "", f"{fence}sql", source.definition.strip(), fence, ""]
    return "\n".join(lines)


# -- the Hub ------------------------------------------------------------------------------------------------

def check_repo_id(repo_id: str) -> None:
    """UserError unless `repo_id` is a valid Hub repo id (`user/name` or `name`), checked before any work."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UserError(f"--push {repo_id!r} is not a Hub repo id; use USER/NAME, e.g. alice/toolwoz-sft") from e


def push(out_dir: str | os.PathLike, repo_id: str, *, token: str, private: bool = False,
         endpoint: str | None = None) -> str:
    """Create the dataset repo (if missing) and upload the folder's README.md and data/; returns the repo URL.

    UserError when the Hub refuses the token (401/403), FactoryError (exit 1) when it cannot be reached.
    """
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=True if private else None, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(out_dir),
                          allow_patterns=["README.md", "data/*-of-*.parquet"],  # not other files kept by --force
                          commit_message=f"Upload josh-factory export ({Path(out_dir).name})")
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            raise UserError(f"the Hub refused the token for {repo_id} (HTTP {status}); "
                            "set HF_TOKEN to a token with write access") from e
        raise FactoryError(f"push to {repo_id} failed: {first_line(e)}") from e
    except (httpx2.HTTPError, OSError) as e:
        raise FactoryError(f"cannot reach the Hub at {api.endpoint}: {first_line(e)}") from e
    return str(url)


