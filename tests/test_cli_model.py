"""`factory model init` end to end."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import MULTIWOZ_DIR, one_line_error, run


@pytest.mark.slow
def test_model_init_writes_a_loadable_model_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "tiny"
    result = run("model", "init", "--out", str(out), "--multiwoz", str(MULTIWOZ_DIR))
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "factory_model.json").read_text())
    assert info["params"] > 500_000
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size >= len(tok) > 1000
    again = run("model", "init", "--out", str(out), "--multiwoz", str(MULTIWOZ_DIR))
    assert again.returncode == 2
    assert "--force" in one_line_error(again)
