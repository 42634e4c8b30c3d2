"""The `factory` command group: subcommands load lazily so `factory --help` stays instant."""

from __future__ import annotations

import importlib
import os
import signal

import click
import duckdb

from common.errors import first_line
from factory import __version__
from factory.errors import CommandError, FactoryError
from factory.signals import STOP_SIGNALS, stop_requested
from search.errors import SearchError
from taubench.errors import TaubenchError
from toolwoz.errors import ToolwozError
from train.errors import TrainError

# command name -> "module:attribute"; each command lives in factory/cli/<name>.py
COMMANDS = {
    "env": "factory.cli.env:env_command",
    "toolwoz": "factory.cli.toolwoz:toolwoz",
    "model": "factory.cli.model:model",
    "eval": "factory.cli.eval:eval_command",
    "harvest": "factory.cli.harvest:harvest",
    "sql": "factory.cli.sql:sql_command",
    "runs": "factory.cli.runs:runs",
    "train": "factory.cli.train:train",
    "export": "factory.cli.export:export",
    "loop": "factory.cli.loop:loop",
    "show": "factory.cli.show:show_command",
    "report": "factory.cli.report:report",
}


# The other packages' error roots: each says what to change (a split, a model, the training data), so exit 2.
USER_ERRORS = (SearchError, TrainError, ToolwozError, TaubenchError)


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.find_root().obj or {}).get("debug")) or os.environ.get("FACTORY_DEBUG") == "1"


class FactoryGroup(click.Group):
    """Loads subcommands on demand, takes `--debug` anywhere on the line, and turns every error into one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:  # `factory eval --debug ...` means the same as `factory --debug eval ...`
            end = args.index("--") if "--" in args else len(args)
            rest = [a for a in args[:end] if a != "--debug"] + args[end:]
            args = ["--debug", *rest] if len(rest) < len(args) else args
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            if _debug(ctx):
                raise
            raise as_command_error(e) from e


def as_command_error(e: Exception) -> CommandError:
    """The one mapping from an exception to what the user sees (one line) and the exit code."""
    line = first_line(e)
    if isinstance(e, FactoryError):
        return CommandError(line, e.exit_code)
    if isinstance(e, USER_ERRORS):
        return CommandError(line, 2)
    if isinstance(e, duckdb.Error):
        return CommandError(f"DuckDB: {line}", 1)
    if isinstance(e, OSError):
        return CommandError(f"{line} (run with --debug for details)", 1)
    return CommandError(f"unexpected {first_line(e, with_type=True)} (run with --debug for the traceback)", 1)


@click.group(cls=FactoryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True,
              help="Show tracebacks instead of one-line errors (anywhere on the line; or FACTORY_DEBUG=1).")
@click.version_option(__version__, prog_name="josh-factory")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """josh-factory: harvest, train on and export tool-calling dialogue data with JOSH.

    \b
    Example:
        factory toolwoz build --multiwoz ../shared/multiwoz
        factory toolwoz call search_train '{"departure": "cambridge", "day": "monday"}'
    """
    ctx.obj = {"debug": debug}


def main() -> None:
    # SIGTERM (a scheduler, `kill`) stops a command as Ctrl-C does: what finished stays committed and the run is
    # marked interrupted; re-running resumes it. One handler for both, so a stop a library swallowed is still seen.
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_requested)
    # Our commands draw their own progress bars; the libraries' tqdm bars would interleave with them.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli(prog_name="factory")


if __name__ == "__main__":
    main()
