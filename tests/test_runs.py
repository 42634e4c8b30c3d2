"""Run identity: the settings the commands build, and the run ids they hash to.

The ids below were computed by the code of commit 9833c0b (before the settings were renamed and before the task
selection joined the identity). Whole-split runs must keep them, so that re-running a command on an existing
warehouse resumes its run instead of starting a new one.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest

from factory.jobs import rollouts
from factory.store import runs
from factory.store.runs import RunSettings
from factory.store.writer import Writer
from search.josh import EVALUATION, HARVEST, PARITY, SearchConfig
from tests.conftest import query, run

DEFAULT_AGENT = "/nonexistent/fh/models/tiny-toolwoz"  # $FACTORY_HOME/models/tiny-toolwoz with a fixed home
ODD = SearchConfig(beam=4, max_turns=6, temperature=0.7, max_new_tokens=96, collapse="fewest-tokens",
                   protocol="react", seed=3, finish_dialogue=True)

PINNED = {  # name: (kind, agent, split, search, extra build_settings arguments, run id at 9833c0b)
    "eval teacher test": ("eval", "teacher", "test", EVALUATION, {}, "eval-8c9bd0dbf7"),
    "eval teacher val_boot (the bootstrap's teacher run)": ("eval", "teacher", "val_boot", EVALUATION, {},
                                                            "eval-07b3b3198d"),
    "harvest teacher": ("harvest", "teacher", "val_harvest", HARVEST, {}, "harvest-fc4f2568d1"),
    "harvest teacher --parity": ("harvest", "teacher", "val_harvest", dataclasses.replace(HARVEST, **PARITY), {},
                                 "harvest-960e14572e"),
    "harvest default model": ("harvest", DEFAULT_AGENT, "val_harvest", HARVEST, {}, "harvest-378b25566f"),
    "harvest odd settings": ("harvest", "org/model", "val", ODD, {}, "harvest-73c98036c8"),
    "eval openai agent, llm user": ("eval", "openai:m", "test", EVALUATION, {
        "base_url": "http://127.0.0.1:8000/v1", "user": "llm", "user_model": "openai:u",
        "user_base_url": "http://127.0.0.1:9000/v1"}, "eval-55484081df"),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_whole_split_run_ids_are_those_of_before(name: str) -> None:
    kind, agent, split, search, extra, expected = PINNED[name]
    settings = rollouts.build_settings(kind, agent, search, split=split, **extra)
    assert settings.default_run_id() == expected
    assert dataclasses.replace(settings, concurrency=3).default_run_id() == expected  # how fast is not what


def test_the_task_selection_is_part_of_the_id() -> None:
    whole = rollouts.build_settings("eval", DEFAULT_AGENT, EVALUATION, split="test")
    first20 = rollouts.build_settings("eval", DEFAULT_AGENT, EVALUATION, split="test", limit=20)
    first50 = rollouts.build_settings("eval", DEFAULT_AGENT, EVALUATION, split="test", limit=50)
    assert whole.default_run_id() == "eval-8a7d9486f7"  # 9833c0b gave every --limit this id too
    assert len({whole.default_run_id(), first20.default_run_id(), first50.default_run_id()}) == 3
    assert first20.default_run_id() == "eval-ea2d838619"  # pinned since the selection joined the id
    picked = rollouts.build_settings("eval", "teacher", EVALUATION, split="val", task_ids=["MUL0003", "PMUL0011.json"])
    same = rollouts.build_settings("eval", "teacher", EVALUATION, split="val",
                                   task_ids=["PMUL0011.json", "MUL0003.json", "MUL0003"])
    assert picked.tasks == ("MUL0003.json", "PMUL0011.json")
    assert picked.default_run_id() == same.default_run_id() != rollouts.build_settings(
        "eval", "teacher", EVALUATION, split="val").default_run_id()


def test_config_speaks_the_flags_vocabulary_and_hashes_the_old_one() -> None:
    settings = rollouts.build_settings("harvest", "teacher", dataclasses.replace(HARVEST, **PARITY),
                                       split="val_harvest", user_base_url="http://u")
    config = settings.config()
    assert {"seed_policy": "shared", "credit": "first", "unrewarded": "drop"}.items() <= config["search"].items()
    assert config["user_base_url"] == "http://u" and "extra" not in config
    hashed = runs.identity(config)
    assert {"distinct_seeds": False, "credit_all": False, "keep_unrewarded": False}.items() <= hashed["search"].items()
    assert hashed["extra"] == {"user_base_url": "http://u"} and "concurrency" not in hashed
    # a config recorded before the rename hashes the same
    old = json.loads(json.dumps(config))
    old["search"] |= {"distinct_seeds": False, "credit_all": False, "keep_unrewarded": False}
    for name in ("seed_policy", "credit", "unrewarded"):
        del old["search"][name]
    old["extra"] = {"user_base_url": old.pop("user_base_url")}
    assert runs.identity(old) == hashed
    # ... and so does one recorded before `max_steps` (agent turns) became `max_turns`
    assert config["search"]["max_turns"] == HARVEST.max_turns and "max_steps" not in config["search"]
    old["search"] = {("max_steps" if k == "max_turns" else k): v for k, v in old["search"].items()}
    assert runs.identity(old) == hashed
    # `factory runs show` prints an old record in today's names (a renamed one where the old one was)
    assert runs.named_today(old)["search"] == config["search"]
    assert list(runs.named_today(old)["search"])[:2] == ["beam", "max_turns"]


def test_a_run_recorded_with_the_old_names_resumes_and_is_recorded_with_todays(tmp_path) -> None:
    settings = rollouts.build_settings("eval", "teacher", EVALUATION, split="val", limit=2)
    path = tmp_path / "w.duckdb"
    with Writer(path) as writer:
        run_id, _ = runs.start(writer, settings, None)
        with writer.session() as con:  # as a run recorded before the renames
            recorded = settings.config()
            recorded["search"] = {"max_steps" if k == "max_turns" else k: v for k, v in recorded["search"].items()}
            recorded["search"]["distinct_seeds"] = recorded["search"].pop("seed_policy") == "distinct"
            con.execute("UPDATE runs SET config = ? WHERE run_id = ?", [json.dumps(recorded), run_id])
        assert runs.start(writer, settings, None) == (run_id, set())  # the same id, resumed
    (config,) = query(path, "SELECT config FROM runs")[0]
    assert json.loads(config) == settings.config()


def test_settings_never_start_work(home) -> None:
    """Settings for a model folder that does not exist: built as typed, without looking for the folder, loading a
    model library or writing anything (in a fresh process, so that its imports are its own)."""
    code = textwrap.dedent("""
        import json, sys
        from factory.jobs import rollouts
        from search.josh import EVALUATION
        settings = rollouts.build_settings("eval", "/no/such/folder", EVALUATION, split="test")
        heavy = [m for m in ("torch", "transformers", "vllm", "ray") if m in sys.modules]
        print(json.dumps({"type": type(settings).__name__, "agent": settings.agent, "backend": settings.backend,
                          "run_id": settings.default_run_id(), "imported": heavy}))
    """)
    built = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = rollouts.build_settings("eval", "/no/such/folder", EVALUATION, split="test").default_run_id()
    assert json.loads(built.stdout) == {"type": RunSettings.__name__, "agent": "/no/such/folder",
                                        "backend": "transformers", "run_id": expected, "imported": []}
    assert not home.exists()  # $FACTORY_HOME (models, the remembered MultiWOZ path) untouched


@pytest.mark.slow
def test_the_cli_builds_the_pinned_settings(wh) -> None:
    """`factory eval --agent teacher --split val_boot` on a selection: the id the same settings hash to."""
    result = run("eval", "--agent", "teacher", "--split", "val_boot", "--limit", "2", "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    expected = rollouts.build_settings("eval", "teacher", EVALUATION, split="val_boot", limit=2).default_run_id()
    assert json.loads(result.stdout)["run_id"] == expected
    config = json.loads(query(wh, "SELECT config FROM runs")[0][0])
    assert config["limit"] == 2 and config["search"]["seed_policy"] == "distinct"
    other = run("eval", "--agent", "teacher", "--split", "val_boot", "--limit", "3", "--run", expected, "-w", str(wh))
    assert other.returncode == 2 and "limit differ" in other.stderr


def test_every_table_of_a_rollout_is_replaced_on_retry_and_deleted_with_its_run(tmp_path):
    # A table with a rollout_id that the lists miss would keep a deleted run's rows, or break a retried
    # rollout's commit on its primary key.
    with Writer(str(tmp_path / "w.duckdb")) as writer, writer.session() as con:
        with_rollout = {r[0] for r in con.execute(
            "select table_name from duckdb_columns() where column_name = 'rollout_id' "
            "and database_name = current_database() and not internal").fetchall()}
    views = {r[0] for r in query(tmp_path / "w.duckdb", "select view_name from duckdb_views() where not internal")}
    assert with_rollout - views == {*runs.ROLLOUT_TABLES, "rollouts"}
    replaced = [statement.split()[2] for statement, _ in runs.replace_rollout("r-1")]
    assert replaced == [*runs.ROLLOUT_TABLES, "rollouts"]
