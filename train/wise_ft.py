"""WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): the saved model is a weighted average
of the fine-tuned weights and the start model's, `(1 - alpha) * start + alpha * trained`; alpha 1 keeps the
fine-tune as it is.

Why here: a short SFT of the tiny M0 on its own rollouts moves its greedy behaviour by more than the data can
justify (dev set, the last 196 `val_harvest` tasks, M0 0.416: 3 epochs on 454 golden paths of a synth harvest gave
0.264, the average of that model and M0 0.453). Averaging keeps what the fine-tune learnt in the direction it
moved and undoes most of the drift. With LoRA the adapter's delta is `B @ A * scale`, linear in B, so scaling each
`lora_B` by alpha is the same average without loading the start model again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from train.recipes import TrainInputError


def average_with_start(trained: Any, load_start: Callable[[], Any], alpha: float) -> None:
    """Move `trained` (a model, or a peft model with LoRA adapters) in place to `(1 - alpha) * start + alpha *
    trained`; `load_start()` returns the model it was fine-tuned from (called only without LoRA)."""
    import torch
    from peft import PeftModel

    if alpha == 1:
        return
    with torch.no_grad():
        if isinstance(trained, PeftModel):
            for name, param in trained.named_parameters():
                if "lora_B" in name:
                    param.mul_(alpha)
            return
        start_params = dict(load_start().named_parameters())
        # named_parameters() lists a tied weight once, so no tensor is averaged twice.
        for name, param in trained.named_parameters():
            if name not in start_params or start_params[name].shape != param.shape:
                raise TrainInputError(f"cannot average with the start model: it has no weight {name} of shape "
                                      f"{tuple(param.shape)}; train again without --wise-ft")
            param.lerp_(start_params[name].to(device=param.device, dtype=param.dtype), 1 - alpha)
