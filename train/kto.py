"""KTO: learn from single turns labelled desirable or undesirable (view `kto`: `prompt`, `completion`,
`label`, `tools`).

Desirable turns are the golden path's assistant messages; undesirable ones are failed siblings at the
same prompt. Unpaired, so the view may hold far more of one kind than the other; `desirable_weight` and
`undesirable_weight` rebalance (the reference used 1.0 / 2.71). TRL estimates KTO's KL term from the other
completions of a batch, hence a per-device batch of at least 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from train.loading import initial_model, load_tokenizer, reference_model, save_trained
from train.recipes import (Recipe, TrainInputError, check, check_rows_left, lora_config, quantization_config,
                           summary, training_args)


def kto_config(recipe: Recipe, out: str | Path, seed: int = 0) -> Any:
    """TRL's KTOConfig for `recipe` (beta and the two class weights), CPU-safe precision."""
    from trl import KTOConfig

    return KTOConfig(**training_args(recipe, str(out), seed, KTOConfig))


def train_kto(dataset: Any, model: str, out: str | Path, recipe: Recipe, *, seed: int = 0,
              chat_template: str | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """KTO-tune `model` (folder, Hub id or GGUF file) on `dataset`, save model and tokenizer to `out`; returns
    steps, losses and speed. The reference model is a frozen copy of `model` (with LoRA: the adapter switched off)."""
    from transformers import PrinterCallback
    from trl import KTOTrainer

    check(recipe)
    if len(dataset) < recipe.per_device_train_batch_size:
        raise TrainInputError(f"the KTO dataset has {len(dataset)} rows, fewer than one batch of "
                              f"{recipe.per_device_train_batch_size}; harvest more or lower "
                              "--per-device-train-batch-size (at least 2)")
    tokenizer = load_tokenizer(model, chat_template)
    # TRL's KTO reads rows in order (its KL term pairs neighbours within a batch) and never reshuffles; the
    # view groups rows, so shuffle once to mix desirable and undesirable turns across batches.
    dataset = dataset.shuffle(seed=seed)
    policy = initial_model(model, recipe)
    trainer = KTOTrainer(model=policy, ref_model=reference_model(policy, recipe), args=kto_config(recipe, out, seed),
                         train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(recipe),
                         quantization_config=quantization_config(recipe), callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout; callers show progress their way
    check_rows_left(trainer)
    result = trainer.train()
    save_trained(trainer, out, model, recipe.wise_ft)
    tokenizer.save_pretrained(str(out))
    return summary(trainer, result.metrics)
