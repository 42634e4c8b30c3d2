"""Training recipes: the hyper-parameters of `factory train --recipe cpu|paper`, one frozen dataclass each.

`cpu` (the default) is sized for the tiny local model on a 2-core machine: a few minutes, float32.
`paper` is the reference's recipe (reference-behaviour.md §7: 4-bit QLoRA on an 8B model) for GPU users;
on a machine without CUDA its configs are built and checked, and training stops with a one-line error.
Command-line options override single fields with `dataclasses.replace`; a field TRL has carries TRL's name, and so
does its flag (`learning_rate`, `--learning-rate`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from train.errors import NoRowsLeft, TrainInputError

GPU_EXTRA_HINT = "pip install 'josh-factory[gpu]' (bitsandbytes) on a CUDA machine"
LOSSES = ("all", "assistant", "calls")  # sft: which tokens the loss covers (train/sft.py)


@dataclass(frozen=True)
class Lora:
    """LoRA adapter settings (peft.LoraConfig)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Everything a trainer needs besides the data, the model and the output folder.

    Fields TRL has carry TRL's names and meaning and reach its config class by name (`trl_args`); the first group
    is ours: TRL has no field for it.
    """

    # -- ours ------------------------------------------------------------------------------------------------
    name: str  # the recipe: cpu | paper
    method: str  # sft | kto | dpo
    lora: Lora | None = None  # None = full fine-tuning (peft.LoraConfig, passed to the trainer)
    load_in_4bit: bool = False  # QLoRA: needs CUDA and bitsandbytes (a BitsAndBytesConfig for the trainer)
    loss: str = "all"  # sft: "all" tokens (the reference), the "assistant"'s only, or the "calls" JOSH grades
    wise_ft: float = 1.0  # the saved weights: (1 - wise_ft) * start + wise_ft * trained (train/wise_ft.py)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes recorded in factory.json
    # -- TRL's TrainingArguments (SFTConfig, KTOConfig and DPOConfig all have them) ---------------------------
    learning_rate: float
    num_train_epochs: float = 1.0
    max_steps: int = -1  # optimizer steps; > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0.0  # < 1: a ratio of the steps; >= 1: a number of steps
    weight_decay: float = 0.0
    optim: str = "adamw_torch"
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    # -- TRL's method configs (each config takes those it has) -----------------------------------------------
    max_length: int | None = 2048  # sft, kto, dpo
    beta: float = 0.1  # kto, dpo: how far the policy may move from the reference model
    desirable_weight: float = 1.0  # kto
    undesirable_weight: float = 1.0  # kto


OURS = ("name", "method", "lora", "load_in_4bit", "loss", "wise_ft", "extra")  # Recipe's fields TRL lacks
# factory.json files written before Recipe took TRL's names recorded these fields under our own (`upgrade`).
OLD_NAMES = {"epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
             "grad_accum": "gradient_accumulation_steps", "lr_scheduler": "lr_scheduler_type",
             "warmup": "warmup_steps"}


_PAPER_LORA = Lora(r=64, alpha=64, dropout=0.05,
                   target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))

RECIPES: dict[str, dict[str, Recipe]] = {
    "cpu": {
        # The tiny model (trained from scratch, then fine-tuned) needs a far higher rate than
        # TRL's 2e-5 (meant for nudging a pretrained 8B model). Measured (4.2M model) on 100 conversations, 3 epochs
        # = 75 steps of 4: final loss 1.55 at 1e-3, 2.35 at 5e-4, 4.31 at 2e-4 (from 8.33), no spikes.
        # Loss on every token, as the reference: user turns and tool results teach the tiny model the values it
        # must copy into calls. Measured on the bootstrap (600 steps, dev = last 100 val_harvest tasks):
        # Average Reward 0.113 with it, 0.020 with the assistant's tokens only.
        "sft": Recipe(name="cpu", method="sft", learning_rate=1e-3, num_train_epochs=3, per_device_train_batch_size=4,
                      warmup_steps=0.05),
        # Preference tuning starts from an SFT'd model and should stay near its reference: 20x below SFT
        # (a choice, not a measured optimum).
        # Batch 4 >= 2: TRL's KTO estimates its KL term from the other completions in the batch.
        "kto": Recipe(name="cpu", method="kto", learning_rate=5e-5, num_train_epochs=1, per_device_train_batch_size=4,
                      beta=0.1, desirable_weight=1.0, undesirable_weight=1.0),
        "dpo": Recipe(name="cpu", method="dpo", learning_rate=5e-5, num_train_epochs=1, per_device_train_batch_size=4,
                      beta=0.1),
    },
    "paper": {
        # §7.1: 4-bit NF4 Llama-3-8B-Instruct + LoRA r64/a64/0.05 on every projection; 3 epochs, batch 1 x 16,
        # lr 2e-5, linear schedule, 5 warm-up steps, weight decay 0.01, 8-bit AdamW, gradient checkpointing.
        "sft": Recipe(name="paper", method="sft", lora=_PAPER_LORA, load_in_4bit=True, learning_rate=2e-5,
                      num_train_epochs=3, per_device_train_batch_size=1, gradient_accumulation_steps=16,
                      warmup_steps=5, weight_decay=0.01, optim="adamw_bnb_8bit", gradient_checkpointing=True,
                      logging_steps=10, max_length=None),
        # §7.2 with the spec's batch 2 x 8 (TRL's KTO needs a per-device batch > 1; the reference ran 1 x 16):
        # beta 0.1, desirable 1.0, undesirable 2.71, lr 5e-7, cosine, warm-up ratio 0.1, 1 epoch, max length 5256.
        "kto": Recipe(name="paper", method="kto", lora=_PAPER_LORA, load_in_4bit=True, learning_rate=5e-7,
                      num_train_epochs=1, per_device_train_batch_size=2, gradient_accumulation_steps=8,
                      lr_scheduler_type="cosine", warmup_steps=0.1, optim="adamw_bnb_8bit",
                      gradient_checkpointing=True, logging_steps=10, max_length=5256, beta=0.1, desirable_weight=1.0,
                      undesirable_weight=2.71),
        # The reference has no DPO recipe: KTO's settings (same beta, rate, schedule and batch) are the closest.
        "dpo": Recipe(name="paper", method="dpo", lora=_PAPER_LORA, load_in_4bit=True,
                      extra={"note": "no DPO recipe in the reference; KTO's settings"}, learning_rate=5e-7,
                      num_train_epochs=1, per_device_train_batch_size=2, gradient_accumulation_steps=8,
                      lr_scheduler_type="cosine", warmup_steps=0.1, optim="adamw_bnb_8bit",
                      gradient_checkpointing=True, logging_steps=10, max_length=5256, beta=0.1),
    },
}


def get(name: str, method: str) -> Recipe:
    """The recipe `name` for `method`; raises TrainInputError listing the choices."""
    if name not in RECIPES or method not in RECIPES[name]:
        raise TrainInputError(f"no recipe {name!r} for {method}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name][method]


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check(recipe: Recipe) -> None:
    """Refuse settings that cannot run here, before any model is loaded."""
    if recipe.loss not in LOSSES:
        raise TrainInputError(f"loss must be one of {', '.join(LOSSES)}, not {recipe.loss!r}")
    if not 0 < recipe.wise_ft <= 1:
        raise TrainInputError(f"--wise-ft must be in (0, 1] (the fine-tune's share of the weights), not "
                              f"{recipe.wise_ft}")
    if recipe.method == "kto" and recipe.per_device_train_batch_size < 2:
        raise TrainInputError(f"KTO needs a per-device batch of at least 2 (got "
                              f"{recipe.per_device_train_batch_size}): TRL estimates its KL term from the other "
                              "completions in the batch; pass --per-device-train-batch-size 2 or more")
    if recipe.load_in_4bit and not cuda():
        raise TrainInputError(f"--recipe {recipe.name} trains a 4-bit QLoRA model, which needs a CUDA GPU and "
                              f"bitsandbytes: {GPU_EXTRA_HINT}, or use --recipe cpu")
    if recipe.optim.endswith("bnb_8bit") and not cuda():
        raise TrainInputError(f"optimizer {recipe.optim} needs bitsandbytes on CUDA: {GPU_EXTRA_HINT}")


def trl_args(recipe: Recipe, config_class: type) -> dict[str, Any]:
    """Recipe's TRL-named fields that `config_class` (SFTConfig, KTOConfig or DPOConfig) has, by name."""
    accepted = {f.name for f in dataclasses.fields(config_class)}
    return {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)
            if f.name not in OURS and f.name in accepted}


