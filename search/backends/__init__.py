"""Model backends behind one interface (`base.Backend`): transformers, vLLM, openai-compatible, teacher.

`load_backend(spec)` picks one from the `--agent` value; heavy imports happen only for the one chosen.
"""

from __future__ import annotations

import os
from typing import Any

from search.backends.base import Backend, BackendError


def backend_kind(spec: str) -> str:
    """`teacher` | `openai` | `vllm` | `transformers` for an `--agent` value."""
    if spec == "teacher":
        return "teacher"
    if spec.startswith("openai:"):
        return "openai"
    if spec.startswith("vllm:"):
        return "vllm"
    return "transformers"


def engine_info(backend: Backend) -> dict[str, Any]:
    """What a backend says about its engine for the run record (vLLM: version, prefix caching, batch
    invariance); empty for the others, so their run ids do not change."""
    return dict(getattr(backend, "engine", None) or {})


def load_backend(spec: str, *, base_url: str | None = None, rows: dict[str, list[dict[str, Any]]] | None = None,
                 device: str = "auto", concurrency: int = 8, max_batch: int = 16,
                 request_timeout_s: float | None = None, chat_template: str | None = None) -> Backend:
    """`teacher`, `openai:MODEL` (with `base_url` or $OPENAI_BASE_URL; `request_timeout_s` per HTTP request),
    `vllm:MODEL` (vLLM's offline engine in this process), or a model folder / Hub id / GGUF file (transformers;
    `chat_template` in place of the tokenizer's own)."""
    kind = backend_kind(spec)
    if kind == "teacher":
        from search.backends.teacher import TeacherBackend

        if rows is None:
            raise BackendError("the teacher needs the ToolWOZ rows to build its lexicon")
        return TeacherBackend(rows)
    if kind == "openai":
        from search.backends.openai import OpenAIBackend

        url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise BackendError(f"{spec} needs --base-url (or OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1")
        timeout = {"timeout_s": request_timeout_s} if request_timeout_s else {}
        backend = OpenAIBackend(spec.split(":", 1)[1], url, concurrency=concurrency, **timeout)
        backend.preflight()
        return backend
    if kind == "vllm":
        from search.backends.vllm import VLLMBackend

        return VLLMBackend(spec.split(":", 1)[1], max_batch=max_batch)
    from search.backends.transformers import TransformersBackend

    return TransformersBackend(spec, device=device, max_batch=max_batch, chat_template=chat_template)
