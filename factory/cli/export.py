"""`factory export`: a dataset view (or a query) as Parquet shards + a dataset card, in a folder or on the Hub."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from factory.cli.options import json_option, warehouse_option
from factory.errors import UserError
from factory.output import err, out, print_json
from factory.store import staging, warehouse


@click.command(name="export")
@click.argument("view_or_query")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder to write README.md and data/*.parquet into.")
@click.option("-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE",
              help="Set a view parameter (a DuckDB variable), e.g. -p min_reward 0.5 or -p run_id harvest-1a2b.")
@click.option("--shard-rows", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="At most this many rows per Parquet shard.")
@click.option("--columns", type=click.Choice(["all", "trl"]), default="all", show_default=True,
              help="`all`: every column of the view (provenance such as rollout_id, run_id, task_id included); "
                   "`trl`: only TRL's (messages, prompt, completion, label, chosen, rejected, tools).")
@click.option("--push", "repo_id", default=None, metavar="REPO_ID",
              help="Then upload the folder to this Hub dataset repo (token from $HF_TOKEN, Hub from $HF_ENDPOINT).")
@click.option("--private", is_flag=True, help="Create the Hub repo private (with --push).")
@click.option("--force", is_flag=True,
              help="Replace the card (README.md) and shards of an earlier export in --out; other files stay.")
@warehouse_option
@json_option
def export(view_or_query: str, out_dir: Path, params: tuple[tuple[str, str], ...], shard_rows: int, columns: str,
           repo_id: str | None, private: bool, force: bool, warehouse_path: str, as_json: bool) -> None:
    """Export a dataset view (sft, kto, dpo, trajectories, ...) or a SELECT query as a Hugging Face dataset:
    Parquet shards plus a README.md card (features, licence, the runs behind the rows, the view's SQL).

    The folder loads with `datasets.load_dataset(FOLDER)`; `--push` uploads it to the Hub. It appears whole or
    not at all: written in a staging folder beside it (`.FOLDER.export-*`), then put in its place in one step, so
    a killed export leaves the folder as it was; the next export deletes the staging folders a killed one left.

    \b
    Example:
        factory export sft --out exports/sft
        factory export kto --out exports/kto -p min_reward 0.5 --columns trl
        factory export "select * from sft where task_id like 'MUL%'" --out exports/sft-mul
        HF_TOKEN=hf_... factory export sft --out exports/sft --push alice/toolwoz-sft --private
    """
    from factory.present import export as lib  # imports pyarrow.parquet; keeps `factory --help` instant

    if private and not repo_id:
        raise click.UsageError("--private only applies with --push REPO_ID")
    token = None
    if repo_id:
        lib.check_repo_id(repo_id)
        token = os.environ.get("HF_TOKEN")
        if not token:
            raise UserError("--push needs a Hub write token in HF_TOKEN (https://huggingface.co/settings/tokens)")
    staging.clean(out_dir)  # what a killed export left beside --out: an old export put back, staging folders gone
    lib.check_out_dir(out_dir, force)  # before opening the warehouse: the cheapest mistake to report
    columns_shown = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} rows"),
                     TimeElapsedColumn())
    with warehouse.opened(warehouse_path, read_only=True) as con, \
            Progress(*columns_shown, console=err, transient=True,
                     disable=as_json or not err.is_terminal) as progress:
        task = progress.add_task("writing shards", total=None)
        info = lib.export_view(
            con, view_or_query, out_dir, params=dict(params), shard_rows=shard_rows, columns=columns, force=force,
            repo_id=repo_id,
            on_rows=lambda rows, shards: progress.update(task, completed=rows, description=f"shard {shards}"),
        )
    url = lib.push(out_dir, repo_id, token=token, private=private, endpoint=os.environ.get("HF_ENDPOINT")) \
        if repo_id else None
    load_from = repo_id or str(out_dir)
    if as_json:
        print_json({"out": str(out_dir), "rows": info.rows, "shards": [str(p) for p in info.shards],
                    "columns": info.columns, "runs": info.run_ids, "repo_url": url})
        return
    out.print(f"wrote {out_dir}: {info.rows} rows in {len(info.shards)} shard(s), columns {', '.join(info.columns)}")
    if url:
        out.print(f"pushed to {url}")
    out.print(f'load: python -c \'from datasets import load_dataset; print(load_dataset("{load_from}"))\'')
