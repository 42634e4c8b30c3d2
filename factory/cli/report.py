"""`factory report`: one self-contained HTML page with the figures of some runs or of a loop (factory/present/report.py)."""

from __future__ import annotations

from pathlib import Path

import click

from factory.cli.options import json_option, warehouse_option
from factory.output import err, print_json
from factory.present import report as report_lib


@click.command()
@click.argument("run_ids", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for report.html and the PNGs it embeds (refused if it exists, unless --force).")
@click.option("--loop", "loop_file", type=click.Path(path_type=Path), default=None,
              help="A `factory loop` output (its loop.json or --out folder): adds Average Reward per model with "
                   "the paired-bootstrap intervals; without RUN ids, reports on the loop's runs.")
@click.option("--force", is_flag=True, help="Write into an existing --out folder (its report files are replaced).")
@warehouse_option
@json_option
def report(run_ids: tuple[str, ...], out_dir: Path, loop_file: Path | None, force: bool, warehouse_path: str,
           as_json: bool) -> None:
    """Write an HTML report of runs: reward per domain and per goal kind, branch width and live leaves per
    step, end reasons, tool-error kinds, collapse depth, tokens per rollout; with --loop (or two or more eval
    runs) Average Reward per model with paired-bootstrap intervals. Each figure plots one query of
    sql/queries/report_*.sql and shows its rows. Run ids may be unique prefixes; reads the warehouse only.

    \b
    Example:
        factory report -w warehouse.duckdb.example harvest-fc4f2568d1 harvest-e257e08a88 --out report
        factory report --loop models/loop --out models/loop/report
    """
    if not run_ids and loop_file is None:
        raise click.UsageError("pass one or more RUN ids (see `factory runs`) or --loop LOOP_JSON")
    result = report_lib.build_report(warehouse_path, list(run_ids), out_dir, loop_file=loop_file, force=force)
    if as_json:
        print_json({"html": str(result.html), "pngs": [str(p) for p in result.pngs], "runs": result.runs,
                    "empty_runs": result.empty_runs})
        return
    if result.empty_runs:
        err.print(f"Note: no rollouts in {', '.join(result.empty_runs)} (the report says so)")
    click.echo(f"Wrote {result.html} ({len(result.pngs)} figures, {len(result.runs)} runs)")
