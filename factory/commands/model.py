"""`factory model`: create the tiny local default model (no model hub needed)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from factory.models import create_default_model
from factory.options import multiwoz_option



@click.group()
def model() -> None:
    """Local models: create the tiny default agent.

    \b
    Example:
        factory model init
        factory model init --out models/tiny
    """


@model.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write (default: $FACTORY_HOME/models/tiny-toolwoz, the default agent).")
@click.option("--force", is_flag=True, help="Overwrite an existing model folder.")
@multiwoz_option
def init(out: Path | None, force: bool, multiwoz: str | None) -> None:
    """Create the tiny default model: a byte-level BPE tokenizer trained on ToolWOZ text, a chat template that
    renders tools and tool calls, and a small untrained Llama (a few million parameters).

    \b
    Example:
        factory model init --out models/tiny
    """
    from train.tiny_model import default_model_dir

    target = out or default_model_dir()
    if target.exists() and any(target.iterdir()) and not force:
        raise click.UsageError(f"{target} already exists; pass --force to overwrite it")
    path = create_default_model(multiwoz, target)
    info = json.loads((path / "factory_model.json").read_text()) if (path / "factory_model.json").exists() else {}
    click.echo(f"Created {path}" + (f" ({json.dumps(info)})" if info else ""))
