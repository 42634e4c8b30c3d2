"""Renamed flags keep their old spelling for one release: hidden, one deprecation line, the same run."""

from __future__ import annotations

import json

import click
import pytest

from factory.cli import cli
from tests.conftest import query, run

TEACHER = ["--agent", "teacher", "--user", "rule", "--split", "val_boot", "--limit", "1", "--json"]


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning:")]


@pytest.mark.slow
def test_max_steps_and_samples_still_work_and_say_their_new_names(wh):
    old = run("eval", *TEACHER, "--max-steps", "2", "-w", str(wh))
    assert old.returncode == 0, old.stderr
    assert _warnings(old.stderr) == ["Warning: --max-steps is deprecated; use --max-turns"]
    run_id = json.loads(old.stdout)["run_id"]
    new = run("eval", *TEACHER, "--max-turns", "2", "-w", str(wh))  # the same settings: the same run, resumed
    assert new.returncode == 0 and _warnings(new.stderr) == []
    assert json.loads(new.stdout)["run_id"] == run_id and json.loads(new.stdout)["new_rollouts"] == 0
    other = json.loads(run("eval", *TEACHER, "--max-turns", "3", "-w", str(wh)).stdout)["run_id"]
    harvest = run("harvest", *TEACHER, "--beam", "2", "--max-steps", "4", "-w", str(wh))
    assert harvest.returncode == 0, harvest.stderr
    assert _warnings(harvest.stderr) == ["Warning: --max-steps is deprecated; use --max-turns"]
    recorded = {r: json.loads(c)["search"] for r, c in query(wh, "SELECT run_id, config FROM runs")}
    assert sorted(s["max_turns"] for s in recorded.values()) == [2, 3, 4]
    assert not any("max_steps" in s for s in recorded.values())

    compared = run("eval", "compare", run_id, other, "--samples", "200", "-w", str(wh))
    assert compared.returncode == 0, compared.stderr
    assert _warnings(compared.stderr) == ["Warning: --samples is deprecated; use --resamples"]
    assert "(paired bootstrap, 200 resamples)" in compared.stdout
    assert "(paired bootstrap, 300 resamples)" in run("eval", "compare", run_id, other, "--resamples", "300",
                                                       "-w", str(wh)).stdout


@pytest.mark.parametrize(("command", "old", "new"), [
    (["eval"], "--max-steps", "--max-turns"), (["harvest"], "--max-steps", "--max-turns"),
    (["loop"], "--max-steps", "--max-turns"), (["eval", "compare"], "--samples", "--resamples")])
def test_old_spellings_are_hidden(command: list[str], old: str, new: str) -> None:
    ctx = click.Context(cli)
    found = cli
    for name in command:
        found = found.get_command(ctx, name)
    options = {opt: p for p in found.params for opt in p.opts}
    assert options[old].hidden and not options[new].hidden
    assert old not in found.get_help(click.Context(found, info_name=command[-1]))
