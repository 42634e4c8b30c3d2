"""Every `factory` command explains itself: `--help` with an `Example:` block and help text on every option."""

from __future__ import annotations

import click
from click.testing import CliRunner

from factory.cli import COMMANDS, cli


def commands() -> list[tuple[list[str], click.Command]]:
    """(command path, command) of the group and every command and subcommand below it."""
    ctx = click.Context(cli)
    found: list[tuple[list[str], click.Command]] = [([], cli)]
    todo = [([name], cli.get_command(ctx, name)) for name in cli.list_commands(ctx)]
    while todo:
        path, command = todo.pop()
        found.append((path, command))
        if isinstance(command, click.Group):
            todo += [([*path, name], command.commands[name]) for name in command.list_commands(ctx)]
    return sorted(found, key=lambda item: item[0])


def test_the_walk_reaches_every_command() -> None:
    paths = {" ".join(path) for path, _ in commands()}
    assert set(COMMANDS) <= paths
    assert {"eval compare", "toolwoz build", "train sft", "model bootstrap", "runs delete"} <= paths


def test_every_help_has_an_example() -> None:
    missing = []
    for path, _ in commands():
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "Example:" not in result.output:
            missing.append(" ".join(path) or "factory")
    assert missing == []


def test_every_option_has_help() -> None:
    bare = [f"{' '.join(path) or 'factory'} {param.opts[0]}" for path, command in commands()
            for param in command.params if isinstance(param, click.Option) and not param.help]
    assert bare == []
