"""The tiny default model: a byte-level BPE tokenizer trained on a text corpus and a small random Llama.

The corpus comes from the caller (the default model's is ToolWOZ text: `toolwoz.corpus.build_corpus`), so
training knows no environment.

`init_model` writes a folder that loads with `AutoTokenizer` / `AutoModelForCausalLM` like any Hub model:
the chat template renders tools compactly (one signature line each) and tool calls Hermes-style
(`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`), and marks the whole assistant turn, end token
included, with `{% generation %}` so TRL's assistant-only loss works. Everything is made locally and is
deterministic for a seed (same corpus + seed -> byte-identical files).

torch / transformers / tokenizers are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

MODEL_NAME = "tiny-toolwoz"
# Measured (bootstrap of 1200 steps, dev = last 100 val_harvest tasks): vocab 2048 reached Average Reward 0.44 in
# 1728 CPU-s, vocab 4096 0.24 in 3128 CPU-s. The LM head is about half of a step's cost at this width, and
# a smaller vocabulary sees each value's pieces more often.
DEFAULT_VOCAB = 2048
# What this model wants a search to show it (SearchConfig.results), kept in its config.json: its context is 2k
# tokens and tool results were 46% of a teacher conversation with full rows.
DEFAULT_RESULTS = "compact"  # one of toolwoz.tools.RESULTS (not imported: train/ imports nothing of ours)
CONTEXT = 2048  # the spec's CPU context budget (simulators.md, "Context budget on CPU")
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]
# Ordinary (not special) added tokens: one token each for the call markers, and decoding with
# skip_special_tokens (what `transformers serve` does) keeps them.
CALL_TOKENS = ["<tool_call>", "</tool_call>"]

CHAT_TEMPLATE = """\
{%- macro render_content(content) %}{% if content is string %}{{ content }}\
{% elif content is not none %}{{ content | tojson }}{% endif %}{% endmacro %}
{%- set system_first = messages and messages[0]['role'] == 'system' %}
{%- if tools %}
{{- '<|system|>\\n' }}{% if system_first %}{{ render_content(messages[0]['content']) + '\\n' }}{% endif %}
{{- 'Tools (call one as <tool_call>{"name": ..., "arguments": {...}}</tool_call>):\\n' }}
{%- for tool in tools %}{% set f = tool['function'] if tool['function'] is defined else tool %}
{{- f['name'] + '(' }}{% if f['parameters'] is defined and f['parameters']['properties'] %}\
{{ f['parameters']['properties'] | list | join(', ') }}{% endif %}{{ ')\\n' }}
{%- endfor %}{{ '<|end|>\\n' }}
{%- elif system_first %}
{{- '<|system|>\\n' + render_content(messages[0]['content']) + '<|end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message['role'] == 'system' and loop.first %}
{%- elif message['role'] == 'assistant' %}
{{- '<|assistant|>\\n' }}{% generation %}{{ render_content(message['content']) }}
{%- if message['tool_calls'] %}{% for tc in message['tool_calls'] %}\
{% set f = tc['function'] if tc['function'] is defined else tc %}
{{- '<tool_call>{"name": ' + (f['name'] | tojson) + ', "arguments": ' }}
{%- if f['arguments'] is string %}{{ f['arguments'] }}{% else %}{{ f['arguments'] | tojson }}{% endif %}
{{- '}</tool_call>' }}
{%- endfor %}{% endif %}
{{- '<|end|>' }}{% endgeneration %}{{ '\\n' }}
{%- elif message['role'] in ('system', 'user', 'tool') %}
{{- '<|' + message['role'] + '|>\\n' + render_content(message['content']) + '<|end|>\\n' }}
{%- else %}{{ raise_exception('unknown role: ' + message['role']) }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"""

# Lets `tokenizer.parse_response` (and `transformers serve`) turn generated text into `tool_calls`.
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|assistant|>\n",
    "fields": {
        "tool_calls": {"open_pattern": r"\s*<tool_call>", "close": "</tool_call>", "repeats": True,
                       "content": "json", "transform": {"type": "function", "function": "{content}"}},
        "content": {"close_pattern": r"\s*<\|end\|>", "content": "text"},
    },
}


def train_tokenizer(corpus: Sequence[str], vocab_size: int = DEFAULT_VOCAB) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` with the role specials, call markers and chat template.

    `vocab_size` counts everything (BPE merges + specials + the two call tokens); raises ValueError when
    the corpus is too small to reach it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(CALL_TOKENS), min_frequency=1,
                                  special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|end|>",
                                 pad_token="<|pad|>", model_max_length=CONTEXT,
                                 additional_special_tokens=SPECIAL_TOKENS[3:])
    hf.add_tokens(CALL_TOKENS)
    if len(hf) != vocab_size:
        raise ValueError(f"the corpus ({len(corpus)} lines) only reaches a vocabulary of {len(hf)}, not "
                         f"{vocab_size}; pass more rows/tasks or a smaller vocab_size")
    hf.chat_template = CHAT_TEMPLATE
    hf.response_template = RESPONSE_TEMPLATE
    return hf


def build_model(tokenizer: Any, seed: int = 0) -> Any:
    """A randomly initialised small Llama sized for CPU (about 0.67M parameters at vocab 2048)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        # Sized by the CPU budget: training sequences are whole conversations (median ~1300 tokens, mostly
        # tool results), so cost per step is what limits the bootstrap. Measured on 396 teacher conversations,
        # batch 4: hidden 256 x 4 layers (4.2M) 0.28 steps/s, loss 1.55 after 75 steps; hidden 128 x 2 layers
        # ~0.75 steps/s, loss 0.83 after 120 steps and 0.25 after 600 (the first to earn rewards).
        hidden_size=128,  # 0.26M embedding params at vocab 2048
        intermediate_size=352,  # ~8/3 x hidden (SwiGLU convention), rounded to a multiple of 16
        num_hidden_layers=2,  # two layers: the least that can copy a value from the context (induction)
        num_attention_heads=4,  # head_dim 32
        num_key_value_heads=4,  # plain MHA: at this size GQA saves nothing worth its quality cost
        max_position_embeddings=CONTEXT,  # RoPE; prompts over the budget are reported, never truncated
        tie_word_embeddings=True,  # input/output embeddings share weights: -1M params, trains faster
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        factory_results=DEFAULT_RESULTS,  # read by `factory eval/harvest/loop` as the default --results
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Sampling on by default so `transformers serve` honours `temperature` (temperature 0 stays greedy).
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def init_model(out_dir: str | Path, corpus: Sequence[str], *, vocab_size: int = DEFAULT_VOCAB,
               seed: int = 0) -> Path:
    """Train the tokenizer on `corpus` (lines of text), build the model (weights from `seed`) and save both plus
    `factory_model.json`. The tokenizer depends on the corpus only: every seed shares one."""
    tokenizer = train_tokenizer(corpus, vocab_size)
    model = build_model(tokenizer, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "name": MODEL_NAME,
        "what": "randomly initialised Llama-style model with a byte-level BPE tokenizer trained on ToolWOZ text; "
                "bootstrap it with SFT before use",
        "vocab_size": len(tokenizer), "params": n_params, "seed": seed, "context": CONTEXT,
        "corpus": {"lines": len(corpus), "chars": sum(map(len, corpus))},
        "architecture": {k: getattr(model.config, k) for k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "max_position_embeddings", "tie_word_embeddings")},
    }
    (out / "factory_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return out
