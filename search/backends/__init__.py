"""Model backends behind one interface (`base.Backend`): transformers, openai-compatible, teacher.

`load_backend(spec)` picks one from the `--agent` value; heavy imports happen only for the one chosen.
"""

from __future__ import annotations

import os
from typing import Any

from search.backends.base import Backend, BackendError


def backend_kind(spec: str) -> str:
    """`teacher` | `openai` | `transformers` for an `--agent` value."""
    if spec == "teacher":
        return "teacher"
    if spec.startswith("openai:"):
        return "openai"
    return "transformers"


def load_backend(spec: str, *, base_url: str | None = None, rows: dict[str, list[dict[str, Any]]] | None = None,
                 device: str = "auto", concurrency: int = 8, max_batch: int = 16) -> Backend:
    """`teacher`, `openai:MODEL` (with `base_url` or $OPENAI_BASE_URL), or a model folder / Hub id."""
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
        backend = OpenAIBackend(spec.split(":", 1)[1], url, concurrency=concurrency)
        backend.preflight()
        return backend
    from search.backends.transformers import TransformersBackend

    return TransformersBackend(spec, device=device, max_batch=max_batch)
