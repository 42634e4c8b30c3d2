"""SFT: supervised fine-tuning on whole successful conversations (view `sft`: `messages`, `tools`).

The loss covers every token (`Recipe.loss = "all"`, the reference's choice) or only the assistant's tokens
(`"assistant"`: its text, its tool calls and its end token; system prompt, user turns and tool results are
context). For the latter TRL finds those tokens through `{% generation %}` markers in the chat template, so
a template without them is fixed (TRL's patched copy of a known template) or refused here, before any model
is loaded. Rows longer than `max_length` are cut; a cut row with no trainable token left is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from train.loading import initial_model, load_tokenizer, save_trained
from train.recipes import Recipe, TrainInputError, check, lora_config, quantization_config, summary, training_args


def training_template(tokenizer: Any, model: str) -> str | None:
    """The chat template TRL will train with: None for the tokenizer's own (it has `{% generation %}`
    markers), else TRL's training copy of a known template. Raises TrainInputError naming the fix."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    fix = ("pass --chat-template FILE: a copy of the template with each assistant turn, end-of-turn token "
           "included, inside {% generation %}...{% endgeneration %}")
    if not tokenizer.chat_template:
        raise TrainInputError(f"the tokenizer of {model} has no chat template; {fix}")
    if has_generation_markers(tokenizer.chat_template):
        return None
    try:
        return get_training_chat_template(tokenizer)
    except ValueError:
        raise TrainInputError(f"the chat template of {model} has no {{% generation %}} markers and TRL has no "
                              f"training version of it, so the assistant's tokens cannot be found; {fix}") from None


def sft_config(recipe: Recipe, out: str | Path, seed: int = 0) -> Any:
    """TRL's SFTConfig for `recipe`: loss on `recipe.loss`'s tokens, no packing, CPU-safe precision."""
    from trl import SFTConfig

    return SFTConfig(**training_args(recipe, str(out), seed), assistant_only_loss=recipe.loss == "assistant",
                     max_length=recipe.max_length, packing=False)


def sft_trainer(dataset: Any, model: str, out: str | Path, recipe: Recipe, *, seed: int = 0,
                chat_template: str | None = None, callbacks: Sequence[Any] = ()) -> Any:
    """An SFTTrainer for `model` (folder, Hub id or GGUF file) on `dataset` (`messages`, `tools`), ready to train."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    check(recipe)
    if len(dataset) == 0:
        raise TrainInputError("the SFT dataset has no rows")
    tokenizer = load_tokenizer(model, chat_template)
    if recipe.loss == "assistant":
        training_template(tokenizer, model)  # fail here, with the fix, rather than deep inside TRL
    trainer = SFTTrainer(model=initial_model(model, recipe), args=sft_config(recipe, out, seed),
                         train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(recipe),
                         quantization_config=quantization_config(recipe), callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout; callers show progress their way
    return trainer


def train_sft(dataset: Any, model: str, out: str | Path, recipe: Recipe, *, seed: int = 0,
              chat_template: str | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Fine-tune `model` on `dataset`, save model and tokenizer to `out`; returns steps, losses and speed.
    With `recipe.lora` only the adapter is saved (transformers loads such a folder as base + adapter), except on a
    GGUF file, whose adapter is merged in (`loading.save_trained`)."""
    trainer = sft_trainer(dataset, model, out, recipe, seed=seed, chat_template=chat_template, callbacks=callbacks)
    result = trainer.train()
    save_trained(trainer, out, model)
    trainer.processing_class.save_pretrained(str(out))
    return summary(trainer, result.metrics)
