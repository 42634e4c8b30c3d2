"""The tiny default model: a byte-level BPE tokenizer trained on ToolWOZ text and a small random Llama.

`init_model` writes a folder that loads with `AutoTokenizer` / `AutoModelForCausalLM` like any Hub model:
the chat template renders tools compactly (one signature line each) and tool calls Hermes-style
(`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`), and marks the whole assistant turn, end token
included, with `{% generation %}` so TRL's assistant-only loss works. Everything is made locally and is
deterministic for a seed (same corpus + seed -> byte-identical files).

torch / transformers / tokenizers are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from toolwoz.multiwoz import factory_home
from toolwoz.schemas import API_DEFS, DAYS, TOOL_NAMES, UID_KEY
from toolwoz.tasks import Task

MODEL_NAME = "tiny-toolwoz"
DEFAULT_VOCAB = 4096
CONTEXT = 2048  # the spec's CPU context budget (simulators.md, "Context budget on CPU")
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]
# Ordinary (not special) added tokens: one token each for the call markers, and decoding with
# skip_special_tokens (what `transformers serve` does) keeps them.
CALL_TOKENS = ["<tool_call>", "</tool_call>"]
_SKIP_COLUMNS = {"row_idx", "raw", "id"}

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

# Generic agent / user phrasing; the DB values and goal sentences supply the variety.
_AGENT_LINES = [
    "Sure, I can help with that. What day would you like to travel?",
    "How many people will be in your party?",
    "What time would you like the reservation for?",
    "Which area of town do you prefer?",
    "Do you have a price range in mind?",
    "What type of food would you like?",
    "Would you like free parking and wifi?",
    "Where will you be departing from, and where are you going?",
    "I found {n} options. {name} is a nice place in the {area}.",
    "Your booking was successful. The reference number is {ref}.",
    "I'm sorry, there is nothing matching that. Would you like to try something else?",
    "Is there anything else I can help you with today?",
    "You're welcome, have a great day!",
    "The train {train} leaves {dep} at {leave} and arrives in {dest} at {arrive}.",
    "Booking failed: no availability. Shall I try another day or time?",
]
_USER_LINES = [
    "I need a place to eat in the {area} part of town.",
    "I am looking for a train from {dep} to {dest} on {day}.",
    "Can you book it for {n} people on {day}?",
    "I want to leave after {leave} please.",
    "I need to arrive by {arrive}.",
    "Could I get the address and phone number?",
    "That is all I need, thank you. END_CONVERSATION",
    "Yes, please book it.",
    "No, that will be all. Thanks!",
    "I'd like something {price}, please.",
]


def default_model_dir() -> Path:
    """`$FACTORY_HOME/models/tiny-toolwoz`."""
    return factory_home() / "models" / MODEL_NAME


def _signature(name: str) -> str:
    return f"{name}({', '.join(API_DEFS[name][0])})"


def _row_lines(row: Mapping[str, Any]) -> list[str]:
    values = {k: v for k, v in row.items() if k not in _SKIP_COLUMNS and v is not None}
    lines = [str(v) for v in values.values() if isinstance(v, str)]
    lines.append(json.dumps(values))
    return lines


def _call(name: str, arguments: Mapping[str, Any]) -> str:
    return f'<tool_call>{{"name": {json.dumps(name)}, "arguments": {json.dumps(arguments)}}}</tool_call>'


def _task_lines(task: Task) -> list[str]:
    """Goal sentences plus the task's ground-truth calls and (capped) results, as the agent would see them."""
    lines = list(task.message)
    for entry in task.ground_truth.values():
        for api, spec in entry.get("success", {}).items():
            arguments = {k: v for k, v in spec.get("parameters", {}).items() if v}
            lines.append(_call(api, arguments))
            returns = spec.get("returns")
            if isinstance(returns, list):
                lines.append(json.dumps(returns[:3]))
            elif returns:
                lines.append(json.dumps(returns))
    return lines


