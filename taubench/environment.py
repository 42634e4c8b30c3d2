"""τ-bench retail or airline as an environment of the JOSH engine (the interface of `search/environment.py`).

Model agents get the domain's `wiki.md` as system prompt and `tools.json` as tools, nothing else. Goals are the
task's gold tool actions (JOSH's turn reward: a call equal to a not-yet-credited one); the episode reward is
τ-bench's, of the branch the rollout ends with. Tool calls run on their branch's state (`taubench/state.py`):
the base tables once, each branch's writes as rows.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import duckdb

import sql
from taubench import data, rewards
from taubench.env import TERMINATE_TOOLS, TauCall, TauEnv, TauRequest
from taubench.errors import UnknownTask
from taubench.oracle import OracleAgent
from taubench.state import Branch
from taubench.users import STOP, ScriptedUser, llm_user_messages

Goal = tuple[str, str]  # (domain, "i:tool"): the i-th gold action


class TauTaskView:
    """A τ-bench task as the engine sees it: its goals are the gold tool actions."""

    def __init__(self, task: data.TauTask):
        self.task = task
        self.task_id = task.task_id
        self.actions = [(i, a) for i, a in enumerate(task.actions) if a.name != data.RESPOND]

    @property
    def n_goals(self) -> int:
        return len(self.actions)

    def goals(self) -> list[Goal]:
        return [(self.task.domain, f"{i}:{a.name}") for i, a in self.actions]


class LLMUser:
    """τ-bench's LLM user: the task's instruction in its system prompt, `###STOP###` ends."""

    def __init__(self, instruction: str, complete: Callable[[list[dict[str, str]]], Any], max_turns: int = 30):
        self.instruction, self.complete, self.max_turns = instruction, complete, max_turns

    async def reply(self, history: Sequence[dict[str, str]]) -> str:
        if sum(m["role"] == "user" for m in history) >= self.max_turns:
            return STOP
        text = (await self.complete(llm_user_messages(self.instruction, history))).strip()
        return text or STOP


class TauBench:
    """One τ-bench domain (`retail` or `airline`) over an in-memory copy of its tables."""

    end_token = STOP
    protocols = ("tools",)
    users = ("rule", "llm")
    scripted_agents = ("oracle",)
    writes = True

    def __init__(self, env: TauEnv):
        self.env = env
        self.name = env.domain
        self.splits = data.SPLITS[env.domain]
        self.tasks = {tid: TauTaskView(t) for tid, t in env.tasks.items()}

    @classmethod
    def from_warehouse(cls, con: duckdb.DuckDBPyConnection, domain: str) -> "TauBench":
        """The domain over an in-memory copy of the warehouse's τ-bench tables (runs never hold the file)."""
        memory = duckdb.connect(":memory:", config={"threads": 1})
        data.create_schema(memory)
        other = [d for d in data.DOMAINS if d != domain]
        for (table,) in con.execute(sql.load("taubench/tables")).fetchall():
            if any(table.startswith(f"taubench_{d}_") for d in other):
                continue
            rows = con.table(table)
            if "domain" in rows.columns:  # tables that hold both domains (base rows, tasks, policy)
                rows = rows.filter(duckdb.ColumnExpression("domain") == duckdb.ConstantExpression(domain))
            memory.register("_copied", rows.arrow())
            memory.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _copied")  # table: a name from the catalog
            memory.unregister("_copied")
        return cls(TauEnv.open(memory, domain))

    def tasks_in(self, split: str) -> list[TauTaskView]:
        """The split's tasks in index order; UnknownTask for a split the domain does not have."""
        if split not in self.splits:
            raise UnknownTask(f"τ-bench {self.name} has no split {split!r}; choose one of {', '.join(self.splits)}")
        return sorted((t for t in self.tasks.values() if t.task.split == split), key=lambda t: t.task.index)

    def task_key(self, text: str) -> str:
        return text

    def system_prompt(self, protocol: str = "tools") -> str:
        return self.env.wiki

    def tool_schemas(self) -> list[dict[str, Any]]:
        return self.env.tool_schemas

    def tool_request(self, name: Any, arguments: Any, *, task: Any, branch: Any, pos: int,
                     settings: Any) -> TauRequest:
        return TauRequest(str(name), arguments, Branch(branch.rollout_id, tuple(branch.path)), pos)

    def call_many(self, requests: Sequence[TauRequest]) -> list[TauCall]:
        return self.env.call_many(requests)

    def ends_conversation(self, call: TauCall) -> bool:
        return call.name in TERMINATE_TOOLS

    def goals_met(self, task: TauTaskView, calls: Sequence[TauCall], open_goals: Sequence[Goal]) -> list[Goal]:
        return rewards.goals_met(task.task, calls, open_goals)

    def goal_row(self, goal: Goal) -> tuple[str, str]:
        return goal

    def episode_reward(self, task: TauTaskView, branch: Any, agent_messages: Sequence[str]) -> float:
        return rewards.episode_reward(self.env, task.task, Branch(branch.rollout_id, tuple(branch.path)),
                                      list(agent_messages)).reward

    def state_changes(self, rollout_id: str) -> list[dict[str, Any]]:
        """The rollout's writes as `state_changes` rows (`seq` orders one call's writes)."""
        rows, seq = [], {}
        for r in self.env.state_changes(rollout_id):
            at = (r["node_id"], r["pos"])
            seq[at] = seq.get(at, -1) + 1
            rows.append({"rollout_id": r["rollout_id"], "node_id": r["node_id"], "pos": r["pos"], "seq": seq[at],
                         "table_name": r["tbl"], "key": r["key"], "before": r["before"], "after": r["after"]})
        return rows

    def forget(self, rollout_id: str) -> None:
        self.env.forget(rollout_id)

    @staticmethod
    def user(kind: str, task: TauTaskView, seed: int, complete: Any) -> ScriptedUser | LLMUser:
        """`rule`: the scripted customer (deterministic, CPU); `llm`: τ-bench's LLM user through `complete`."""
        if kind == "rule":
            return ScriptedUser(task.task, seed)
        return LLMUser(task.task.instruction, complete)

    def scripted_agent(self, name: str, task: TauTaskView) -> Callable[[list[dict[str, Any]], int, float],
                                                                        dict[str, Any]]:
        """`oracle`: knows the task's gold actions (privileged: tests, examples and negatives); at temperature
        > 0 it perturbs arguments and order, seeded per branch."""
        if name != "oracle":
            raise KeyError(name)
        return lambda messages, seed, temperature: OracleAgent(task.task, seed, temperature).next_message(messages)

