"""The default agent: the tiny local model in $FACTORY_HOME/models, bootstrapped on first use."""

from __future__ import annotations

from pathlib import Path

from factory.output import err
from toolwoz import multiwoz, tables
from toolwoz.tools import ToolEnv


def default_agent() -> str:
    """Path of the default agent model."""
    from train.tiny_model import default_model_dir

    return str(default_model_dir())


def create_default_model(multiwoz_path: str | None, out: Path | None = None) -> Path:
    """Train the tokenizer on ToolWOZ text and write an untrained tiny Llama to `out` (default location)."""
    from train.tiny_model import default_model_dir, init_model

    out = out or default_model_dir()
    with err.status("reading MultiWOZ"):
        env = ToolEnv.from_connection(tables.in_memory(multiwoz.load(multiwoz_path)))
    with err.status(f"creating the tiny model in {out}"):
        return init_model(out, env.rows, list(env.tasks.values()))


def ensure_default_agent(multiwoz_path: str | None, warehouse_path: str) -> None:
    """Bootstrap the default tiny model on first use (a few minutes on CPU), with a notice."""
    from factory.bootstrap import bootstrap
    from train.tiny_model import default_model_dir

    if default_model_dir().exists():
        return
    err.print(f"[yellow]No default model yet: bootstrapping the tiny model into {default_model_dir()} "
              "(a teacher run, then a short SFT; `factory model bootstrap` does this alone)[/yellow]")
    bootstrap(default_model_dir(), warehouse_path, multiwoz_path, err)
