"""Chat templates for models whose own template cannot serve the `tools` protocol.

`chatml_tools.jinja` (package data beside this module) is ChatML with tools: the tool schemas in the system turn,
tool calls as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (what `search/backends/parsing.py` reads),
tool results as `<tool_response>` blocks, and every assistant turn inside `{% generation %}` so TRL's
assistant-only loss finds it. `tools_template(own)` says when a model gets it instead of its own: when its
template is ChatML (`<|im_start|>`) and renders nothing of the tools it is given (SmolLM2-Instruct's does that).
Strings in, strings out: callers read a model's template however suits them (GGUF metadata, a folder's files).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

CHATML_TOOLS_FILE = Path(__file__).with_name("chatml_tools.jinja")
_PROBE_TOOL = "factory_probe_tool_7f3a"  # a name no template prints unless it renders the tools it is given


@cache
def chatml_tools() -> str:
    """The text of `chatml_tools.jinja`."""
    return CHATML_TOOLS_FILE.read_text().strip()


def is_chatml(template: str) -> bool:
    return "<|im_start|>" in template


def renders_tools(template: str) -> bool:
    """Does `template` put the tools it is given into the prompt? (A template that fails to render counts as
    rendering them: it is left alone, and its own error shows where it is used.)"""
    from transformers.utils.chat_template_utils import render_jinja_template

    tool = {"type": "function", "function": {"name": _PROBE_TOOL, "description": "probe",
                                             "parameters": {"type": "object", "properties": {}}}}
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        rendered, _ = render_jinja_template([messages], tools=[tool], chat_template=template,
                                            add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template's raise_exception, an undefined variable, ...
        return True
    return _PROBE_TOOL in rendered[0]


def tools_template(own: str | None) -> str | None:
    """`chatml_tools()` for a ChatML template that ignores `tools`; None to keep `own` (also when there is none:
    a model without a chat template keeps failing with its own error)."""
    if not own or not is_chatml(own) or renders_tools(own):
        return None
    return chatml_tools()
