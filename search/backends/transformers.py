"""A local transformers model as a `Backend`: concurrent requests become one batched generation.

`complete()` queues the request in a `search.batching.MicroBatcher`, which waits until every rollout that can
submit has (the loop settles), then runs all pending requests (up to `max_batch`) as ONE
`search.backends.decoding.DecodeLoop.run` in a worker thread: our own prefill + decode over the model's
forward. Prompts reuse the K/V of earlier rows through a prefix cache keyed by token ids, so a JOSH sibling
or child prefills only what is new; rows that stop leave the batch. Each row samples with its own seeded
Gumbel stream, so a row's output depends only on its (prompt, seed, params), never on what it was batched
with or on what the cache held (up to float rounding). A prompt over the context budget is reported as
`context_overflow` and never run.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common.errors import first_line
from search.backends import allocator
from search.backends.base import BackendError, Completion, Request
from search.backends.decoding import DecodeLoop, LoopStats, Row
from search.backends.parsing import parse_assistant
from search.batching import MicroBatcher

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_CACHE_BYTES = 2 << 30  # default prefix cache on CPU
GPU_CACHE_SHARE = 0.25  # default prefix cache on a GPU: this share of the memory free after loading the model


@dataclass
class BackendStats(LoopStats):
    """Counters for benchmarks and tests (rows = requests that ran through the model)."""

    batches: int = 0
    rows: int = 0
    generated_tokens: int = 0
    overflows: int = 0
    generate_s: float = 0.0  # inside the decode loop (prefill + decode)


class TransformersBackend:
    """A local folder, Hub id or GGUF file served through its forward (same code path for all, CPU or CUDA).

    A GGUF file (`path/model.gguf`, needs the `gguf` package) loads through transformers' `gguf_file=`: tokenizer
    and weights from the one file, every tensor dequantised (as `train/loading.py` loads it for training).
    `chat_template` replaces the tokenizer's own (the caller's choice, e.g. ChatML with tools for a ChatML model
    whose template ignores them). `prefix_cache_tokens`: tokens of K/V the prefix cache keeps (None: what
    `CPU_CACHE_BYTES` hold on CPU, `GPU_CACHE_SHARE` of the free memory on a GPU; 0: no reuse, every prompt is
    prefilled in full). `share_prefix`: decode reads shared prompt tokens once (`search/backends/cascade.py`);
    None = on CPU only (measured there), False = every row's whole context from a flat buffer (comparisons).
    """

    batched = True  # concurrent requests share batches: JOSH requests calls ahead (search/ahead.py)

    def __init__(self, model: str | os.PathLike, *, device: str = "auto", dtype: str | torch.dtype = "auto",
                 max_batch: int = 16, max_context: int | None = None, prefix_cache_tokens: int | None = None,
                 chat_template: str | None = None, share_prefix: bool | None = None):
        self.name = str(model)
        where, gguf = _location(self.name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(where, **gguf)
        except Exception as e:
            why = first_line(e, with_type=True)
            raise BackendError(f"cannot load a tokenizer from {self.name!r} ({why})") from None
        self.tokenizer.model_max_length = 1 << 40  # prompts are checked against the context budget below; no warning
        if chat_template is not None:
            self.tokenizer.chat_template = chat_template
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"the tokenizer of {self.name!r} has no chat template; the backend renders "
                               "requests with apply_chat_template, so use a chat/instruct model")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            allocator.tune()  # decode steps reuse heap pages instead of mapping fresh ones (allocator.py)
        try:
            torch_dtype = _DTYPES[dtype] if isinstance(dtype, str) and dtype in _DTYPES else dtype
            self.model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype, **_dense(gguf))
            if gguf and getattr(self.model, "hf_quantizer", None) is not None:
                self.model.hf_quantizer.remove_quantization_config(self.model)  # dense weights: a plain model
            self.model.to(device).eval()
        except Exception as e:
            why = first_line(e, with_type=True)
            raise BackendError(f"cannot load a causal LM from {self.name!r} ({why})") from None
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.max_context = max_context or getattr(self.model.config, "max_position_embeddings", None) or 2048
        eos = {self.tokenizer.eos_token_id, *_as_list(self.model.generation_config.eos_token_id)}
        self.eos_ids = sorted(i for i in eos if i is not None)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self.stats = BackendStats()
        self.loop = DecodeLoop(self.model, eos_ids=self.eos_ids, pad_id=self.pad_id, share_prefix=share_prefix)
        if self.loop.layout is not None:
            if prefix_cache_tokens is None:
                prefix_cache_tokens = self._default_cache_bytes() // self.loop.layout.bytes_per_token()
            self.loop.prefix_cache.max_tokens = prefix_cache_tokens
        # Requests from every ready coroutine are gathered into one `generate_batch` in a worker thread.
        self._batcher = MicroBatcher(self.generate_batch, max_batch=max_batch, settle_rounds=32)

    def _default_cache_bytes(self) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free * GPU_CACHE_SHARE)
        return CPU_CACHE_BYTES

    # -- async path -------------------------------------------------------------------------------------

    async def complete(self, request: Request) -> Completion:
        """Queue `request`; it runs in the next batch (with whatever else is pending)."""
        return await self._batcher.submit(request)

    async def aclose(self) -> None:
        """Nothing to release: batches run in the loop's default executor and hold no state."""

    # -- synchronous batch ------------------------------------------------------------------------------

    def render(self, request: Request) -> list[int]:
        """Prompt token ids: the chat template with the tools and the generation prompt."""
        encoded = self.tokenizer.apply_chat_template(list(request.messages), tools=request.tools or None,
                                                     add_generation_prompt=True, return_dict=True)
        return list(encoded["input_ids"])

    def generate_batch(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer all `requests` in one decode loop (over-budget prompts are reported, not run)."""
        start = time.perf_counter()
        results: list[Completion | None] = [None] * len(requests)
        rows = self._rows(requests, results)
        if rows:
            t0 = time.perf_counter()
            try:
                self.loop.run([row for _, row in rows], self.stats)
            except Exception as e:
                for i, _ in rows:
                    results[i] = Completion.failed(f"generate failed: {first_line(e, with_type=True)}")
            else:
                for i, row in rows:
                    results[i] = self._completion(row, requests[i])
            self.stats.generate_s += time.perf_counter() - t0
            self.stats.batches += 1
            self.stats.rows += len(rows)
        latency_ms = (time.perf_counter() - start) * 1000
        for completion in results:
            assert completion is not None
            completion.latency_ms = latency_ms
        return results  # type: ignore[return-value]

    def _rows(self, requests: Sequence[Request], results: list[Completion | None]) -> list[tuple[int, Row]]:
        """The rows to run, by request index; requests that cannot run get their answer in `results`."""
        rows = []
        for i, request in enumerate(requests):
            params = request.params
            try:
                ids = self.render(request)
            except Exception as e:  # e.g. the template's raise_exception on an unknown role
                results[i] = Completion.failed(f"chat template failed: {first_line(e, with_type=True)}")
                continue
            budget = self.max_context - params.max_new_tokens
            if len(ids) > budget:
                self.stats.overflows += 1
                results[i] = Completion(message={"role": "assistant", "content": ""}, prompt_tokens=len(ids),
                                        finish_reason="context_overflow",
                                        extra={"context_budget": budget, "max_context": self.max_context})
                continue
            seed = params.seed if params.seed is not None else random.SystemRandom().getrandbits(63)
            rows.append((i, Row(ids, params.temperature, params.top_p, max(1, params.max_new_tokens), seed)))
        return rows

    def _completion(self, row: Row, request: Request) -> Completion:
        self.stats.generated_tokens += len(row.tokens)
        text = self.tokenizer.decode(row.tokens[:-1] if row.stopped else row.tokens, skip_special_tokens=True)
        message, parse_error = parse_assistant(text, self.tokenizer)
        return Completion(message=message, prompt_tokens=len(row.ids), completion_tokens=len(row.tokens),
                          parse_error=parse_error, finish_reason="stop" if row.stopped else "length",
                          extra={"seed": row.seed, "cached_tokens": row.cached, "token_ids": row.tokens})


def _location(model: str) -> tuple[str, dict[str, Any]]:
    """What `from_pretrained` takes for `model`: the folder / Hub id itself, or a GGUF file's folder + `gguf_file`."""
    if model.lower().endswith(".gguf"):
        path = os.path.expanduser(model)
        return os.path.dirname(path) or ".", {"gguf_file": os.path.basename(path)}
    return model, {}


def _dense(gguf: dict[str, Any]) -> dict[str, Any]:
    """`from_pretrained` arguments that load a GGUF file with every tensor dequantised (as train/loading.py)."""
    if not gguf:
        return {}
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers before 5.x has no packed GGUF weights: it always dequantises
        return gguf
    return {**gguf, "quantization_config": GgufConfig(dequantize=True)}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
