"""A local transformers model as a `Backend`: concurrent requests become one batched `generate`.

`complete()` queues the request in a `search.batching.MicroBatcher`: once every ready coroutine has had its
turn, up to `max_batch` pending requests run as ONE left-padded `generate` in a worker thread while the loop
keeps accepting requests for the next batch. Each row samples with its own seed
(Gumbel noise from a per-row generator over greedy decoding, `shared/notes/stack-checks.md` §5), so a row's
output depends only on its (prompt, seed, params), never on what it was batched with (up to float rounding
under padding). A prompt over the context budget is reported as `context_overflow` and never run.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LogitsProcessor,
                          LogitsProcessorList, StoppingCriteria, StoppingCriteriaList)

from search.backends.base import BackendError, Completion, Request, SamplingParams
from search.backends.parsing import parse_assistant
from search.batching import MicroBatcher

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BackendStats:
    """Counters for benchmarks (rows = requests that ran through `generate`)."""

    batches: int = 0
    rows: int = 0
    generated_tokens: int = 0
    overflows: int = 0
    generate_s: float = 0.0


class PerRowSampler(LogitsProcessor):
    """Per-row temperature and top-p, then Gumbel noise from one seeded generator per row.

    With `do_sample=False`, argmax(logits / T + Gumbel) is an exact sample from softmax(logits / T). Rows
    with temperature 0 get no noise (greedy). Each row draws one noise vector per step, so its stream
    depends only on its seed and the step index.
    """

    def __init__(self, params: Sequence[SamplingParams], seeds: Sequence[int], device: torch.device):
        self.temperature = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params],
                                        device=device).unsqueeze(1)
        self.top_p = torch.tensor([p.top_p for p in params], device=device).unsqueeze(1)
        self.generators = [_generator(s, device) if p.temperature > 0 else None for p, s in zip(params, seeds)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if bool((self.top_p < 1).any()):
            scores = self._top_p(scores)
        noise = torch.zeros_like(scores)
        for row, generator in enumerate(self.generators):
            if generator is not None:
                u = torch.rand(scores.shape[-1], generator=generator, device=scores.device)
                noise[row] = -torch.log(-torch.log(u.clamp(min=1e-20, max=1 - 1e-7)))
        return scores + noise

    def _top_p(self, scores: torch.Tensor) -> torch.Tensor:
        # As transformers' TopPLogitsWarper, with one threshold per row; the top token always survives.
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - self.top_p)
        remove[:, -1] = False
        return scores.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)  # any int is a seed


class PerRowLimit(StoppingCriteria):
    """Marks a row finished once it has generated its own `max_new_tokens`."""

    def __init__(self, prompt_width: int, limits: Sequence[int], device: torch.device):
        self.prompt_width = prompt_width
        self.limits = torch.tensor(limits, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return (input_ids.shape[1] - self.prompt_width) >= self.limits


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _failed(error: str) -> Completion:
    return Completion(message={"role": "assistant", "content": ""}, error=error, finish_reason="error")


class TransformersBackend:
    """A local folder or Hub id served with transformers `generate` (same code path for both)."""

    def __init__(self, model: str | os.PathLike, *, device: str = "auto", dtype: str | torch.dtype = "auto",
                 max_batch: int = 16, max_context: int | None = None):
        self.name = str(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
        except Exception as e:
            raise BackendError(f"cannot load a tokenizer from {self.name!r} ({_one_line(e)})") from None
        self.tokenizer.model_max_length = 1 << 40  # prompts are checked against the context budget below; no warning
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"the tokenizer of {self.name!r} has no chat template; the backend renders "
                               "requests with apply_chat_template, so use a chat/instruct model")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            torch_dtype = _DTYPES[dtype] if isinstance(dtype, str) and dtype in _DTYPES else dtype
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
            self.model.to(device).eval()
        except Exception as e:
            raise BackendError(f"cannot load a causal LM from {self.name!r} ({_one_line(e)})") from None
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.max_context = max_context or getattr(self.model.config, "max_position_embeddings", None) or 2048
        eos = {self.tokenizer.eos_token_id, *_as_list(self.model.generation_config.eos_token_id)}
        self.eos_ids = sorted(i for i in eos if i is not None)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self.stats = BackendStats()
        # Requests from every ready coroutine are gathered into one `generate_batch` in a worker thread.
        self._batcher = MicroBatcher(self.generate_batch, max_batch=max_batch)

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
        """Answer all `requests` with one `generate` (over-budget prompts are reported, not run)."""
        start = time.perf_counter()
        results: list[Completion | None] = [None] * len(requests)
        rows: list[tuple[int, list[int], SamplingParams, int]] = []
        for i, request in enumerate(requests):
            params = request.params
            try:
                ids = self.render(request)
            except Exception as e:  # e.g. the template's raise_exception on an unknown role
                results[i] = _failed(f"chat template failed: {_one_line(e)}")
                continue
            budget = self.max_context - params.max_new_tokens
            if len(ids) > budget:
                self.stats.overflows += 1
                results[i] = Completion(message={"role": "assistant", "content": ""}, prompt_tokens=len(ids),
                                        finish_reason="context_overflow",
                                        extra={"context_budget": budget, "max_context": self.max_context})
                continue
            seed = params.seed if params.seed is not None else random.SystemRandom().getrandbits(63)
            rows.append((i, ids, params, seed))
        if rows:
            try:
                for (i, *_), completion in zip(rows, self._generate(rows)):
                    results[i] = completion
            except Exception as e:
                for i, *_ in rows:
                    results[i] = _failed(f"generate failed: {_one_line(e)}")
        latency_ms = (time.perf_counter() - start) * 1000
        for completion in results:
            assert completion is not None
            completion.latency_ms = latency_ms
        return results  # type: ignore[return-value]

    def _generate(self, rows: list[tuple[int, list[int], SamplingParams, int]]) -> list[Completion]:
        width = max(len(ids) for _, ids, _, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (_, ids, _, _) in enumerate(rows):  # left padding: every row's next token is at column `width`
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids):] = 1
        params = [p for _, _, p, _ in rows]
        limits = [max(1, p.max_new_tokens) for p in params]
        # Explicit neutral values: greedy + our processor, whatever sampling defaults the model ships with.
        # A static cache is allocated once per batch; the default dynamic one is regrown every decode step,
        # which at 160 rows cost more than the model (bench/harvest.py: 41.6 s -> 25.0 s). No compile: every
        # batch has another shape.
        config = GenerationConfig(do_sample=False, num_beams=1, temperature=1.0, top_p=1.0, top_k=50,
                                  repetition_penalty=1.0, max_new_tokens=max(limits),
                                  pad_token_id=self.pad_id, eos_token_id=self.eos_ids,
                                  cache_implementation="static", disable_compile=True)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                generation_config=config,
                logits_processor=LogitsProcessorList([PerRowSampler(params, [s for *_, s in rows], self.device)]),
                stopping_criteria=StoppingCriteriaList([PerRowLimit(width, limits, self.device)]),
            )
        self.stats.generate_s += time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.rows += len(rows)
        completions = []
        for r, (_, ids, _, seed) in enumerate(rows):
            new = out[r, width:width + limits[r]].tolist()
            end = next((k for k, t in enumerate(new) if t in self.eos_ids), None)
            generated = new if end is None else new[: end + 1]
            self.stats.generated_tokens += len(generated)
            text = self.tokenizer.decode(new if end is None else new[:end], skip_special_tokens=True)
            message, parse_error = parse_assistant(text, self.tokenizer)
            completions.append(Completion(message=message, prompt_tokens=len(ids), completion_tokens=len(generated),
                                          parse_error=parse_error, finish_reason="length" if end is None else "stop",
                                          extra={"seed": seed}))
        return completions


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
