"""`factory show`: the terminal tree, one node's conversation and the HTML page of a real teacher harvest,
checked against the warehouse rows; the page rendered in headless Chromium."""

from __future__ import annotations

import hashlib
import html.parser
import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from tests import browser
from tests.conftest import one_line_error, query, run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "warehouse.duckdb.example"
NODE_LINE = re.compile(r"^(?P<guides>[ │├└─]*)#(?P<id>\d+) (?:root|step \d+)")


@pytest.fixture(scope="module")
def harvest(template, tmp_path_factory) -> tuple[Path, str]:
    """A teacher harvest at temperature 1 (so trees have failed siblings), 3 tasks, beam 4."""
    wh = tmp_path_factory.mktemp("show") / "warehouse.duckdb"
    shutil.copy(template, wh)
    result = run("harvest", "--agent", "teacher", "--user", "rule", "--split", "val_harvest", "--limit", "3",
                 "--beam", "4", "--temperature", "1.0", "--json", "-w", str(wh))
    assert result.returncode == 0, result.stderr
    return wh, json.loads(result.stdout)["run_id"]


def rollouts_of(wh: Path, run_id: str) -> list[str]:
    return [r[0] for r in query(wh, "select rollout_id from rollouts where run_id = ? order by rollout_id", [run_id])]


def stored_nodes(wh: Path, rollout_id: str) -> dict[int, tuple[int | None, int, bool]]:
    """node id -> (parent, depth, golden) as the warehouse has them."""
    rows = query(wh, "select node_id, parent_id, depth, is_golden from nodes where rollout_id = ?", [rollout_id])
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def assert_one_golden_path(golden: set[int], nodes: dict[int, tuple[int | None, int, bool]]) -> None:
    """`golden` is exactly the stored golden nodes, and they form one chain from the root."""
    assert golden == {i for i, (_, _, g) in nodes.items() if g}
    chain = sorted(golden, key=lambda i: nodes[i][1])
    assert nodes[chain[0]][0] is None, "the golden path starts at the root"
    assert [nodes[i][0] for i in chain[1:]] == chain[:-1], "each golden node's parent is the one before"


@pytest.mark.slow
def test_terminal_tree_has_one_line_per_node_and_one_golden_path(harvest):
    wh, run_id = harvest
    for rollout_id in rollouts_of(wh, run_id):
        result = run("show", rollout_id, "-w", str(wh))
        assert result.returncode == 0, result.stderr
        lines = {int(m["id"]): (m["guides"], line) for line in result.stdout.splitlines()
                 if (m := NODE_LINE.match(line))}
        nodes = stored_nodes(wh, rollout_id)
        assert sorted(lines) == sorted(nodes), "every node once"
        assert sum(1 for line in result.stdout.splitlines() if NODE_LINE.match(line)) == len(nodes)
        for node_id, (guides, _) in lines.items():
            assert len(guides) == 4 * nodes[node_id][1], f"#{node_id} is drawn at its depth"
        golden = {i for i, (_, line) in lines.items() if "★ golden" in line}
        assert golden, "the teacher earns a reward, so its tree collapsed"
        assert_one_golden_path(golden, nodes)
        # pruned and tool-error labels are the stored ones
        pruned = {r[0] for r in query(wh, "select node_id from nodes where rollout_id = ? and end_reason = 'pruned'",
                                      [rollout_id])}
        assert {i for i, (_, line) in lines.items() if "  pruned" in line} == pruned
        for node_id, kind in query(wh, "select node_id, error_kind from tool_calls where rollout_id = ? and not ok",
                                   [rollout_id]):
            assert f"✗{kind}" in lines[node_id][1]
        assert "golden path #0 → " in result.stdout


@pytest.mark.slow
def test_node_prints_the_whole_conversation_and_run_task_finds_the_rollout(harvest):
    wh, run_id = harvest
    rollout_id = rollouts_of(wh, run_id)[0]
    task = rollout_id.split("/")[1].removesuffix(".json")
    leaf = query(wh, "select max(node_id) filter (is_golden) from nodes where rollout_id = ?", [rollout_id])[0][0]
    result = run("show", "--run", run_id, "--task", task, "--node", str(leaf), "-w", str(wh))
    assert result.returncode == 0, result.stderr
    (messages,) = query(wh, "select messages from trajectories where rollout_id = ? and node_id = ?",
                        [rollout_id, leaf])[0]
    printed = "".join(result.stdout.split())
    for m in messages:
        assert "".join(m["content"].split()) in printed
        for call in m["tool_calls"] or []:
            assert "".join(call["function"]["arguments"].split()) in printed
    path = query(wh, "select path from nodes where rollout_id = ? and node_id = ?", [rollout_id, leaf])[0][0]
    assert [int(x) for x in re.findall(r"^─*\s*#(\d+) (?:root|step)", result.stdout, re.M)] == path


