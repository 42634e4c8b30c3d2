"""The README and docs/ as the CLI's manual: every command is documented, every documented command parses (click's
parser, nothing runs), every relative link lands, and the README stays a front door."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from factory.cli import cli
from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<"}


def command_paths() -> list[str]:
    """Every command and subcommand of `factory`, as the words after `factory` (lazy commands loaded)."""
    paths: list[str] = []

    def walk(group: click.Group, ctx: click.Context, prefix: tuple[str, ...]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, f"factory {' '.join((*prefix, name))} is listed but does not load"
            paths.append(" ".join((*prefix, name)))
            if isinstance(command, click.Group):
                walk(command, click.Context(command, info_name=name, parent=ctx), (*prefix, name))

    walk(cli, click.Context(cli, info_name="factory"), ())
    return paths


def fenced_lines(page: Path) -> list[tuple[int, str, str]]:
    """(line number, block, text) of every line but the fences: block is '' outside a fence, else its language
    ('text' for a fence without one)."""
    lines, language = [], None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("```"):
            language = line[3:].strip() if language is None else None
            continue
        lines.append((number, "" if language is None else language or "text", line))
    return lines


def factory_lines(page: Path) -> list[tuple[int, str]]:
    """Lines of ```bash blocks that run `factory ...` (a trailing backslash joins the next line)."""
    found, pending = [], None
    for number, language, line in fenced_lines(page):
        if language != "bash":
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line)
        elif line.startswith("factory "):
            pending = (number, line)
        else:
            continue
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1])
        else:
            found.append(pending)
            pending = None
    return found


def parse(line: str) -> str:
    """Parse `factory ...` with click as the CLI would, without invoking anything; returns the command path."""
    argv = shlex.split(line, comments=True)[1:]
    for i, word in enumerate(argv):
        if word in SHELL_OPERATORS:
            argv = argv[:i]
            break
    ctx = cli.make_context("factory", argv)
    path = []
    while isinstance(ctx.command, click.Group):
        group = ctx.command
        rest = [*(ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args), *ctx.args]
        if not rest:
            if not group.invoke_without_command:
                raise click.UsageError(f"factory {' '.join(path)} needs a subcommand", ctx)
            break
        name, command, args = group.resolve_command(ctx, rest)
        path.append(name)
        ctx = command.make_context(name, args, parent=ctx)
    return " ".join(path)


@pytest.fixture
def docs_env(home, monkeypatch):
    """Run from the checkout (examples name its files) with a scratch $FACTORY_HOME (`home`): parsing
    `--multiwoz PATH` remembers the path there."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FACTORY_DEBUG", raising=False)


def test_every_command_is_documented():
    paths = command_paths()
    assert {"eval compare", "runs show", "env replay", "train dpo", "model bootstrap"} <= set(paths)
    text = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    missing = [p for p in paths if not re.search(rf"(?<![\w/.-])factory {re.escape(p)}(?![\w-])", text)]
    assert not missing, f"not in README.md or docs/*.md as `factory PATH`: {missing}"


def test_every_documented_command_parses(docs_env):
    lines = [(page, number, line) for page in PAGES for number, line in factory_lines(page)]
    assert len(lines) >= 60 and {page for page, _, _ in lines} >= {README, ROOT / "docs" / "loop.md"}
    failures, parsed = [], set()
    for page, number, line in lines:
        try:
            parsed.add(parse(line))
        except (click.ClickException, ValueError) as e:  # ValueError: shlex, an unclosed quote
            message = e.format_message() if isinstance(e, click.ClickException) else str(e)
            failures.append(f"{page.relative_to(ROOT)}:{number}: {line}\n    {message}")
    assert not failures, "documented commands that do not parse:\n" + "\n".join(failures)
    assert {"eval", "harvest", "loop", "sql", "env replay", "train sft"} <= parsed


def test_parse_rejects_what_the_cli_rejects(docs_env):
    """The check above can fail: a wrong flag, a missing argument or a bad choice does not parse."""
    for line in ("factory eval --no-such-flag", "factory runs show", "factory eval --env mars",
                 "factory train", "factory sql -f no/such/file.sql", "factory nosuch"):
        with pytest.raises(click.ClickException):
            parse(line)
    assert parse("factory eval compare RUN_A RUN_B  # paired bootstrap") == "eval compare"
    assert parse("factory eval --agent teacher --split val") == "eval"  # the group runs itself


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_land():
    anchors = {page: {slug(line.lstrip("#")) for _, language, line in fenced_lines(page)
                      if not language and re.match(r"#{1,6} ", line)} for page in PAGES}
    broken = []
    for page in PAGES:
        for number, language, line in fenced_lines(page):
            for target in re.findall(r"\]\(([^)\s]+)\)", line) if not language else ():
                if re.match(r"[a-z]+:", target):
                    continue
                file, _, anchor = target.partition("#")
                dest = (page.parent / file).resolve() if file else page
                if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors.get(dest, ())):
                    broken.append(f"{page.relative_to(ROOT)}:{number}: {target}")
    assert not broken, f"links that do not land: {broken}"


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details into docs/"
    for page in PAGES[1:]:
        assert f"]({page.relative_to(ROOT)})" in "\n".join(lines), f"README.md does not link {page.name}"
