"""`factory model`: create and bootstrap the tiny local default model (no model hub needed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from factory.cli.options import json_option, multiwoz_option, warehouse_option
from factory.jobs import default_model
from factory.output import err, out, print_json


@click.group()
def model() -> None:
    """Local models: create the tiny default agent and bootstrap it on teacher conversations.

    \b
    Example:
        factory model bootstrap
        factory model init --out models/tiny
    """


@model.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write (default: $FACTORY_HOME/models/tiny-toolwoz, the default agent; "
                   "`factory model bootstrap` trains it).")
@click.option("--force", is_flag=True, help="Overwrite an existing model folder.")
@multiwoz_option
def init(out_dir: Path | None, force: bool, multiwoz: str | None) -> None:
    """Create the tiny default model: a byte-level BPE tokenizer trained on ToolWOZ text, a chat template that
    renders tools and tool calls, and a small untrained Llama (about 0.9M parameters).

    \b
    Example:
        factory model init --out models/tiny
    """
    from factory.jobs.bootstrap import create_untrained

    target = out_dir or default_model.location()
    if target.exists() and any(target.iterdir()) and not force:
        raise click.UsageError(f"{target} already exists; pass --force to overwrite it")
    path = create_untrained(multiwoz, target)
    info = json.loads((path / "factory_model.json").read_text()) if (path / "factory_model.json").exists() else {}
    click.echo(f"Created {path}" + (f" ({json.dumps(info)})" if info else ""))
    if target == default_model.location():
        err.print("It is untrained: `factory model bootstrap` trains it (eval and harvest without --agent do that "
                  "first); pass --agent to use it as it is.")


@model.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for M0 (default: $FACTORY_HOME/models/tiny-toolwoz, the default agent).")
@click.option("--force", is_flag=True, help="Bootstrap again even if --out holds a bootstrapped model.")
@multiwoz_option
@warehouse_option
@json_option
def bootstrap(out_dir: Path | None, force: bool, multiwoz: str | None, warehouse_path: str, as_json: bool) -> None:
    """Make the default agent M0: the teacher talks to the rule user on every `val_boot` task (a run in the
    warehouse), then the untrained tiny model gets a short SFT on that run's `sft` view. The budget (tasks,
    steps, learning rate) is fixed in factory/jobs/bootstrap.py and recorded in the model's factory_model.json.
    About 25 minutes on a 2-core CPU, so for the default folder the M0 shipped in the package (made this way,
    with today's budget) is installed instead unless you pass --force; does nothing if --out is bootstrapped
    already (an untrained `factory model init` folder there is replaced).

    \b
    Example:
        factory model bootstrap                 # installs the shipped M0
        factory model bootstrap --force         # trains your own
        factory model bootstrap --out models/m0 -w scratch.duckdb
    """
    from factory.jobs.bootstrap import BUDGET
    from factory.jobs.bootstrap import bootstrap as run_bootstrap

    target = (out_dir or default_model.location()).expanduser().resolve()
    info_file = target / "factory_model.json"
    done = json.loads(info_file.read_text()).get("bootstrap") if info_file.exists() else None
    if done and not force:
        err.print(f"{target} is bootstrapped already (teacher run {done['teacher_run']}, {done['steps']} steps, "
                  f"final loss {done['final_loss']:.4f}); pass --force to redo it")
        return
    if target.exists() and any(target.iterdir()) and not info_file.exists() and not force:
        raise click.UsageError(f"{target} exists and is not a factory model; pass --force to replace it")
    if target == default_model.location() and not force and default_model.shipped() is not None:
        default_model.install_shipped(target)
        err.print(f"installed the M0 shipped with josh-factory in {target} (made by `factory model bootstrap` with "
                  "today's budget); pass --force to train your own")
        return
    err.print(f"bootstrap budget: {json.dumps(dataclasses.asdict(BUDGET))}")
    result = run_bootstrap(target, warehouse_path, multiwoz, err)
    if as_json:
        print_json(result)
        return
    out_line = (f"M0 -> {result['model']}: SFT on {result['rows']} teacher conversations (run "
                f"{result['teacher_run']}), {result['steps']} steps, final loss {result['final_loss']:.4f} "
                f"({result['seconds']:.0f} s)")
    out.print(out_line)
