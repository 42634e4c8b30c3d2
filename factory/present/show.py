"""One JOSH tree as the warehouse stores it, drawn for people: a rich tree in the terminal, one node's whole
conversation, or a self-contained HTML page (inline SVG, inline script, no network).

The tree comes from three queries (`sql/queries/show_*.sql`) on a read-only connection; nothing here computes
a label: golden / successful / pruned / end reasons / rewards are the stored columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb
from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.text import Text
from rich.tree import Tree as RichTree

import sql
from factory.errors import UserError
from factory.store import runs

EXCERPT = 40  # characters of a message shown on a tree line


@dataclass
class Node:
    """One step of one branch: its labels, tool calls, matched goals and the messages it added."""

    node_id: int
    parent_id: int | None
    depth: int
    step: int
    seed: int | None
    ended: bool
    end_reason: str | None
    is_successful: bool
    is_golden: bool
    error: str | None
    tool_calls: list[dict[str, Any]]
    rewards: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)
    children: list[int] = field(default_factory=list)

    def labels(self) -> list[str]:
        """golden / successful / pruned / ended: REASON / error, in that order."""
        labels = ["golden"] * self.is_golden + ["successful"] * self.is_successful
        if self.end_reason == "pruned":
            labels.append("pruned")
        elif self.end_reason:
            labels.append(f"ended: {self.end_reason}")
        if self.error:
            labels.append("error")
        return labels

    def said(self, role: str) -> str | None:
        """The last non-empty text `role` said in this node (the system prompt is never shown)."""
        texts = [m["content"] for m in self.messages if m["role"] == role and (m["content"] or "").strip()]
        return texts[-1] if texts else None


@dataclass
class Tree:
    """A rollout's tree: the rollout row (show_rollout) and its nodes by id."""

    rollout: dict[str, Any]
    nodes: dict[int, Node]

    @property
    def root(self) -> Node:
        return next(n for n in self.nodes.values() if n.parent_id is None)

    def path(self, node_id: int) -> list[int]:
        """Node ids from the root to `node_id`."""
        ids = [node_id]
        while (parent := self.nodes[ids[0]].parent_id) is not None:
            ids.insert(0, parent)
        return ids

    def golden_path(self) -> list[int]:
        """The golden nodes root first (empty when nothing was rewarded); they always form one chain."""
        return sorted((n.node_id for n in self.nodes.values() if n.is_golden), key=lambda i: self.nodes[i].depth)

    def node(self, node_id: int) -> Node:
        if node_id not in self.nodes:
            raise UserError(f"rollout {self.rollout['rollout_id']} has no node {node_id} "
                            f"(nodes {min(self.nodes)}-{max(self.nodes)}); see them with `factory show ROLLOUT_ID`")
        return self.nodes[node_id]


# -- loading ----------------------------------------------------------------------------------------------

def _records(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def resolve_rollout(con: duckdb.DuckDBPyConnection, rollout_id: str | None, run: str | None,
                    task: str | None) -> str:
    """The rollout named by its id (a unique prefix works) or by `--run` and `--task`; UserError otherwise."""
    if rollout_id:
        found = [r[0] for r in con.execute("SELECT rollout_id FROM rollouts WHERE starts_with(rollout_id, ?) "
                                           "ORDER BY rollout_id LIMIT 6", [rollout_id]).fetchall()]
        if rollout_id in found or len(found) == 1:
            return rollout_id if rollout_id in found else found[0]
        if not found:
            raise UserError(f"unknown rollout {rollout_id!r}; list them with "
                            "`factory sql \"select rollout_id, reward from rollouts\"`")
        raise UserError(f"rollout {rollout_id!r} is ambiguous ({', '.join(found[:5])}, ...); give more of the id")
    run_id = runs.resolve_run(con, run)
    found = [r[0] for r in con.execute(
        "SELECT rollout_id FROM rollouts WHERE run_id = ? AND (? IS NULL OR starts_with(task_id, ?)) "
        "ORDER BY task_id, sample LIMIT 6", [run_id, task, task]).fetchall()]
    if len(found) == 1:
        return found[0]
    if not found:
        what = f"no rollout of task {task!r}" if task else "no rollouts"
        raise UserError(f"run {run_id} has {what}; list its tasks with `factory sql -p run {run_id} "
                        "\"select task_id from rollouts where run_id = getvariable('run')\"`")
    tasks = ", ".join(f.split("/")[-2] for f in found[:5])
    raise UserError(f"run {run_id} has several rollouts{f' of task {task!r}' if task else ''} ({tasks}, ...); "
                    "pass --task TASK or the rollout id")


def load_tree(con: duckdb.DuckDBPyConnection, rollout_id: str) -> Tree:
    """Read one rollout's nodes, tool calls, rewards and messages."""
    params = {"rollout_id": rollout_id}
    (rollout,) = _records(con.execute(sql.load("queries/show_rollout"), params))
    nodes = {r["node_id"]: Node(**{**r, "tool_calls": r["tool_calls"] or [], "rewards": r["rewards"] or []})
             for r in _records(con.execute(sql.load("queries/show_nodes"), params))}
    for m in _records(con.execute(sql.load("queries/show_messages"), params)):
        calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                 for c in json.loads(m["tool_calls"] or "[]")]
        nodes[m["node_id"]].messages.append({"role": m["role"], "content": m["content"] or "", "tool_calls": calls,
                                             "tool_call_id": m["tool_call_id"]})
    if not nodes:
        raise UserError(f"rollout {rollout_id} stored no tree (status {rollout['status']}: {rollout['error']}); "
                        "its run's log has the cause")
    for node in nodes.values():
        if node.parent_id is not None:
            nodes[node.parent_id].children.append(node.node_id)
    return Tree(rollout=rollout, nodes=nodes)


