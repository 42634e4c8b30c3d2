"""The JOSH tree for one task: branch agent turns, collapse onto the first rewarded branch, repeat.

A node is one step of one branch: the agent's turn (assistant messages, tool calls and results) plus the
user's reply that followed it; the root holds the system prompt and the user's opening. Each step:
1. expand: while 2 x live leaves <= beam every live leaf gets two children, else one (width 1, 2, 4, 8, 8...);
2. agent turn for every new leaf (all leaves of all rollouts are batched by the backend);
3. reward check of each leaf's tool calls against the open goals; collapse onto the target leaf (policy
   `first` | `fewest-tokens` | `random`): rewarded leaves and ancestors are successful, the target and its
   ancestors golden, its goals credited, every other live branch ends as `pruned`;
4. user turn for every live leaf; `END_CONVERSATION` ends a leaf.
Stops when every goal is done (unless `finish_dialogue`), no leaf is live, or after `max_turns` agent turns
(the rollout's end reason is then `max_steps`, the name its rows have always had).
An evaluation is the same engine at beam 1 with `finish_dialogue`.
While a leaf that has ended its agent turn (2.) waits for its siblings, the first model call of its next-step
children is requested ahead (`search/ahead.py`): a schedule only, the tree and its rows are the same without it
(`ahead=False`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from search.agent import PROTOCOLS, Turn, agent_turn, model_request
from search.ahead import AheadBackend
from search.backends.base import Backend, Message, SamplingParams
from search.environment import Branch, Goal, Task, Tools, ToolSettings, TurnTools, User
from toolwoz.clock import utc_now
from toolwoz.tools import RESULTS
from toolwoz.values import storable, to_json

COLLAPSE_POLICIES = ("first", "fewest-tokens", "random")


@dataclass(frozen=True)
class SearchConfig:
    """How one rollout searches. The field names are the `factory harvest` / `factory eval` flags
    (`seed_policy` is `--seed-policy`) and what `factory runs show` prints; click takes each flag's help from
    the field's metadata. Named presets below: HARVEST (the defaults), EVALUATION, and the PARITY overrides."""

    # -- the tree
    beam: int = field(default=8, metadata={"help": "Live branches per task (1 -> 2 -> 4 -> ... up to BEAM)."})
    max_turns: int = field(default=15, metadata={"help": "Agent turns per conversation branch."})
    max_calls_per_turn: int = field(default=3, metadata={"help": "Tool calls the agent may make in one turn."})
    collapse: str = field(default="first", metadata={
        "help": "Which rewarded branch the tree collapses onto (`first` = the reference)."})
    # -- sampling
    temperature: float = field(default=1.0, metadata={"help": "Agent sampling temperature (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Agent nucleus sampling threshold."})
    max_new_tokens: int = field(default=256, metadata={"help": "Tokens the agent may generate per model call."})
    seed: int = field(default=0, metadata={"help": "Run seed; every branch derives its own."})
    seed_policy: str = field(default="distinct", metadata={
        "help": "`distinct`: a recorded seed per branch; `shared`: every sibling the same (the reference)."})
    # -- environment and protocol
    semantics: str = field(default="fixed", metadata={
        "help": "Tool and reward semantics: `fixed` (ours) or `parity` (the reference exactly)."})
    protocol: str = field(default="tools", metadata={
        "help": "Agent protocol: native tool calls, or the reference's PLAN/APICALL/SPEAK text."})
    results: str = field(default="full", metadata={
        "help": "What a search shows the agent: `full` (up to 3 rows, every field the API returns) or `compact` "
                "(1 row, only the fields it takes to present and book: for small contexts). Default: the "
                "model's own preference (`factory_results` in its config.json), else full."})
    # -- what counts and what is kept
    credit: str = field(default="all", metadata={
        "help": "Credit every goal the target's turn met, or only the first (the reference)."})
    finish_dialogue: bool = field(default=False, metadata={
        "help": "After the last goal, let the user close the conversation."})
    unrewarded: str = field(default="keep", metadata={
        "help": "Store the branches grown after the last collapse (negative evidence) or drop them (the reference)."})
    serial: bool = field(default=False, metadata={
        "help": "Step one branch at a time, one task at a time: the reference's schedule (benchmarks)."})

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"SearchConfig.{name} must be one of {', '.join(allowed)}, "
                                 f"not {getattr(self, name)!r}")
        if self.beam < 1 or self.max_turns < 1:
            raise ValueError("SearchConfig.beam and max_turns must be at least 1")


