"""A goal-driven customer played by any chat model (the `llm` user simulator).

It sees only the goal's instruction sentences, never the ground truth. The model call is injected
(`complete(messages) -> text`), so this module stays independent of the backends; use temperature 0.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Sequence

from toolwoz.schemas import END_CONVERSATION

Complete = Callable[[list[dict[str, str]]], Awaitable[str]]

SYSTEM = """You are a customer talking to a travel agent in Cambridge. Your goals, in order:
{goals}
Pursue the goals one at a time and reveal your constraints a few at a time, only when they matter. Never \
invent constraints that are not in your goals. If something you asked for is not available, follow your \
goals' fallback. Agree to book only when every constraint holds, and always get the reference number when \
you book. Write only what the customer says, one or two short sentences. When every goal is done, thank \
the agent and write {end}."""
OPENING = "Write your first message to the agent."
REMINDER = ("Stay the customer. Continue with your next unfinished goal; double-check the agent's offer "
            "against your constraints. When everything is done, end with {end}.")


class LLMUser:
    """`reply(history)` asks the model for the customer's next message."""

    def __init__(self, goal_message: Sequence[str], complete: Complete, max_turns: int = 20):
        self.goals = "\n".join(f"- {g}" for g in goal_message)
        self.complete = complete
        self.max_turns = max_turns

    def prompt(self, history: Sequence[dict[str, str]]) -> list[dict[str, str]]:
        """The model's view: our instructions, then the dialogue with roles swapped (the model is the user)."""
        messages = [{"role": "system", "content": SYSTEM.format(goals=self.goals, end=END_CONVERSATION)}]
        if not history:
            return [*messages, {"role": "user", "content": OPENING}]
        swapped = {"user": "assistant", "assistant": "user"}
        messages += [{"role": swapped[m["role"]], "content": m["content"]} for m in history]
        if messages[-1]["role"] != "user":  # the agent said nothing this turn: nudge the model to go on
            messages.append({"role": "user", "content": "(the agent is waiting for you)"})
        # The reminder rides on the last turn: many chat templates allow a system message only first.
        reminder = REMINDER.format(end=END_CONVERSATION)
        messages[-1] = {"role": "user", "content": f"{messages[-1]['content']}\n\n[{reminder}]"}
        return messages

    async def reply(self, history: Sequence[dict[str, str]]) -> str:
        if sum(m["role"] == "user" for m in history) >= self.max_turns:
            return f"Thanks, that is all. {END_CONVERSATION}"
        text = (await self.complete(self.prompt(history))).strip()
        return text or f"Thank you. {END_CONVERSATION}"