# -- terminal ---------------------------------------------------------------------------------------------

def _excerpt(text: str, width: int = EXCERPT) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def call_label(call: dict[str, Any]) -> tuple[str, bool]:
    """`search_hotel ✓2 rows` / `book_hotel ✗no_availability`, and whether the call failed."""
    name = call["name"] or "(unparseable call)"
    if call["ok"]:
        rows = call["n_rows"]
        return (f"{name} ✓" + (f"{rows} row{'s' * (rows != 1)}" if rows is not None else "")), False
    return f"{name} ✗{call['error_kind'] or 'error'}", True


def node_line(tree: Tree, node: Node) -> Text:
    """One line: id, step, labels, tool calls, goals matched, seed, then what the agent and the user said."""
    golden = "bold yellow" if node.is_golden else ""
    line = Text.assemble((f"#{node.node_id}", f"bold {golden}".strip()), " ",
                         ("root" if node.parent_id is None else f"step {node.step}", "cyan"),
                         no_wrap=True, overflow="ellipsis")
    styles = {"golden": "bold black on yellow", "successful": "green", "pruned": "dim", "error": "bold red"}
    for label in node.labels():
        line.append("  ").append(("★ " if label == "golden" else "") + label, styles.get(label, "blue"))
    for call in node.tool_calls:
        label, failed = call_label(call)
        line.append("  ").append(label, "red" if failed else "green")
    for reward in node.rewards:
        line.append(f"  +{reward['goal']}" + (" (credited)" if reward["credited"] else ""), "magenta")
    if node.seed is not None:
        line.append(f"  seed {node.seed}", "dim")
    agent = node.said("assistant")
    if agent is not None:
        line.append("  agent: ", "bold").append(f'"{_excerpt(agent)}"')
    user = node.said("user")
    if user is not None:
        line.append("  user: ", "bold").append(f'"{_excerpt(user)}"')
    return line


def header(tree: Tree) -> Text:
    r = tree.rollout
    golden = tree.golden_path()
    agent = (r["agent"] or "").rstrip("/").split("/")[-1]
    return Text.assemble(
        (r["rollout_id"], "bold"), f"  {r['kind']} run {r['run_id']}, agent {agent}, user {r['user']}, "
        f"beam {r['beam']}\n", f"task {r['task_id']} ({', '.join(r['domains'] or [])}): reward {r['reward']:.4g} "
        f"({r['goals_done']}/{r['goals_total']} goals), ended {r['end_reason']}, {r['n_nodes']} nodes, "
        f"{r['n_steps']} steps; ",
        (f"golden path {' → '.join(f'#{i}' for i in golden)}" if golden else "no golden path (nothing credited)",
         "yellow"))


def terminal_tree(tree: Tree) -> RenderableType:
    """The header and a rich Tree, one line per node, the golden path in yellow."""
    def add(parent: RichTree, node: Node) -> None:
        branch = parent.add(node_line(tree, node), guide_style="yellow" if node.is_golden else "dim")
        for child in node.children:
            add(branch, tree.nodes[child])

    root = tree.root
    top = RichTree(node_line(tree, root), guide_style="yellow" if root.is_golden else "dim")
    for child in root.children:
        add(top, tree.nodes[child])
    return Group(header(tree), top)