class _Page(html.parser.HTMLParser):
    """The page's node boxes, edges and embedded tree data."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[int, set[str]] = {}
        self.edges: dict[int, set[str]] = {}
        self.data = ""
        self._in_data = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "g" and "data-node" in a:
            self.nodes[int(a["data-node"])] = set(a["class"].split())
        if tag == "path" and "data-child" in a:
            self.edges[int(a["data-child"])] = set(a["class"].split())
        self._in_data = tag == "script" and a.get("id") == "tree-data"

    def handle_data(self, data):
        if self._in_data:
            self.data += data

    def handle_endtag(self, tag):
        self._in_data = False


@pytest.mark.slow
def test_html_names_every_node_marks_one_golden_path_and_carries_the_messages(harvest, tmp_path):
    wh, run_id = harvest
    rollout_id = rollouts_of(wh, run_id)[-1]
    page = tmp_path / "tree.html"
    result = run("show", rollout_id, "--html", str(page), "-w", str(wh))
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert browser.external_links(text) == [], "self-contained: nothing to fetch"
    parsed = _Page()
    parsed.feed(text)
    nodes = stored_nodes(wh, rollout_id)
    assert sorted(parsed.nodes) == sorted(nodes)
    assert_one_golden_path({i for i, classes in parsed.nodes.items() if "golden" in classes}, nodes)
    assert sorted(parsed.edges) == sorted(i for i, (parent, _, _) in nodes.items() if parent is not None)
    golden_edges = {i for i, (parent, _, golden) in nodes.items() if golden and parent is not None}
    assert {i for i, classes in parsed.edges.items() if "golden" in classes} == golden_edges
    data = json.loads(parsed.data)
    stored = query(wh, "select node_id, pos, role, coalesce(content, '') from messages where rollout_id = ? "
                       "order by node_id, pos", [rollout_id])
    embedded = [(int(i), pos, m["role"], m["content"])
                for i, n in sorted(data["nodes"].items(), key=lambda kv: int(kv[0]))
                for pos, m in enumerate(n["messages"])]
    assert embedded == stored


def test_show_reads_the_example_warehouse_without_changing_it(tmp_path):
    digest = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    rollout = "harvest-e5961ad826/MUL0016.json/0"
    result = run("show", rollout, "-w", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "#0 root" in result.stdout and "★ golden" in result.stdout
    assert run("show", rollout.removesuffix(".json/0"), "--html", str(tmp_path / "t.html"),
               "-w", str(EXAMPLE)).returncode == 0
    assert hashlib.sha256(EXAMPLE.read_bytes()).hexdigest() == digest


def test_bad_input_is_one_line_exit_2(tmp_path):
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(EXAMPLE, copy)
    con = duckdb.connect(str(copy))
    con.execute("insert into runs (run_id, kind, created_at, status, config) values "
                "('harvest-empty', 'harvest', now(), 'done', '{}')")
    con.close()
    cases = {("show", "harvest-nope/MUL0016.json/0"): "unknown rollout 'harvest-nope/MUL0016.json/0'",
             ("show", "harvest-"): "is ambiguous",
             ("show", "--run", "nope", "--task", "MUL0016"): "unknown run 'nope'",
             ("show", "--run", "harvest-empty"): "run harvest-empty has no rollouts",
             ("show", "--run", "harvest-e5961ad826"): "pass --task TASK",
             ("show", "--run", "harvest-e5961ad826", "--task", "MUL9999"): "no rollout of task 'MUL9999'",
             ("show", "harvest-e5961ad826/MUL0016.json/0", "--node", "99"): "has no node 99",
             ("show",): "pass a ROLLOUT_ID or --run RUN --task TASK",
             ("show", "harvest-e5961ad826/MUL0016.json/0", "--html", str(tmp_path / "no" / "t.html")):
                 "does not exist"}
    for args, message in cases.items():
        result = run(*args, "-w", str(copy))
        assert result.returncode == 2, (args, result.stderr)
        assert message in one_line_error(result), args


@pytest.mark.slow
def test_page_renders_in_chromium_without_console_errors(harvest, tmp_path):
    browser.need_chromium()
    wh, run_id = harvest
    page = tmp_path / "tree.html"
    assert run("show", rollouts_of(wh, run_id)[0], "--html", str(page), "-w", str(wh)).returncode == 0
    png = tmp_path / "tree.png"
    assert browser.screenshot(page, png, tmp_path / "profile") == []
    assert browser.pixel_stddev(png) > 10, "the screenshot is not blank"
    # the script ran: it selected the deepest golden node and filled the panel with its conversation
    rendered = browser.dom(page, tmp_path / "profile2")
    selected = re.findall(r'<g class="([^"]*)" data-node="(\d+)"', rendered)
    leaf = query(wh, "select max(node_id) filter (is_golden) from nodes where rollout_id = ?",
                 [rollouts_of(wh, run_id)[0]])[0][0]
    assert [int(i) for classes, i in selected if "selected" in classes.split()] == [leaf]
    assert "conversation to this node" in rendered


@pytest.mark.slow
def test_console_errors_are_caught(tmp_path):
    """The console check itself: a page that logs an error and fails to load an image is caught."""
    browser.need_chromium()
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><head><link rel="icon" href="data:,"><script>addEventListener("error", '
                    '(e) => { if (e.target !== window) console.error("failed to load", e.target.src); }, true);'
                    '</script></head><body><p>x</p><img src="missing.png"><script>console.error("boom")</script>'
                    '</body></html>')
    messages = browser.screenshot(page, tmp_path / "bad.png", tmp_path / "profile")
    assert any("boom" in m for m in messages) and any("failed to load" in m for m in messages), messages
