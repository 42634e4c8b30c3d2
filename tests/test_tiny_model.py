"""The tiny default model: tokenizer, chat template, assistant masks, determinism, and parsing its output."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.backends.parsing import parse_assistant
from tests.conftest import TINY_VOCAB, tiny_corpus
from toolwoz.schemas import tool_schemas
from train import tiny_model


@pytest.fixture(scope="module")
def tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


CALL = {"type": "function", "function": {"name": "search_restaurant",
                                         "arguments": '{"food": "italian", "area": "centre"}'}}
DICT_CALL = {"type": "function", "function": {"name": "book_restaurant",
                                              "arguments": {"name": "pizza hut city centre", "people": "2"}}}
CONVERSATION = [
    {"role": "system", "content": "You are a Cambridge travel agent."},
    {"role": "user", "content": "A cheap italian place in the centre, please."},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": '[{"name": "pizza hut city centre", "area": "centre"}]'},
    {"role": "assistant", "content": "Pizza hut city centre. Booking it.", "tool_calls": [DICT_CALL]},
    {"role": "tool", "content": '{"reference": "ABC123"}'},
    {"role": "assistant", "content": "Booked, reference ABC123."},
]
ASSISTANT_SPANS = [
    '<tool_call>{"name": "search_restaurant", "arguments": {"food": "italian", "area": "centre"}}</tool_call><|end|>',
    ('Pizza hut city centre. Booking it.<tool_call>{"name": "book_restaurant", "arguments": '
     '{"name": "pizza hut city centre", "people": "2"}}</tool_call><|end|>'),
    "Booked, reference ABC123.<|end|>",
]


def test_init_writes_a_loadable_model(model_dir, tok):
    from transformers import AutoModelForCausalLM

    info = json.loads((model_dir / "factory_model.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert len(tok) == info["vocab_size"] == TINY_VOCAB == model.config.vocab_size
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert 500_000 < info["params"] < 10_000_000 and info["seed"] == 0
    assert model.config.max_position_embeddings == 2048 and model.config.tie_word_embeddings
    assert model.generation_config.do_sample is True
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"
    assert tok.convert_tokens_to_ids("<tool_call>") != tok.unk_token_id  # one token each
    ids = tok.encode("<tool_call>x</tool_call><|end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "<tool_call>x</tool_call>"  # kept, unlike <|end|>


def test_corpus_too_small_for_the_vocab_is_an_error():
    with pytest.raises(ValueError, match="only reaches a vocabulary"):
        tiny_model.train_tokenizer(["search_train(leaveAt)", "book a table"], vocab_size=2000)


def test_template_renders_tools_compactly_and_calls(tok):
    text = tok.apply_chat_template(CONVERSATION[:2], tools=tool_schemas(), tokenize=False, add_generation_prompt=True)
    assert "search_train(leaveAt, destination, day, arriveBy, departure)\n" in text
    assert "book_attraction()\n" in text
    assert "description" not in text and '"properties"' not in text  # signatures, not schemas
    assert text.startswith("<|system|>\nYou are a Cambridge travel agent.\n")
    assert text.endswith("<|user|>\nA cheap italian place in the centre, please.<|end|>\n<|assistant|>\n")
    full = tok.apply_chat_template(CONVERSATION, tools=tool_schemas(), tokenize=False)
    assert '<|tool|>\n{"reference": "ABC123"}<|end|>\n' in full
    for span in ASSISTANT_SPANS:  # string and dict arguments render the same way, never double-encoded
        assert f"<|assistant|>\n{span}\n" in full
    no_tools = tok.apply_chat_template(CONVERSATION[:2], tokenize=False)
    assert no_tools.startswith("<|system|>\nYou are a Cambridge travel agent.<|end|>\n<|user|>")


def test_template_raises_on_unknown_roles(tok):
    with pytest.raises(Exception, match="unknown role: narrator"):
        tok.apply_chat_template([{"role": "narrator", "content": "x"}], tokenize=False)


def _masked_spans(ids: list[int], mask: list[int]) -> list[list[int]]:
    spans, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    return spans + ([current] if current else [])


def test_assistant_mask_covers_exactly_the_assistant_turns(tok):
    enc = tok.apply_chat_template(CONVERSATION, tools=tool_schemas(), return_dict=True,
                                  return_assistant_tokens_mask=True)
    spans = _masked_spans(enc["input_ids"], enc["assistant_masks"])
    assert [tok.decode(s) for s in spans] == ASSISTANT_SPANS
    # Prefix preservation: the prompt for turn k is a prefix of the full conversation.
    tools = tool_schemas()
    prompt = tok.apply_chat_template(CONVERSATION[:4], tools=tools, tokenize=False, add_generation_prompt=True)
    assert tok.apply_chat_template(CONVERSATION, tools=tools, tokenize=False).startswith(prompt)


def test_same_seed_gives_identical_files(env, model_dir, tmp_path):
    corpus = tiny_corpus(env)
    again = tiny_model.init_model(tmp_path / "again", corpus, vocab_size=TINY_VOCAB, seed=0)
    other = tiny_model.init_model(tmp_path / "other", corpus, vocab_size=TINY_VOCAB, seed=1)
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (model_dir / name).read_bytes() == (again / name).read_bytes(), name
    assert (model_dir / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
    assert (model_dir / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("message", [m for m in CONVERSATION if m["role"] == "assistant"])
def test_parse_round_trip(tok, message):
    enc = tok.apply_chat_template([CONVERSATION[1], message], return_dict=True, return_assistant_tokens_mask=True)
    (span,) = _masked_spans(enc["input_ids"], enc["assistant_masks"])
    text = tok.decode(span, skip_special_tokens=True)  # what the backend decodes
    expected = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls", [])]
    expected = [(name, json.loads(a) if isinstance(a, str) else a) for name, a in expected]
    for tokenizer in (tok, None):  # response_template parser and the Hermes fallback agree
        parsed, error = parse_assistant(text, tokenizer)
        assert error is None
        assert parsed["content"] == message["content"]
        calls = parsed.get("tool_calls", [])
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == expected
        assert [c["id"] for c in calls] == [f"call_{i}" for i in range(len(calls))]
        assert all(c["type"] == "function" and isinstance(c["function"]["arguments"], str) for c in calls)


@pytest.mark.parametrize("text", [
    '<tool_call>{"name": "search_hotel", "arguments": {"area": </tool_call>',
    '<tool_call>{"arguments": {"area": "east"}}</tool_call>',
    'Sure.<tool_call>{"name": "search_train", "argu',
    "<tool_call>[1, 2]</tool_call>",
])
def test_malformed_calls_give_a_parse_error(tok, text):
    for tokenizer in (tok, None):
        message, error = parse_assistant(text, tokenizer)
        assert error and message == {"role": "assistant", "content": text}


def test_string_arguments_are_kept_verbatim():
    message, error = parse_assistant('<tool_call>{"name": "book_train", "arguments": "{\\"people\\": \\"2\\"}"}'
                                     '</tool_call>')
    assert error is None and message["tool_calls"][0]["function"]["arguments"] == '{"people": "2"}'


_FRAGMENTS = st.sampled_from(["<tool_call>", "</tool_call>", "{", "}", '"name"', ": ", '"arguments"', "<|end|>",
                              "[", "]", ",", '"x"', "null", "\n"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=8), _FRAGMENTS), max_size=30).map("".join))
def test_parser_never_raises(tok, text):
    for tokenizer in (tok, None):
        message, error = parse_assistant(text, tokenizer)
        assert message["role"] == "assistant" and isinstance(message["content"], str)
        assert error is None or isinstance(error, str)
        for call in message.get("tool_calls", []):
            assert isinstance(call["function"]["name"], str) and isinstance(call["function"]["arguments"], str)
