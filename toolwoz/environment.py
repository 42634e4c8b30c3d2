"""ToolWOZ as an environment of the JOSH engine (`search/environment.py`): read-only tools, goals as
(domain, api), its rule and LLM users. Its rows are the same as before environments existed."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import duckdb

from toolwoz import rewards
from toolwoz.schemas import API_DEFS, END_CONVERSATION, TOOL_NAMES, tool_schemas
from toolwoz.tasks import SPLITS, Task, check_split, task_key
from toolwoz.tools import ToolCall, ToolEnv, ToolRequest
from toolwoz.user_llm import LLMUser
from toolwoz.user_rule import RuleUser

SYSTEM_PROMPT = (
    "You are a travel agent in Cambridge. Help the customer find and book restaurants, hotels, attractions "
    "and trains. Use the tools to search and book; never make up results. Ask for details you need, offer "
    "what you found, book only what the customer wants, and give the booking reference."
)
REACT_SYSTEM_PROMPT = """You are a travel agent in Cambridge who helps customers with restaurants, hotels, \
attractions and trains. Every output is one or more commands, each ended by <COMMAND_END>:
PLAN <your reasoning> <COMMAND_END>
APICALL {{"name": "<api>", "parameters": {{...}}}} <COMMAND_END>
SPEAK <what you say to the customer> <COMMAND_END>
Start with PLAN, then APICALL or SPEAK. SPEAK ends your turn. After an APICALL you receive APIRETURN with the \
result. All parameters are optional strings; never invent parameters or results. The APIs:
{apis}"""


class ToolWOZ:
    """The ToolWOZ environment over a `ToolEnv` (its DuckDB tables and tasks)."""

    name = "toolwoz"
    end_token = END_CONVERSATION
    protocols = ("tools", "react")
    users = ("rule", "llm")
    scripted_agents: tuple[str, ...] = ()  # the teacher is a backend (search/backends/teacher.py)
    writes = False
    splits = SPLITS

    def __init__(self, tools: ToolEnv):
        self.tools = tools

    @classmethod
    def from_connection(cls, con: duckdb.DuckDBPyConnection) -> "ToolWOZ":
        return cls(ToolEnv.from_connection(con))

    @property
    def tasks(self) -> dict[str, Task]:
        return self.tools.tasks

    @property
    def rows(self) -> dict[str, list[dict[str, Any]]]:
        return self.tools.rows

    def tasks_in(self, split: str) -> list[Task]:
        """The split's tasks in the order runs take them (sorted ids); UnknownSplit for a bad name."""
        check_split(split)
        return sorted((t for t in self.tasks.values() if split in t.splits), key=lambda t: t.task_id)

    def task_key(self, text: str) -> str:
        return task_key(text)

    def system_prompt(self, protocol: str = "tools") -> str:
        if protocol == "react":
            apis = "\n".join(f"- {n}({', '.join(API_DEFS[n][0])})" for n in TOOL_NAMES)
            return REACT_SYSTEM_PROMPT.format(apis=apis)
        return SYSTEM_PROMPT

    def tool_schemas(self) -> list[dict[str, Any]]:
        return tool_schemas()

    def tool_request(self, name: Any, arguments: Any, *, task: Task, branch: Any, pos: int,
                     settings: Any) -> ToolRequest:
        return ToolRequest(name, arguments, task.task_id, settings.semantics, settings.results)

    def call_many(self, requests: Sequence[ToolRequest]) -> list[ToolCall]:
        return self.tools.call_many(requests)

    def ends_conversation(self, call: ToolCall) -> bool:
        return False

    def goals_met(self, task: Task, calls: Sequence[ToolCall], open_goals: Sequence[Any]) -> list[Any]:
        return rewards.goals_met(task, calls, open_goals)

    def goal_row(self, goal: tuple[str, str]) -> tuple[str, str]:
        return goal

    def episode_reward(self, task: Task, branch: Any, agent_messages: Sequence[str]) -> float | None:
        return None  # ToolWOZ's reward is the share of goals credited (rollouts.reward)

    def state_changes(self, rollout_id: str) -> list[dict[str, Any]]:
        return []

    def forget(self, rollout_id: str) -> None:
        pass

    @staticmethod
    def user(kind: str, task: Task, seed: int, complete: Any) -> RuleUser | LLMUser:
        """`rule`: the agenda-based user of the task's goal; `llm`: a chat model playing the customer."""
        if kind == "rule":
            return RuleUser(task.goal, seed)
        return LLMUser(task.message, complete)

    def scripted_agent(self, name: str, task: Task) -> Callable[..., dict[str, Any]]:
        raise KeyError(name)