CHOICES = {"collapse": COLLAPSE_POLICIES, "seed_policy": ("distinct", "shared"), "credit": ("all", "first"),
           "unrewarded": ("keep", "drop"), "semantics": ("fixed", "parity"), "results": RESULTS,
           "protocol": tuple(PROTOCOLS)}
HARVEST = SearchConfig()  # JOSH: beam 8, temperature 1, stop once every goal is met
EVALUATION = SearchConfig(beam=1, temperature=0.0, finish_dialogue=True)  # one greedy conversation per task
PARITY = {"semantics": "parity", "seed_policy": "shared", "credit": "first", "unrewarded": "drop"}  # the reference


@dataclass
class Node:
    node_id: int
    parent: "Node | None"
    step: int
    seed: int | None
    turn: Turn = field(default_factory=Turn)
    messages: list[Message] = field(default_factory=list)  # what this node added (deltas)
    stats: list[dict[str, Any]] = field(default_factory=list)
    children: list["Node"] = field(default_factory=list)
    ended: bool = False
    end_reason: str | None = None
    error: str | None = None
    is_successful: bool = False
    is_golden: bool = False
    matched: list[Goal] = field(default_factory=list)

    @property
    def path(self) -> list["Node"]:
        node, out = self, []
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def history(self) -> list[Message]:
        return [m for n in self.path for m in n.messages]

    def end(self, reason: str, error: str | None = None) -> None:
        if not self.ended:
            self.ended, self.end_reason, self.error = True, reason, error


@dataclass
class RolloutResult:
    """Everything one rollout produced, as rows for the warehouse tables."""

    rollout: dict[str, Any]
    nodes: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    rewards: list[dict[str, Any]]
    state_changes: list[dict[str, Any]] = field(default_factory=list)  # the tree's writes (environments that write)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        tables = {"rollouts": [self.rollout], "nodes": self.nodes, "messages": self.messages,
                  "tool_calls": self.tool_calls, "rewards": self.rewards}
        return tables | ({"state_changes": self.state_changes} if self.state_changes else {})


# Characters of one agent reply the user simulator reads: what one user turn may cost is bounded whatever the
# agent says (a 2 MB reply once held a conversation for minutes). Normal replies are far shorter (256 tokens).
USER_READS = 4000


def user_view(visible: list[dict[str, str]]) -> list[dict[str, str]]:
    """The visible conversation as the user simulator reads it: each agent reply cut to its first `USER_READS`
    characters. The stored message keeps the whole reply; the user's next message records how much it did not
    read (`messages.unread_chars`)."""
    return [{**m, "content": m["content"][:USER_READS]}
            if m["role"] == "assistant" and len(m["content"]) > USER_READS else m for m in visible]


