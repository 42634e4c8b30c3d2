"""Model files named by `--agent` / `--model`: GGUF files checked before anything loads, and the chat template a
model is served and trained with when its own cannot render tools.

A GGUF file (`path/to/model.gguf`) loads through transformers' `gguf_file=` with the `gguf` package (the `gguf`
extra), dequantised; `check_gguf` turns what would fail deep inside transformers (no such file, the extra missing,
not a GGUF file, an architecture transformers cannot load) into one line. `tools_template` reads a model's own chat
template cheaply (GGUF metadata, a folder's files, the Hugging Face cache) and returns ChatML with tools
(`train/chatml_tools.jinja`) when that template is ChatML and ignores `tools` (SmolLM2-Instruct's), else None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.errors import first_line
from factory.errors import UserError
from train.chat_templates import tools_template as _tools_template
from train.loading import is_gguf

GGUF_EXTRA = "pip install 'josh-factory[gguf]'"
_NOT_CAUSAL = {"t5", "t5encoder", "umt5"}  # GGUF architectures transformers loads, but not as a causal LM


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (no tensors read). Raises UserError when it is not a GGUF file."""
    try:
        from transformers.integrations.gguf.reader import read_gguf_metadata
    except ImportError:  # an older transformers: the gguf package's reader (slower on big vocabularies)
        return _gguf_reader_metadata(path)
    try:
        metadata, _ = read_gguf_metadata(str(path))
    except Exception as e:  # noqa: BLE001 - bad magic, a truncated file, ...: all mean "not a GGUF file"
        raise UserError(f"{path} is not a readable GGUF file ({first_line(e)}); pass a .gguf model file") from None
    return metadata


def _gguf_reader_metadata(path: Path) -> dict[str, Any]:
    from gguf import GGUFReader

    try:
        fields = GGUFReader(str(path)).fields
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path} is not a readable GGUF file ({first_line(e)}); pass a .gguf model file") from None
    wanted = ("general.architecture", "tokenizer.chat_template")
    return {k: fields[k].contents() for k in wanted if k in fields}


def supported_architectures() -> set[str]:
    """GGUF architectures this transformers loads as a causal LM."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    found = set(GGUF_SUPPORTED_ARCHITECTURES)
    try:
        from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS
    except ImportError:
        pass
    else:
        found |= set(GGUF_ARCHS)
    return found - _NOT_CAUSAL - {"general", "tokenizer"}


def check_gguf(model: str) -> None:
    """UserError unless `model` is a GGUF file transformers can load here (the `gguf` package installed)."""
    path = Path(model).expanduser()
    if not path.exists():
        raise UserError(f"no GGUF file at {model}; pass an existing .gguf file (`make smollm2` fetches "
                        "SmolLM2-135M-Instruct, see docs/models.md)")
    if not path.is_file():
        raise UserError(f"{model} is a folder, not a GGUF file; pass the .gguf file inside it")
    from transformers.utils.import_utils import is_gguf_available

    if not is_gguf_available():
        raise UserError(f"loading a GGUF file needs the gguf package (0.10 or later): {GGUF_EXTRA}")
    architecture = gguf_metadata(path).get("general.architecture")
    supported = supported_architectures()
    if architecture not in supported:
        from transformers import __version__

        raise UserError(f"{model}: transformers {__version__} cannot load GGUF architecture {architecture!r} as a "
                        f"causal LM (it loads {', '.join(sorted(supported))}); convert the model to a folder")


def own_template(model: str) -> str | None:
    """The chat template `model` ships with (GGUF metadata, a folder's files, or a Hub id's cached files), or None
    where there is none or it cannot be read without loading the tokenizer."""
    path = Path(model).expanduser()
    if is_gguf(model):
        value = gguf_metadata(path).get("tokenizer.chat_template")
        return value if isinstance(value, str) else None
    if path.is_dir():
        files = {name: path / name for name in ("chat_template.jinja", "tokenizer_config.json")}
    else:
        files = _cached(model)
    if (jinja := files.get("chat_template.jinja")) and jinja.is_file():
        return jinja.read_text()
    if (config := files.get("tokenizer_config.json")) and config.is_file():
        try:
            value = json.loads(config.read_text()).get("chat_template")
        except (ValueError, AttributeError):
            return None
        if isinstance(value, list):  # named templates: the default one serves chat
            value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"),
                         None)
        return value if isinstance(value, str) else None
    return None


def _cached(model: str) -> dict[str, Path]:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    found = {}
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        try:
            hit = try_to_load_from_cache(model, name)
        except HFValidationError:
            return {}
        if isinstance(hit, str):
            found[name] = Path(hit)
    return found


def tools_template(model: str) -> str | None:
    """ChatML with tools for a model whose own template is ChatML and ignores `tools`; None to keep its own."""
    return _tools_template(own_template(model))
