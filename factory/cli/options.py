"""Click options shared by several commands, so a flag means the same thing everywhere.

A search flag is named after its `SearchConfig` field (`--seed-policy` sets `seed_policy`) and takes its default
from a preset and its help from the field's metadata: one vocabulary from the command line to `factory runs show`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from factory.jobs.environments import ENVS
from factory.store.warehouse import default_path
from search.josh import CHOICES, SearchConfig
from toolwoz import multiwoz
from toolwoz.tasks import SPLITS
from toolwoz.tools import RESULTS

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
FIELDS = {f.name: f for f in dataclasses.fields(SearchConfig)}


def _remember_multiwoz(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Given either way (`--multiwoz`, or $FACTORY_MULTIWOZ as `make demo` passes it), the path is remembered:
    # later commands (and `factory model init`) find it without being told again.
    given = value or os.environ.get("FACTORY_MULTIWOZ")
    if given and Path(given).expanduser().exists():
        multiwoz.remember(given)
    return value


warehouse_option = click.option(
    "-w", "--warehouse", "warehouse_path", default=default_path, show_default="$FACTORY_WAREHOUSE or ./warehouse.duckdb",
    type=click.Path(dir_okay=False), help="The DuckDB warehouse file.",
)
multiwoz_option = click.option(
    "--multiwoz", type=click.Path(), default=None, callback=_remember_multiwoz,
    help="MultiWOZ folder or zip, remembered in $FACTORY_HOME (else $FACTORY_MULTIWOZ, the remembered one, the "
         "cache in $FACTORY_HOME, then a download).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
env_option = click.option(
    "--env", "env", type=click.Choice(ENVS), default="toolwoz", show_default=True,
    help="The environment: ToolWOZ (MultiWOZ's travel tools, read-only), or τ-bench's `retail` or `airline` "
         "(tools that write: every branch sees only its own path's writes).")
taubench_option = click.option(
    "--taubench", "taubench_path", type=click.Path(), default=None, envvar="FACTORY_TAUBENCH",
    help="τ-bench data folder (retail/, airline/) [default: $FACTORY_TAUBENCH, else ../shared/taubench].")


def search_option(name: str, preset: SearchConfig = SearchConfig(), **kwargs: Any) -> Decorator:
    """`--name` for the SearchConfig field `name`: the preset's value as default, the field's help."""
    default = getattr(preset, name)
    if isinstance(default, bool):
        return click.option(f"--{name.replace('_', '-')}", name, is_flag=True, default=default,
                            help=FIELDS[name].metadata["help"], **kwargs)
    kind = click.Choice(CHOICES[name]) if name in CHOICES else {int: click.IntRange(min=1), float:
                                                                 click.FloatRange(min=0)}.get(type(default))
    return click.option(f"--{name.replace('_', '-')}", name, type=kwargs.pop("type", kind), default=default,
                        show_default=True, help=FIELDS[name].metadata["help"], **kwargs)


def agent_option(help: str) -> Decorator:
    """`--agent` (alias `--model`, the name `factory train` uses)."""
    return click.option("--agent", "--model", "agent", default=None, help=help)


semantics_option = search_option("semantics")
results_option = click.option("--results", type=click.Choice(RESULTS), default=None,
                              help=FIELDS["results"].metadata["help"])


def check_user(user: str, user_model: str | None) -> None:
    if user == "llm" and not user_model:
        raise click.UsageError("--user llm needs --user-model (a model folder, Hub id or openai:MODEL)")


def _task_ids(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    ids = tuple(t.strip() for t in (value or "").split(",") if t.strip())
    return ids or None


def max_steps_alias(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--max-steps`, the old spelling of `--max-turns` (agent turns; `factory train --max-steps` counts optimizer
    steps), hidden and kept for one release."""
    return deprecated_alias("--max-steps", "--max-turns", "max_turns", type=click.IntRange(min=1))(f)


def rollout_options(default_split: str, preset: SearchConfig) -> Decorator:
    """Options shared by `eval` and `harvest`: who talks to whom, on which tasks, how; defaults from `preset`."""
    options = [
        agent_option("A model folder, Hub id or GGUF file (`model.gguf`, needs the `gguf` extra; transformers, "
                     "dequantised; a ChatML template that ignores tools is replaced by train/chatml_tools.jinja), "
                     "`vllm:MODEL` (vLLM's offline engine in this "
                     "process; its prefix caching is not bit-deterministic across batch compositions, so a re-run "
                     "may sample other tokens), `openai:MODEL` (with --base-url), or `teacher`. "
                     "Default: the tiny model in $FACTORY_HOME/models, bootstrapped on first use."),
        click.option("--base-url", default=None, help="OpenAI-compatible endpoint for `openai:` agents."),
        click.option("--request-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
                     help="Seconds one request to an `openai:` agent or user may take; a slow, failed or malformed "
                          "answer is retried 3 times with backoff (not part of the run id)."),
        click.option("--user", type=click.Choice(["rule", "llm"]), default="rule", show_default=True,
                     help="User simulator: the environment's deterministic `rule` user (ToolWOZ: agenda-based; "
                          "τ-bench: scripted from the task), or an `llm` customer (see --user-model)."),
        click.option("--user-model", default=None, help="The llm user's model: folder, Hub id or `openai:MODEL`."),
        click.option("--user-base-url", default=None, help="Endpoint for an `openai:` user model."),
        search_option("protocol", preset),
        results_option,
        click.option("--split", default=None,
                     help=f"Which tasks [default: {default_split} (ToolWOZ: {', '.join(SPLITS)}); τ-bench: test "
                          f"for eval, train for a retail harvest] (`factory env info` counts them)."),
        click.option("--limit", type=click.IntRange(min=1), default=None,
                     help="Only the first N tasks (part of the run id)."),
        click.option("--tasks", "task_ids", default=None, callback=_task_ids,
                     help="Comma-separated task ids within the split (part of the run id)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Conversations in flight; a local model batches all their pending turns together."),
        search_option("temperature", preset),
        search_option("seed", preset, type=int),
        search_option("max_turns", preset),
        max_steps_alias,
        search_option("max_new_tokens", preset),
        search_option("semantics", preset),
        click.option("--run", "run_name", default=None, help="Name (or resume) this run; default: a settings hash."),
        env_option,
        multiwoz_option,
        taubench_option,
        warehouse_option,
        json_option,
    ]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def deprecated_alias(old: str, new: str, dest: str, **kwargs: Any) -> Decorator:
    """A hidden `old` spelling of the option `new` (parameter `dest`), kept for one release. Given, it prints one
    deprecation line on stderr and its value goes to `dest`; `new` wins when both are given, a repeatable option
    (`multiple=True` in `kwargs`, with the new option's type) takes both."""
    alias = "deprecated_" + old.lstrip("-").replace("-", "_")

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(f)
        def command(*args: Any, **values: Any) -> Any:
            value = values.pop(alias)
            if value is not None and value != ():
                click.echo(f"Warning: {old} is deprecated; use {new}", err=True)
                if kwargs.get("multiple"):
                    values[dest] = (*values[dest], *value)
                elif click.get_current_context().get_parameter_source(dest) is not ParameterSource.COMMANDLINE:
                    values[dest] = value
            return f(*args, **values)

        return click.option(old, alias, default=None, hidden=True, help=f"Deprecated spelling of {new}.",
                            **kwargs)(command)

    return decorate
