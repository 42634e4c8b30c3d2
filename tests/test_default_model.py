"""The default agent is resolved before any run settings exist: bootstrapped once, never used untrained."""

from __future__ import annotations

import json
import shutil

import pytest

from factory import default_model
from factory.errors import UserError
from factory.output import err
from factory.training import check_model, resolve_model


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_location_is_under_factory_home(home):
    assert default_model.location() == home / "models" / "tiny-toolwoz"


def test_an_untrained_default_model_is_bootstrapped_not_used(home, model_dir, monkeypatch):
    """`factory model init` leaves an untrained model where the default lives: the first eval bootstraps it."""
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