def branch_seed(run_seed: int, task_id: str, sample: int, node_id: int) -> int:
    """A stable 31-bit seed per (run, task, sample, node): siblings differ by construction."""
    digest = hashlib.sha256(f"{run_seed}|{task_id}|{sample}|{node_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class Rollout:
    """One JOSH search (or, at beam 1, one conversation) over one task."""

    def __init__(self, task: Task, agent: Backend, user: User, tools: Tools, config: SearchConfig,
                 *, rollout_id: str, run_id: str, sample: int = 0, ahead: bool = True):
        self.task, self.user, self.run_tools, self.cfg = task, user, tools, config
        self.env = tools.env
        batched = getattr(agent, "batched", False)  # a backend that answers at once has no batch to fill
        self.ahead = AheadBackend(agent) if ahead and batched and config.beam > 1 and not config.serial else None
        self.agent: Backend = self.ahead or agent
        self._step_leaves: list[Node] = []  # this step's new leaves, in tree order
        self._turns_running = 0  # of those, leaves still in their agent turn
        self._collapsing = False  # a leaf of this step met a goal: the tree collapses after it
        self._replies: dict[int, str] = {}  # node id -> the user's reply, computed for a request ahead
        self.protocol = PROTOCOLS[config.protocol](self.env)
        self.rollout_id, self.run_id, self.sample = rollout_id, run_id, sample
        self.nodes: list[Node] = []
        self.open_goals: list[Goal] = task.goals()
        self.credited: list[tuple[Node, Goal]] = []
        self.steps = 0
        self.rng = random.Random(branch_seed(config.seed, task.task_id, sample, -1))

    def _new_node(self, parent: Node | None, step: int) -> Node:
        node_id = len(self.nodes)
        node = Node(node_id, parent, step, self._seed(node_id))
        if parent is not None:
            parent.children.append(node)
        self.nodes.append(node)
        return node

    def _seed(self, node_id: int) -> int:
        seed_id = node_id if self.cfg.seed_policy == "distinct" else 0
        return branch_seed(self.cfg.seed, self.task.task_id, self.sample, seed_id)

    def _params(self, seed: int | None) -> SamplingParams:
        return SamplingParams(self.cfg.temperature, self.cfg.top_p, self.cfg.max_new_tokens, seed)

    def live_leaves(self) -> list[Node]:
        return [n for n in self.nodes if not n.children and not n.ended]

    async def _user_turn(self, node: Node) -> None:
        try:
            text = self._replies.pop(node.node_id, None)
            if text is None:
                reply = self.user.reply(user_view(self.protocol.visible(node.history())))
                text = await reply if asyncio.iscoroutine(reply) else reply
        except Exception as e:  # a failing user simulator ends this branch; the error is kept
            node.end("error", f"user simulator: {type(e).__name__}: {e}")
            return
        node.messages.append({"role": "user", "content": text})
        spoken = [m["content"] for m in self.protocol.visible(node.messages) if m["role"] == "assistant"]
        unread = sum(max(len(t) - USER_READS, 0) for t in spoken)  # what `user_view` cut of this turn's replies
        node.stats.append({"unread_chars": unread} if unread else {})
        if self.env.end_token in text:
            node.end("user_ended")

    async def _agent_turn(self, node: Node) -> None:
        tools = TurnTools(self.env, self.task, Branch(self.rollout_id, tuple(n.node_id for n in node.path)),
                          ToolSettings(self.cfg.semantics, self.cfg.results), self.run_tools)
        turn = await agent_turn(self.agent, self.protocol, node.parent.history() if node.parent else [],
                                tools=tools, params=self._params(node.seed), max_calls=self.cfg.max_calls_per_turn)
        node.turn = turn
        node.messages.extend(turn.messages)
        node.stats.extend(turn.stats)
        if turn.end in ("error", "context_overflow", "transferred"):
            node.end(turn.end, turn.error)
        self._turns_running -= 1
        if self.ahead is not None:
            self._request_ahead(node)

    def _request_ahead(self, node: Node) -> None:
        """While siblings are still in their turns, request the first model call of `node`'s next-step
        children as they will be if no leaf of this step ends or meets a goal (see `search/ahead.py`)."""
        if self._collapsing or node.ended or not self._turns_running or self.steps >= self.cfg.max_turns:
            return
        if node.turn.calls and self.env.goals_met(self.task, node.turn.calls, self.open_goals):
            self._collapsing = True  # only the target's children will exist: no guess can come true
            self.ahead.drop()
            return
        try:
            reply = self.user.reply(user_view(self.protocol.visible(node.history())))
        except Exception:  # the real user turn meets it again and records it
            return
        if not isinstance(reply, str):  # an LLM user: a guess would cost its calls
            if asyncio.iscoroutine(reply):
                reply.close()
            return
        self._replies[node.node_id] = reply
        if self.env.end_token in reply:
            return
        history = [*node.history(), {"role": "user", "content": reply}]
        width = 2 if 2 * len(self._step_leaves) <= self.cfg.beam else 1
        first = len(self.nodes) + self._step_leaves.index(node) * width
        for node_id in range(first, first + width):
            request = model_request(history, self.protocol.request_tools(), self._params(self._seed(node_id)))
            self.ahead.request(request, self.steps + 1)

    async def _each(self, step: Any, nodes: list[Node]) -> None:
        """Run `step` for every node: all at once (batched by the backend), or one by one (`serial`)."""
        if self.cfg.serial:
            for node in nodes:
                await step(node)
        else:
            await asyncio.gather(*(step(node) for node in nodes))

    def _target(self, rewarded: list[Node]) -> Node:
        if self.cfg.collapse == "fewest-tokens":
            return min(rewarded, key=lambda n: (n.turn.completion_tokens, n.node_id))
        if self.cfg.collapse == "random":
            return self.rng.choice(rewarded)
        return rewarded[0]  # the reference: first in tree order

    def _collapse(self, leaves: list[Node]) -> None:
        for leaf in leaves:
            if leaf.turn.calls and not (leaf.ended and leaf.end_reason == "error"):
                leaf.matched = self.env.goals_met(self.task, leaf.turn.calls, self.open_goals)
        rewarded = [leaf for leaf in leaves if leaf.matched]
        if not rewarded:
            return
        target = self._target(rewarded)
        for leaf in rewarded:
            for n in leaf.path:
                n.is_successful = True
        for n in target.path:
            n.is_golden = True
        gained = target.matched if self.cfg.credit == "all" else target.matched[:1]
        self.credited += [(target, g) for g in gained]
        self.open_goals = [g for g in self.open_goals if g not in gained]
        for leaf in self.live_leaves():
            if leaf is not target:
                leaf.end("pruned")

    async def run(self) -> RolloutResult:
        try:
            return await self._search()
        finally:
            if self.ahead is not None:
                self.ahead.drop()  # guesses still waiting or queued, also when the search failed

    async def _search(self) -> RolloutResult:
        started = utc_now()
        root = self._new_node(None, 0)
        root.messages.append({"role": "system", "content": self.protocol.system_prompt()})
        root.stats.append({})
        await self._user_turn(root)
        end_reason = "max_steps"
        while True:
            if not self.open_goals and not self.cfg.finish_dialogue:
                end_reason = "all_goals"
                break
            live = self.live_leaves()
            if not live:
                end_reason = "user_ended" if any(n.end_reason == "user_ended" for n in self.nodes) else "no_live_leaf"
                break
            if self.steps >= self.cfg.max_turns:
                break
            self.steps += 1
            width = 2 if 2 * len(live) <= self.cfg.beam else 1
            children = [self._new_node(leaf, self.steps) for leaf in live for _ in range(width)]
            self._step_leaves, self._turns_running, self._collapsing = children, len(children), False
            self._replies = {}
            await self._each(self._agent_turn, children)
            if self.ahead is not None:
                self.ahead.drop(keep_sent_for=self.steps + 1)
            self._collapse(children)
            if not self.open_goals and not self.cfg.finish_dialogue:
                for leaf in self.live_leaves():
                    leaf.end("all_goals")
                continue
            await self._each(self._user_turn, self.live_leaves())
        for leaf in self.live_leaves():
            leaf.end("max_steps")
        return self._result(started, end_reason)

    def _result(self, started: datetime, end_reason: str) -> RolloutResult:
        total = self.task.n_goals
        done = len(self.credited)
        errors = [n.error for n in self.nodes if n.error]
        rollout = {
            "rollout_id": self.rollout_id, "run_id": self.run_id, "task_id": self.task.task_id,
            "sample": self.sample, "status": "failed" if errors else "done", "reward": done / total if total else 1.0,
            "goals_total": total, "goals_done": done, "n_nodes": 0, "n_steps": self.steps,
            "end_reason": end_reason if not (errors and len(self.nodes) <= 2) else "error",
            "prompt_tokens": sum(n.turn.prompt_tokens for n in self.nodes),
            "completion_tokens": sum(n.turn.completion_tokens for n in self.nodes),
            "started_at": started, "finished_at": utc_now(), "error": errors[0] if errors else None,
        }
        credited = {(n.node_id, g) for n, g in self.credited}
        nodes, messages, calls, rewards = [], [], [], []
        kept = self.nodes
        if self.cfg.unrewarded == "drop":  # the reference never stores the tree grown after the last collapse
            last = max((n.step for n, _ in self.credited), default=0)
            kept = [n for n in self.nodes if n.step <= last or n.is_golden]
        for n in kept:
            nodes.append({"rollout_id": self.rollout_id, "node_id": n.node_id,
                          "parent_id": n.parent.node_id if n.parent else None,
                          "path": [p.node_id for p in n.path], "depth": len(n.path) - 1, "created_step": n.step,
                          "seed": n.seed, "ended": n.ended, "end_reason": n.end_reason,
                          "is_successful": n.is_successful, "is_golden": n.is_golden, "error": n.error})
            for pos, (m, stat) in enumerate(zip(n.messages, n.stats)):
                messages.append({"rollout_id": self.rollout_id, "node_id": n.node_id, "pos": pos,
                                 "role": m["role"], "content": storable(m.get("content")),
                                 "tool_calls": to_json(m["tool_calls"]) if m.get("tool_calls") else None,
                                 "tool_call_id": m.get("tool_call_id"), **stat})
            for row in n.turn.call_rows:
                calls.append({"rollout_id": self.rollout_id, "node_id": n.node_id, **row})
            for goal in n.matched:
                domain, name = self.env.goal_row(goal)
                rewards.append({"rollout_id": self.rollout_id, "node_id": n.node_id, "step": n.step, "goal": name,
                                "domain": domain, "credited": (n.node_id, goal) in credited})
        rollout["n_nodes"] = len(nodes)
        if (episode := self._episode_reward()) is not None:
            rollout["episode_reward"] = episode
        return RolloutResult(rollout, nodes, messages, calls, rewards, self.env.state_changes(self.rollout_id))

    def final_branch(self) -> Node | None:
        """The conversation the rollout ends with: the last golden node, else the first deepest leaf."""
        golden = [n for n in self.nodes if n.is_golden]
        leaves = [n for n in self.nodes if not n.children]
        if golden or leaves:
            return max(golden, key=lambda n: n.step) if golden else max(leaves, key=lambda n: (n.step, -n.node_id))
        return None

    def _episode_reward(self) -> float | None:
        """The environment's own episode reward of the final branch (τ-bench's), None where it has none."""
        node = self.final_branch()
        if node is None:
            return None
        said = [m["content"] for m in self.protocol.visible(node.history()) if m["role"] == "assistant"]
        return self.env.episode_reward(self.task, Branch(self.rollout_id, tuple(n.node_id for n in node.path)),
                                       said)


async def run_rollout(task: Task, agent: Backend, user: User, tools: Tools, config: SearchConfig, *,
                      rollout_id: str, run_id: str, sample: int = 0) -> RolloutResult:
    """Run one rollout; an unexpected failure becomes a `failed` rollout row, never a crash."""
    rollout = Rollout(task, agent, user, tools, config, rollout_id=rollout_id, run_id=run_id, sample=sample)
    try:
        return await rollout.run()
    except Exception as e:  # a bad rollout is data: keep what the tree has and say why it stopped
        result = rollout._result(utc_now(), "error")
        result.rollout.update(status="failed", error=f"{type(e).__name__}: {e}")
        return result
    finally:
        rollout.env.forget(rollout_id)  # the tree's writes are in the result's rows by now

