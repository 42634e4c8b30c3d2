"""Click options shared by several commands, so a flag means the same thing everywhere."""

from __future__ import annotations

import click

from factory.warehouse import default_path

warehouse_option = click.option(
    "-w", "--warehouse", "warehouse_path", default=default_path, show_default="$FACTORY_WAREHOUSE or ./warehouse.duckdb",
    type=click.Path(dir_okay=False), help="The DuckDB warehouse file.",
)
multiwoz_option = click.option(
    "--multiwoz", type=click.Path(), default=None,
    help="MultiWOZ folder or zip (else $FACTORY_MULTIWOZ, the cache in $FACTORY_HOME, then a download).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
semantics_option = click.option(
    "--semantics", type=click.Choice(["fixed", "parity"]), default="fixed", show_default=True,
    help="Tool and reward semantics: `fixed` (ours) or `parity` (the reference exactly).",
)


def check_user(user: str, user_model: str | None) -> None:
    if user == "llm" and not user_model:
        raise click.UsageError("--user llm needs --user-model (a model folder, Hub id or openai:MODEL)")


def rollout_options(default_split: str, default_temperature: float):
    """Options shared by `eval` and `harvest`: who talks to whom, on which tasks, how."""
    from toolwoz.tasks import SPLITS

    options = [
        click.option("--agent", default=None,
                     help="A model folder or Hub id (transformers), `vllm:MODEL` (vLLM's offline engine in this "
                          "process; its prefix caching is not bit-deterministic across batch compositions, so a "
                          "re-run may sample other tokens), `openai:MODEL` (with --base-url), or `teacher`. "
                          "Default: the tiny model in $FACTORY_HOME/models, bootstrapped on first use."),
        click.option("--base-url", default=None, help="OpenAI-compatible endpoint for `openai:` agents."),
        click.option("--user", type=click.Choice(["rule", "llm"]), default="rule", show_default=True,
                     help="User simulator: agenda-based `rule`, or an `llm` customer (see --user-model)."),
        click.option("--user-model", default=None, help="The llm user's model: folder, Hub id or `openai:MODEL`."),
        click.option("--user-base-url", default=None, help="Endpoint for an `openai:` user model."),
        click.option("--protocol", type=click.Choice(["tools", "react"]), default="tools", show_default=True,
                     help="Agent protocol: native tool calls, or the reference's PLAN/APICALL/SPEAK text."),
        click.option("--split", type=click.Choice(SPLITS), default=default_split, show_default=True),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N tasks."),
        click.option("--tasks", "task_ids", default=None, help="Comma-separated task ids (within the split)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Conversations in flight; a local model batches all their pending turns together."),
        click.option("--temperature", type=click.FloatRange(min=0), default=default_temperature, show_default=True,
                     help="Agent sampling temperature (0 = greedy)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Run seed; every branch derives its own."),
        click.option("--max-steps", type=click.IntRange(min=1), default=15, show_default=True,
                     help="Agent turns per conversation branch."),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True),
        semantics_option,
        click.option("--run", "run_name", default=None, help="Name (or resume) this run; default: a settings hash."),
        multiwoz_option,
        warehouse_option,
        json_option,
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate
