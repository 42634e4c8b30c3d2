"""The default agent is resolved before any run settings exist: bootstrapped once, never used untrained."""

from __future__ import annotations

import json
import shutil

import pytest

from factory.errors import UserError
from factory.jobs import default_model
from factory.jobs.training import check_model, resolve_model
from factory.output import err
from factory.store.folders import staging_dir


def test_location_is_under_factory_home(home):
    assert default_model.location() == home / "models" / "tiny-toolwoz"


def test_an_untrained_default_model_is_bootstrapped_not_used(home, model_dir, tmp_path, monkeypatch):
    """`factory model init` leaves an untrained model where the default lives: the first eval bootstraps it
    (when the package ships no M0 of today's budget)."""
    monkeypatch.setattr(default_model, "SHIPPED", tmp_path / "no-shipped-m0")
    shutil.copytree(model_dir, default_model.location())
    assert not default_model.is_bootstrapped(default_model.location())
    calls = []
    monkeypatch.setattr(default_model, "bootstrap", lambda out, *args: calls.append(out))
    agent = default_model.resolve_agent(None, multiwoz_path=None, warehouse_path="w.duckdb", console=err)
    assert agent == str(default_model.location()) and calls == [default_model.location()]


def test_a_bootstrapped_default_model_is_used_as_it_is(home, model_dir, monkeypatch):
    shutil.copytree(model_dir, default_model.location())
    info = default_model.location() / "factory_model.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "bootstrap": {"steps": 600}}))
    monkeypatch.setattr(default_model, "bootstrap", lambda *args: pytest.fail("bootstrapped again"))
    assert default_model.resolve_agent(None, multiwoz_path=None, warehouse_path="w.duckdb", console=err) == \
        str(default_model.location())
    assert default_model.require() == str(default_model.location())


def test_a_given_agent_is_kept_as_typed_and_checked(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(model_dir.parent)
    assert default_model.resolve_agent(model_dir.name, multiwoz_path=None, warehouse_path="w", console=err) == \
        model_dir.name  # relative, as given: the run id hashes what the user typed
    assert resolve_model(model_dir.name) == str(model_dir)  # training and the loop record the absolute folder
    for agent in ("teacher", "openai:gpt"):
        assert default_model.resolve_agent(agent, multiwoz_path=None, warehouse_path="w", console=err) == agent
    with pytest.raises(UserError, match="no model folder at"):
        default_model.resolve_agent(str(tmp_path / "nope"), multiwoz_path=None, warehouse_path="w", console=err)
    with pytest.raises(UserError, match="no default model"):
        monkeypatch.setenv("FACTORY_HOME", str(tmp_path / "empty-home"))
        default_model.require()


def test_a_mistyped_hub_id_fails_at_once(monkeypatch):
    """No ~50 s of Hub retries: a name that is no folder and not cached is asked about once, or not at all."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        check_model("modls/m1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UserError, match="cannot be reached|has no model"):
        check_model("modls/m1")
    with pytest.raises(UserError, match="not a Hub id|no model folder"):
        check_model("bad name!")


def _as_shipped(model_dir, folder, budget) -> None:
    """`folder` made to look like a shipped M0 bootstrapped with `budget`."""
    shutil.copytree(model_dir, folder)
    info = folder / "factory_model.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "bootstrap": {"budget": budget, "steps": 2}}))


def test_the_shipped_m0_is_installed_when_its_budget_is_todays(home, model_dir, tmp_path, monkeypatch):
    import dataclasses

    from factory.jobs.bootstrap import BUDGET

    _as_shipped(model_dir, tmp_path / "m0", dataclasses.asdict(BUDGET))
    monkeypatch.setattr(default_model, "SHIPPED", tmp_path / "m0")
    monkeypatch.setattr(default_model, "bootstrap", lambda *args: pytest.fail("bootstrapped instead"))
    agent = default_model.resolve_agent(None, multiwoz_path=None, warehouse_path="w.duckdb", console=err)
    assert agent == str(default_model.location()) and default_model.is_bootstrapped(default_model.location())
    assert (default_model.location() / "model.safetensors").read_bytes() == \
        (tmp_path / "m0" / "model.safetensors").read_bytes()
    assert not default_model.location().with_name("tiny-toolwoz-staging").exists()
    assert not staging_dir(default_model.location()).exists()


def test_a_shipped_m0_of_another_budget_is_not_used(home, model_dir, tmp_path, monkeypatch):
    import dataclasses

    from factory.jobs.bootstrap import BUDGET

    _as_shipped(model_dir, tmp_path / "m0", dataclasses.asdict(dataclasses.replace(BUDGET, steps=7)))
    monkeypatch.setattr(default_model, "SHIPPED", tmp_path / "m0")
    calls = []
    monkeypatch.setattr(default_model, "bootstrap", lambda out, *args: calls.append(out))
    default_model.resolve_agent(None, multiwoz_path=None, warehouse_path="w.duckdb", console=err)
    assert calls == [default_model.location()]


def test_the_package_ships_the_m0_of_todays_budget():
    """factory/m0 is what `make m0` (`factory model bootstrap`) made with the budget in factory/jobs/bootstrap.py."""
    import dataclasses

    from transformers import AutoConfig, AutoTokenizer

    from factory.jobs.bootstrap import BUDGET
    from train.tiny_model import DEFAULT_RESULTS, DEFAULT_VOCAB

    assert default_model.shipped() == default_model.SHIPPED, "factory/m0 is missing or stale: run `make m0`"
    record = json.loads((default_model.SHIPPED / "factory_model.json").read_text())["bootstrap"]
    assert record["budget"] == dataclasses.asdict(BUDGET)
    assert record["steps"] == BUDGET.steps and record["rows"] >= 390 and record["teacher_success_rate"] > 0.99
    assert record["ran_on"]["device"]
    config = AutoConfig.from_pretrained(default_model.SHIPPED)
    assert config.vocab_size == DEFAULT_VOCAB and config.factory_results == DEFAULT_RESULTS
    assert len(AutoTokenizer.from_pretrained(default_model.SHIPPED)) == DEFAULT_VOCAB
    assert default_model.model_results(str(default_model.SHIPPED)) == "compact"


def test_results_default_to_the_models_preference(model_dir, tmp_path):
    assert default_model.model_results(str(model_dir)) == "compact"  # build_model writes factory_results
    assert default_model.model_results(f"vllm:{model_dir}") == "compact"
    for agent in ("teacher", "openai:gpt", "Qwen/Qwen3-0.6B", str(tmp_path)):
        assert default_model.model_results(agent) == "full"
    assert default_model.resolve_results(str(model_dir), None, "fixed") == "compact"
    assert default_model.resolve_results(str(model_dir), "full", "fixed") == "full"
    assert default_model.resolve_results(str(model_dir), None, "parity") == "full"
    with pytest.raises(UserError, match="--semantics parity"):
        default_model.resolve_results("teacher", "compact", "parity")


def test_model_bootstrap_installs_the_shipped_m0_into_the_default_folder(home, tmp_path):
    from tests.conftest import run

    env = {"FACTORY_HOME": str(home)}
    first = run("model", "bootstrap", "-w", str(tmp_path / "w.duckdb"), env=env)
    assert first.returncode == 0, first.stderr
    assert "installed the M0 shipped with josh-factory" in first.stderr
    folder = home / "models" / "tiny-toolwoz"
    assert (folder / "model.safetensors").read_bytes() == (default_model.SHIPPED / "model.safetensors").read_bytes()
    again = run("model", "bootstrap", "-w", str(tmp_path / "w.duckdb"), env=env)
    assert again.returncode == 0 and "bootstrapped already" in again.stderr
    assert not (tmp_path / "w.duckdb").exists()  # nothing was run
