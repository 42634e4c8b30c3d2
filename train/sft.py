"""SFT: supervised fine-tuning on whole successful conversations (view `sft`: `messages`, `tools`).

The loss covers every token (`Recipe.loss = "all"`, the reference's choice) or only the assistant's tokens
(`"assistant"`: its text, its tool calls and its end token; system prompt, user turns and tool results are
context). For the latter TRL finds those tokens through `{% generation %}` markers in the chat template, so
a template without them is fixed (TRL's patched copy of a known template) or refused here, before any model
is loaded. `"calls"` covers the turns JOSH's reward grades: the assistant's tool-call turns, with the user turns
and tool results as `"all"` has them; the assistant's free-text turns are context. A golden path keeps whatever
the agent said at the harvest's temperature, often garbled, since only its calls were checked (dev set: 175
golden paths gave 0.413 with `"all"`, 0.448 with `"calls"`; M0 0.433). Rows longer than `max_length` are cut; a
cut row with no trainable token left is dropped.

TRL pads a batch on the right. A causal model's real tokens never attend to the pads after them, so the batch
needs no attention mask: without one the attention kernel runs causal and skips the blocks above the diagonal
instead of reading a (batch, length, length) mask (`causal_batches`). The trained weights are the same bit for
bit (tests/test_train.py); an SFT step of the loop's M1 took 0.650 s instead of 0.717 s on 2 CPU cores.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from train.loading import initial_model, load_tokenizer, save_trained
from train.recipes import (Recipe, TrainInputError, check, check_rows_left, lora_config, quantization_config,
                           summary, training_args)


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


def graded(message: dict[str, Any]) -> bool:
    """Whether `--loss calls` trains on `message`: a user turn, a tool result or an assistant turn with a call."""
    if message["role"] == "assistant":
        return bool(message.get("tool_calls"))
    return message["role"] in ("user", "tool")


def calls_example(tokenizer: Any, messages: list[dict[str, Any]], tools: Any) -> dict[str, list[int]]:
    """One conversation as TRL's processed columns: `input_ids`, and `assistant_masks` (TRL's loss mask) set on
    the tokens of the messages `graded` keeps. A message's tokens are found by rendering the conversation up to
    it and up to the next one, so the template must render each prefix as a prefix of the whole."""
    if not getattr(tokenizer, "is_fast", False):
        raise TrainInputError("--loss calls needs a fast (Rust) tokenizer, for token offsets")
    tools = json.loads(tools) if isinstance(tools, str) else tools

    def render(n: int) -> str:
        return tokenizer.apply_chat_template(messages[:n], tools=tools, tokenize=False)

    text = render(len(messages))
    # The system turn (with the tools) is context; without one, a header the template puts first trains too.
    first = 1 if messages and messages[0]["role"] == "system" else 0
    spans, start = [], render(first) if first else ""
    for i in range(first, len(messages)):
        end = render(i + 1)
        if not text.startswith(end) or not end.startswith(start):
            raise TrainInputError("--loss calls needs a chat template that renders the start of a conversation as "
                                  "the start of the whole; use --loss all or assistant with this model")
        if graded(messages[i]):
            spans.append((len(start), len(end)))
        start = end
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= offset < b for a, b in spans)) for offset, _ in encoded["offset_mapping"]]
    return {"input_ids": encoded["input_ids"], "assistant_masks": mask}


def sft_config(recipe: Recipe, out: str | Path, seed: int = 0) -> Any:
    """TRL's SFTConfig for `recipe`: loss on `recipe.loss`'s tokens, no packing, CPU-safe precision."""
    from trl import SFTConfig

    # "calls" hands TRL processed rows whose `assistant_masks` it turns into labels (`calls_example`).
    return SFTConfig(**training_args(recipe, str(out), seed, SFTConfig),
                     assistant_only_loss=recipe.loss == "assistant", packing=False)


def causal_batches(collate: Callable[[list[Any]], dict[str, Any]]) -> Callable[[list[Any]], dict[str, Any]]:
    """TRL's collator with the attention mask of its right-padded batches swapped for position ids (0, 1, ...):
    the pads' outputs differ, the real tokens' do not, and the loss never reads the pads (their label is -100)."""
    import functools

    import torch

    @functools.wraps(collate)  # `__wrapped__`: TRL's collator
    def collate_causal(features: list[Any]) -> dict[str, Any]:
        batch = collate(features)
        if "attention_mask" not in batch or "position_ids" in batch:  # padding-free or packed: TRL's own
            return batch
        del batch["attention_mask"]
        ids = batch["input_ids"]
        batch["position_ids"] = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        return batch

    return collate_causal


def _text_causal_lm(model: Any) -> bool:
    """Whether a batch's pads can go unmasked: a text causal LM without a router (an MoE's auxiliary loss counts
    the tokens the mask keeps)."""
    config = model.config
    return type(model).__name__.endswith("ForCausalLM") and config.get_text_config() is config and \
        not hasattr(config, "output_router_logits")


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
    if recipe.loss == "calls":
        dataset = dataset.map(lambda row: calls_example(tokenizer, row["messages"], row["tools"]),
                              remove_columns=dataset.column_names)
    trainer = SFTTrainer(model=initial_model(model, recipe), args=sft_config(recipe, out, seed),
                         train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(recipe),
                         quantization_config=quantization_config(recipe), callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # it prints log dicts to stdout; callers show progress their way
    if _text_causal_lm(trainer.model):
        trainer.data_collator = causal_batches(trainer.data_collator)
    return trainer


def train_sft(dataset: Any, model: str, out: str | Path, recipe: Recipe, *, seed: int = 0,
              chat_template: str | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Fine-tune `model` on `dataset`, save model and tokenizer to `out`; returns steps, losses and speed.
    With `recipe.lora` only the adapter is saved (transformers loads such a folder as base + adapter), except on a
    GGUF file, whose adapter is merged in (`loading.save_trained`)."""
    trainer = sft_trainer(dataset, model, out, recipe, seed=seed, chat_template=chat_template, callbacks=callbacks)
    check_rows_left(trainer)
    result = trainer.train()
    save_trained(trainer, out, model, recipe.wise_ft)
    trainer.processing_class.save_pretrained(str(out))
    return summary(trainer, result.metrics)