def check_rows_left(trainer: Any) -> None:
    """Raise NoRowsLeft if TRL's preprocessing (cutting rows to `max_length`, then its filters) left none to train on,
    before `trainer.train()` would fail on an empty sampler."""
    if len(trainer.train_dataset) == 0:
        raise NoRowsLeft(f"TRL dropped every row: each is longer than max_length {trainer.args.max_length} tokens, "
                         "or keeps no trainable token once cut")


def training_args(recipe: Recipe, out: str, seed: int, config_class: type) -> dict[str, Any]:
    """Keyword arguments for `config_class` (SFTConfig, KTOConfig or DPOConfig): the recipe's TRL fields, then
    CPU-safe values for the rest.

    TRL's defaults are set for GPUs (bf16=True even on CPU, gradient checkpointing on, logging every 10 steps),
    so each is set explicitly here or in the recipe.
    """
    import torch

    on_cuda = torch.cuda.is_available()
    return {
        **trl_args(recipe, config_class), "output_dir": out, "seed": seed,
        "use_cpu": not on_cuda, "bf16": on_cuda and torch.cuda.is_bf16_supported(), "fp16": False,
        "report_to": "none", "save_strategy": "no",
        "disable_tqdm": True,  # the CLI draws its own progress bar
    }


def upgrade(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recipe as a factory.json recorded it, with today's field names (older files used `OLD_NAMES`' keys)."""
    return {OLD_NAMES.get(k, k): v for k, v in recorded.items()}


def lora_config(recipe: Recipe) -> Any:
    """A peft LoraConfig for a causal LM, or None without LoRA."""
    if recipe.lora is None:
        return None
    from peft import LoraConfig

    targets = recipe.lora.target_modules
    return LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                      bias="none", task_type="CAUSAL_LM",
                      target_modules=targets if isinstance(targets, str) else list(targets))


def quantization_config(recipe: Recipe) -> Any:
    """The reference's 4-bit NF4 / bf16-compute BitsAndBytesConfig, or None."""
    if not recipe.load_in_4bit:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def summary(trainer: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Steps, losses and speed of a finished `trainer.train()` (its returned `metrics`)."""
    losses = [round(e["loss"], 6) for e in trainer.state.log_history if "loss" in e]
    return {
        "rows_used": len(trainer.train_dataset),  # after TRL's filters (e.g. KTO drops prompts >= max_length)
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "final_loss": losses[-1] if losses else None,
        "train_loss": metrics.get("train_loss"),
        "losses": losses,
        "seconds": round(metrics.get("train_runtime", 0.0), 2),
        "steps_per_second": metrics.get("train_steps_per_second"),
    }
