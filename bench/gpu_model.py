"""The GPU benchmark's model: the tiny model's tokenizer and chat template on a bigger, random Llama (bfloat16).

No model hub is reachable from the benchmark machines, so the weights are random: the model never stops before
`max_new_tokens` and its tool calls are malformed, which makes every turn the same length. That is what a
throughput comparison wants; rewards are meaningless. Both backends load the same folder in bfloat16.

    python bench/gpu_model.py TINY_FOLDER OUT [--hidden 1024] [--layers 16]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tiny", type=Path, help="a folder made by `factory model init`")
    parser.add_argument("out", type=Path)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--context", type=int, default=4096)
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(args.tiny)
    heads = max(1, args.hidden // 64)  # head size 64, as Llama-class models of this width use
    config.update({"hidden_size": args.hidden, "num_hidden_layers": args.layers, "num_attention_heads": heads,
                   "num_key_value_heads": heads, "intermediate_size": args.hidden * 8 // 3 // 64 * 64,
                   "max_position_embeddings": args.context})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    args.out.mkdir(parents=True, exist_ok=True)
    for item in args.tiny.iterdir():  # tokenizer, chat template, generation config
        if item.suffix in (".json", ".jinja") and item.name not in ("config.json", "factory_model.json"):
            shutil.copy(item, args.out / item.name)
    model.save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: random Llama, {params / 1e6:.0f}M parameters, hidden {args.hidden}, {args.layers} layers, "
          f"context {args.context}, bfloat16")


if __name__ == "__main__":
    main()
