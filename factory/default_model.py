"""The default agent: the tiny local model in `$FACTORY_HOME/models/tiny-toolwoz`, bootstrapped on first use.

Commands resolve the agent here *before* they build run settings (`resolve_agent`), so building settings never
starts work, and a mistyped model folder fails in a second, before anything loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from factory.bootstrap import bootstrap
from factory.errors import UserError
from factory.training import check_model
from search.backends import backend_kind
from toolwoz.multiwoz import factory_home
from train.tiny_model import MODEL_NAME


def location() -> Path:
    """`$FACTORY_HOME/models/tiny-toolwoz`."""
    return factory_home() / "models" / MODEL_NAME


def is_bootstrapped(path: Path) -> bool:
    """Does `path` hold a model `factory model bootstrap` made (not the untrained one of `factory model init`)?"""
    info = path / "factory_model.json"
    return info.is_file() and bool(json.loads(info.read_text()).get("bootstrap"))


def ensure(multiwoz_path: str | None, warehouse_path: str, console: Console) -> str:
    """The default model's folder, bootstrapped first (with a notice; minutes on CPU) unless it is already."""
    path = location()
    if not is_bootstrapped(path):
        why = ("holds the untrained model of `factory model init`" if path.exists() else "does not exist yet")
        console.print(f"[yellow]The default model {path} {why}: bootstrapping it (a teacher run, then a short SFT; "
                      "`factory model bootstrap` does this alone)[/yellow]")
        bootstrap(path, warehouse_path, multiwoz_path, console)
    return str(path)


def require() -> str:
    """The default model's folder as the start of a training (trained or not); UserError if there is none."""
    path = location()
    if not path.exists():
        raise UserError(f"no default model at {path}; run `factory model bootstrap` (or `factory model init`) "
                        "or pass --model")
    return str(path)


def resolve_agent(agent: str | None, *, multiwoz_path: str | None, warehouse_path: str, console: Console) -> str:
    """`agent` as given once a model folder or Hub id is known to exist; without one, the bootstrapped default."""
    if agent is None:
        return ensure(multiwoz_path, warehouse_path, console)
    if backend_kind(agent) == "transformers":
        check_model(agent)
    return agent
