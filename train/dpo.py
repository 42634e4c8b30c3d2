"""DPO: prefer the golden turn over a failed sibling's turn at the same prompt (view `dpo`: `prompt`,
`chosen`, `rejected`, `tools`).

A turn is the agent's messages up to the user's reply (assistant text, tool calls and tool results), so
tool results inside `chosen` / `rejected` are scored too; they come from the same tools the agent called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from train.loading import initial_model, load_tokenizer, reference_model, save_trained
from train.recipes import (Recipe, TrainInputError, check, check_rows_left, lora_config, quantization_config,
                           summary, training_args)


def dpo_config(recipe: Recipe, out: str | Path, seed: int = 0) -> Any:
    """TRL's DPOConfig for `recipe` (beta, sigmoid loss), CPU-safe precision."""
    from trl import DPOConfig

    return DPOConfig(**training_args(recipe, str(out), seed, DPOConfig))


def train_dpo(dataset: Any, model: str, out: str | Path, recipe: Recipe, *, seed: int = 0,
              chat_template: str | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """DPO-tune `model` (folder, Hub id or GGUF file) on `dataset`, save model and tokenizer to `out`; returns
    steps, losses and speed. The reference model is a frozen copy of `model` (with LoRA: the adapter switched off)."""
    from transformers import PrinterCallback
    from trl import DPOTrainer

    check(recipe)
    if len(dataset) == 0:
        raise TrainInputError("the DPO dataset has no rows")
    tokenizer = load_tokenizer(model, chat_template)
    policy = initial_model(model, recipe)
    trainer = DPOTrainer(model=policy, ref_model=reference_model(policy, recipe), args=dpo_config(recipe, out, seed),
                         train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(recipe),
                         quantization_config=quantization_config(recipe), callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout; callers show progress their way
    check_rows_left(trainer)
    result = trainer.train()
    save_trained(trainer, out, model, recipe.wise_ft)
    tokenizer.save_pretrained(str(out))
    return summary(trainer, result.metrics)