def conversation(tree: Tree, node_id: int) -> RenderableType:
    """Every message from the root to `node_id`, each node's part under a rule naming it."""
    parts: list[RenderableType] = [header(tree)]
    colours = {"system": "dim", "user": "bold cyan", "assistant": "bold green", "tool": "bold magenta"}
    for i in tree.path(node_id):
        node = tree.nodes[i]
        title = f"#{i} " + ("root" if node.parent_id is None else f"step {node.step}")
        parts.append(Rule(f"{title}  {'  '.join(node.labels())}", style="yellow" if node.is_golden else "dim"))
        for m in node.messages:
            parts.append(Text(m["role"] + (f" ({m['tool_call_id']})" if m["tool_call_id"] else ""),
                              colours.get(m["role"], "bold")))
            if m["content"]:
                parts.append(Text(m["content"]))
            for call in m["tool_calls"]:
                parts.append(Text(f"→ {call['name']}({call['arguments']})", "yellow"))
    return Group(*parts)


# -- HTML -------------------------------------------------------------------------------------------------

BOX_W, BOX_H, COL, ROW, MARGIN = 150, 36, 185, 46, 16


def layout(tree: Tree) -> dict[int, tuple[float, float]]:
    """Left-to-right tidy layout: x by depth, leaves one row each in depth-first order, a parent centred on
    its children. Returns the top-left pixel corner of each node's box."""
    rows: dict[int, float] = {}
    next_row = 0

    def place(node: Node) -> float:
        nonlocal next_row
        if not node.children:
            rows[node.node_id] = next_row
            next_row += 1
        else:
            ys = [place(tree.nodes[c]) for c in node.children]
            rows[node.node_id] = (ys[0] + ys[-1]) / 2
        return rows[node.node_id]

    place(tree.root)
    return {i: (MARGIN + tree.nodes[i].depth * COL, MARGIN + y * ROW) for i, y in rows.items()}


def _box_text(node: Node) -> str:
    if node.parent_id is None:
        return "opening"
    if node.tool_calls:  # the first call's tool and outcome; the tooltip and the panel say the rest
        first = node.tool_calls[0]
        more = f" +{len(node.tool_calls) - 1}" if len(node.tool_calls) > 1 else ""
        return _excerpt(first["name"] or "(unparseable)", 17) + (" ✓" if first["ok"] else " ✗") + more
    return "says" if node.said("assistant") else (node.end_reason or "—")


def _classes(node: Node) -> str:
    classes = ["node"] + [c for c in ("golden", "successful") if getattr(node, f"is_{c}")]
    if node.end_reason == "pruned":
        classes.append("pruned")
    if node.error or any(not c["ok"] for c in node.tool_calls):
        classes.append("failed")
    return " ".join(classes)


def _script_json(value: Any) -> str:
    """JSON that is safe inside <script>: `<`, `>` and `&` escaped so no text can close the element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def html_page(tree: Tree) -> str:
    """A self-contained page: the tree as inline SVG (golden path highlighted) and each node's conversation
    on click (an inline script reads the embedded JSON). Nothing is loaded from the network."""
    from markupsafe import Markup

    pos = layout(tree)
    boxes = [{"id": i, "x": x, "y": y, "cls": _classes(tree.nodes[i]), "text": _box_text(tree.nodes[i]),
              "step": "root" if tree.nodes[i].parent_id is None else f"step {tree.nodes[i].step}",
              "title": node_line(tree, tree.nodes[i]).plain} for i, (x, y) in sorted(pos.items())]
    edges = []
    for node in tree.nodes.values():
        if node.parent_id is not None:
            (x1, y1), (x2, y2) = pos[node.parent_id], pos[node.node_id]
            x1, y1, y2 = x1 + BOX_W, y1 + BOX_H / 2, y2 + BOX_H / 2
            mid = (x1 + x2) / 2
            golden = node.is_golden and tree.nodes[node.parent_id].is_golden
            edges.append({"d": f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}",
                          "cls": "edge golden" if golden else "edge", "child": node.node_id})
    golden = tree.golden_path()
    data = {"rollout": tree.rollout["rollout_id"], "golden": golden,
            "initial": golden[-1] if golden else tree.root.node_id,
            "nodes": {str(n.node_id): {"parent": n.parent_id, "step": n.step, "seed": n.seed, "labels": n.labels(),
                                       "tool_calls": [call_label(c)[0] for c in n.tool_calls],
                                       "rewards": n.rewards, "messages": n.messages}
                      for n in tree.nodes.values()}}
    width = MARGIN * 2 + max(x for x, _ in pos.values()) + BOX_W
    height = MARGIN * 2 + max(y for _, y in pos.values()) + BOX_H
    return _templates().get_template("show.html.j2").render(
        tree=tree, header=header(tree).plain, boxes=boxes, edges=edges, width=width, height=height,
        box_w=BOX_W, box_h=BOX_H, data=Markup(_script_json(data)))


def _templates():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("factory.present", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined)
