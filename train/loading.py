"""What a training starts from: a model folder, a Hub id, or a GGUF file (`path/to/model.gguf`).

Folders and Hub ids are handed to TRL by name (it loads them with the recipe's dtype and quantization). A GGUF file
is loaded here, through transformers' `gguf_file=` (the `gguf` package, the `gguf` extra): tokenizer and weights
from the one file, every tensor dequantised to float32, the GGUF quantizer then detached, so the model trains and
saves as an ordinary one (`save_pretrained` writes safetensors: the M1 of a GGUF M0 is a plain folder; a LoRA
adapter trained on it is merged in before saving, since an adapter folder names a base that transformers reloads
by name, and a GGUF file's model has none).
`search/backends/transformers.py` loads GGUF files the same way (search/ and train/ import neither).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from common.errors import first_line
from train.errors import TrainInputError
from train.recipes import Recipe


def is_gguf(model: str) -> bool:
    return model.lower().endswith(".gguf")


def _gguf_kwargs(model: str) -> tuple[str, dict[str, Any]]:
    path = Path(model).expanduser()
    return str(path.parent), {"gguf_file": path.name}


def load_tokenizer(model: str, chat_template: str | None = None) -> Any:
    """The model's tokenizer (folder, Hub id or GGUF file), optionally with another chat template."""
    from transformers import AutoTokenizer

    where, kwargs = _gguf_kwargs(model) if is_gguf(model) else (model, {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError, ImportError, KeyError) as e:
        raise TrainInputError(f"cannot load a tokenizer from {model!r} ({first_line(e)}); pass a model folder, "
                              "Hub id or GGUF file") from None
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def initial_model(model: str, recipe: Recipe) -> Any:
    """What to hand the trainer as its model: the name of a folder / Hub id, or a GGUF file's model, loaded."""
    if not is_gguf(model):
        return model
    if recipe.load_in_4bit:
        raise TrainInputError(f"--recipe {recipe.name} loads the model in 4 bits, which a GGUF file cannot be "
                              "(it loads dequantised); use --recipe cpu, with --lora for an adapter")
    return load_gguf_model(model)


def reference_model(model: Any, recipe: Recipe) -> Any:
    """KTO/DPO's frozen reference for a model loaded here (TRL would reload it by the name in its config, which a
    GGUF file's model has not got); None where TRL makes its own (a name, or LoRA: the adapter switched off)."""
    if isinstance(model, str) or recipe.lora is not None:
        return None
    return copy.deepcopy(model).eval()


def load_gguf_model(model: str) -> Any:
    """A GGUF file's causal LM, dequantised to float32, as a plain (trainable, savable) model."""
    import torch
    from transformers import AutoModelForCausalLM

    where, kwargs = _gguf_kwargs(model)
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers before 5.x has no packed GGUF weights: it always dequantises
        pass
    else:
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    except Exception as e:  # noqa: BLE001 - a corrupt file or an unsupported architecture: one line, not a trace
        why = first_line(e, with_type=True)
        raise TrainInputError(f"cannot load a causal LM from {model!r} ({why})") from None
    quantizer = getattr(loaded, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(loaded)  # every weight is dense already: nothing is lost
    return loaded


def start_weights(trainer: Any, model: str) -> Any:
    """The model a training started from, for `train.wise_ft`: KTO's and DPO's frozen reference when the trainer
    holds one (it is that model, already in memory), else `model` loaded once more on the CPU in float32."""
    import torch
    from transformers import AutoModelForCausalLM

    if getattr(trainer, "ref_model", None) is not None:
        return trainer.accelerator.unwrap_model(trainer.ref_model)
    if is_gguf(model):
        return load_gguf_model(model)
    return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)


def save_trained(trainer: Any, out: str | Path, model: str, wise_ft: float = 1.0) -> None:
    """Save the trained model to `out` as TRL does (with LoRA: the adapter alone), except that an adapter on a GGUF
    file's model is merged into it and the whole model saved. `wise_ft` < 1 first averages the weights with those
    of `model`, the start (`train.wise_ft`)."""
    from peft import PeftModel

    from train.wise_ft import average_with_start

    trained = trainer.accelerator.unwrap_model(trainer.model)
    average_with_start(trained, lambda: start_weights(trainer, model), wise_ft)
    if is_gguf(model) and isinstance(trained, PeftModel):
        trained.merge_and_unload().save_pretrained(str(out))
    else:
        trainer.save_model(str(out))
