"""The default agent: the tiny local model in `$FACTORY_HOME/models/tiny-toolwoz`, bootstrapped on first use.

Commands resolve the agent here *before* they build run settings (`resolve_agent`), so building settings never
starts work, and a mistyped model folder fails in a second, before anything loads.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from rich.console import Console

from factory.errors import UserError
from factory.jobs.bootstrap import BUDGET, bootstrap
from factory.jobs.training import check_model
from factory.store.folders import staged
from search.backends import backend_kind
from toolwoz.multiwoz import factory_home
from toolwoz.tools import RESULTS
from train.tiny_model import MODEL_NAME

SHIPPED = Path(__file__).parents[1] / "m0"  # the M0 `factory model bootstrap` made, shipped with the package


def location() -> Path:
    """`$FACTORY_HOME/models/tiny-toolwoz`."""
    return factory_home() / "models" / MODEL_NAME


def is_bootstrapped(path: Path) -> bool:
    """Does `path` hold a model `factory model bootstrap` made (not the untrained one of `factory model init`)?"""
    info = path / "factory_model.json"
    return info.is_file() and bool(json.loads(info.read_text()).get("bootstrap"))


def shipped() -> Path | None:
    """The shipped M0, if it was made with today's bootstrap budget (else it is another model: not used)."""
    info = SHIPPED / "factory_model.json"
    if not info.is_file():
        return None
    record = json.loads(info.read_text()).get("bootstrap") or {}
    return SHIPPED if record.get("budget") == dataclasses.asdict(BUDGET) else None


def install_shipped(path: Path) -> None:
    """Copy the shipped M0 to `path`; the folder appears whole or not at all (`folders.staged`)."""
    with staged(path) as stage:
        shutil.copytree(SHIPPED, stage, dirs_exist_ok=True)


def ensure(multiwoz_path: str | None, warehouse_path: str, console: Console) -> str:
    """The default model's folder: the shipped M0 copied there, or bootstrapped (with a notice; about 20 minutes
    on 2 cores) when the package has none for today's budget; as it is when it is bootstrapped already."""
    path = location()
    if not is_bootstrapped(path):
        why = ("holds the untrained model of `factory model init`" if path.exists() else "does not exist yet")
        if shipped() is not None:
            console.print(f"The default model {path} {why}: installing the M0 shipped with josh-factory "
                          "(made by `factory model bootstrap`; `factory model bootstrap --force` makes your own)")
            install_shipped(path)
            return str(path)
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


def model_results(agent: str) -> str:
    """What `agent` wants a search to show it: `factory_results` in its folder's config.json, else `full`."""
    if backend_kind(agent) not in ("transformers", "vllm"):
        return "full"  # the teacher and servers' models: full rows
    config = Path(agent.removeprefix("vllm:")).expanduser() / "config.json"
    try:
        value = json.loads(config.read_text()).get("factory_results")
    except (OSError, ValueError, AttributeError):
        return "full"  # a Hub id, or a folder without a readable config
    return value if value in RESULTS else "full"


def resolve_results(agent: str, results: str | None, semantics: str) -> str:
    """`--results` as given, else the agent's preference; `parity` searches serve the reference's rows."""
    if semantics == "parity":
        if results not in (None, "full"):
            raise UserError("--results compact shapes `fixed` searches; --semantics parity serves the "
                            "reference's rows: drop one of them")
        return "full"
    return results or model_results(agent)