def build_corpus(rows: Mapping[str, Sequence[Mapping[str, Any]]], tasks: Iterable[Task], *,
                 extra: Iterable[str] = (), seed: int = 0) -> list[str]:
    """ToolWOZ text for the tokenizer: DB values and rows, goal sentences, tool signatures, calls and
    results, and generic agent/user phrasing filled with DB values. Deterministic for its inputs.

    `rows` is `toolwoz.query.load_rows(con)`; `extra` adds lines (e.g. simulator / teacher templates).
    """
    rng = random.Random(seed)
    lines: list[str] = [_signature(n) for n in TOOL_NAMES]
    lines += [" ".join(API_DEFS[n][0]) for n in TOOL_NAMES] + list(DAYS)
    for domain in sorted(rows):
        for row in rows[domain]:
            lines += _row_lines(row)
    for task in sorted(tasks, key=lambda t: t.task_id):
        lines += _task_lines(task)
    trains = rows.get("train") or [{}]
    places = [r for d in ("restaurant", "hotel", "attraction") for r in rows.get(d, [])] or [{}]
    for i in range(max(len(trains), 200)):
        train, place = rng.choice(trains), rng.choice(places)
        values = {"n": rng.randint(1, 8), "name": place.get("name", ""), "area": place.get("area", ""),
                  "price": place.get("pricerange", ""), "ref": f"{rng.getrandbits(32):08X}",
                  "train": train.get("trainID", ""), "dep": train.get("departure", ""),
                  "dest": train.get("destination", ""), "leave": train.get("leaveAt", ""),
                  "arrive": train.get("arriveBy", ""), "day": rng.choice(DAYS)}
        lines.append(rng.choice(_AGENT_LINES).format(**values))
        lines.append(rng.choice(_USER_LINES).format(**values))
        if i % 4 == 0 and place.get("name"):
            domain = "restaurant" if "food" in place else "hotel" if "stars" in place else "attraction"
            lines.append(_call(f"search_{domain}", {"name": place["name"]}))
        if i % 4 == 1 and train.get("trainID"):
            lines.append(_call("book_train", {"people": str(values["n"]), UID_KEY["train"]: train["trainID"]}))
    return lines + list(extra)


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
    """A randomly initialised small Llama sized for CPU (about 0.93M parameters at vocab 4096)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        # Sized by the CPU budget: training sequences are whole conversations (median ~1300 tokens, mostly
        # tool results), so cost per step is what limits the bootstrap. Measured on 396 teacher conversations,
        # batch 4: hidden 256 x 4 layers (4.2M) 0.28 steps/s, loss 1.55 after 75 steps; hidden 128 x 2 layers
        # ~0.75 steps/s, loss 0.83 after 120 steps and 0.25 after 600 (the first to earn rewards).
        hidden_size=128,  # 0.5M embedding params at vocab 4096
        intermediate_size=352,  # ~8/3 x hidden (SwiGLU convention), rounded to a multiple of 16
        num_hidden_layers=2,  # two layers: the least that can copy a value from the context (induction)
        num_attention_heads=4,  # head_dim 32
        num_key_value_heads=4,  # plain MHA: at this size GQA saves nothing worth its quality cost
        max_position_embeddings=CONTEXT,  # RoPE; prompts over the budget are reported, never truncated
        tie_word_embeddings=True,  # input/output embeddings share weights: -1M params, trains faster
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
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


def init_model(out_dir: str | Path, rows: Mapping[str, Sequence[Mapping[str, Any]]], tasks: Iterable[Task], *,
               vocab_size: int = DEFAULT_VOCAB, seed: int = 0, extra: Iterable[str] = ()) -> Path:
    """Train the tokenizer, build the model (weights from `seed`) and save both plus `factory_model.json`."""
    corpus = build_corpus(rows, tasks, extra=extra)  # seed-independent: every seed shares one tokenizer
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
