"""`factory export` end to end: a real teacher harvest exported, loaded back with `datasets`, pushed to a local Hub."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from factory.cli import cli
from tests.conftest import one_line_error, query, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def harvested(tmp_path_factory, template) -> Path:
    """A warehouse with one teacher harvest of 10 val_harvest tasks (every rollout rewarded, no failed siblings)."""
    root = tmp_path_factory.mktemp("export")
    path = root / "w.duckdb"
    shutil.copy(template, path)  # ToolWOZ built once for the session
    result = run("harvest", "--agent", "teacher", "--split", "val_harvest", "--limit", "10",
                 "-w", str(path), env={"FACTORY_HOME": str(root / "home")})
    assert result.returncode == 0, result.stderr
    return path


def export(wh: Path, *args: str, env: dict[str, str] | None = None):
    return run("export", *args, "-w", str(wh), env={"HF_TOKEN": "", **(env or {})})


def view_rows(wh: Path, view: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return con.sql(f"select * from {view}").to_arrow_table().to_pylist()
    finally:
        con.close()


def load(out: Path, tmp_path: Path):
    import datasets

    return datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))


def test_sft_round_trips_through_load_dataset(harvested, tmp_path):
    out = tmp_path / "sft"
    result = export(harvested, "sft", "--out", str(out))
    assert result.returncode == 0, result.stderr
    expected = {r["rollout_id"]: r for r in view_rows(harvested, "sft")}
    assert len(expected) == 10
    assert f"wrote {out}: 10 rows in 1 shard(s)" in result.stdout
    assert f'load_dataset("{out}")' in result.stdout

    ds = load(out, tmp_path)
    assert list(ds) == ["train"]
    train = ds["train"]
    assert train.num_rows == 10
    assert train.column_names == ["rollout_id", "run_id", "task_id", "reward", "messages", "tools"]
    tool_calls = 0
    for row in train:
        assert row == expected[row["rollout_id"]]
        for message in row["messages"]:
            for call in message["tool_calls"] or []:
                assert isinstance(json.loads(call["function"]["arguments"]), dict)
                tool_calls += 1
        assert {t["function"]["name"] for t in json.loads(row["tools"])} >= {"search_train", "book_hotel"}
    assert tool_calls >= 10


def test_card_front_matter_and_body(harvested, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    out = tmp_path / "sft"
    assert export(harvested, "sft", "--out", str(out), "-p", "min_reward", "0.5").returncode == 0
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit"
    assert data["task_categories"] == ["text-generation"]
    assert set(data["tags"]) == {"tool-calling", "dialogue", "josh", "toolwoz"}
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    features = datasets.Features._from_yaml_list(data["dataset_info"]["features"])
    assert features == load(out, tmp_path)["train"].features
    assert data["dataset_info"]["splits"][0]["num_examples"] == 10

    run_id, beam, seed, semantics = query(harvested, "select run_id, beam, seed, semantics from runs")[0]
    assert (beam, seed, semantics) == (8, 0, "fixed")
    body = card.text
    assert "One row per rollout with reward >= min_reward" in body  # the view file's leading comment
    assert f"| {run_id} | harvest | teacher | rule | teacher | tools | val_harvest | 8 | 0 | fixed |" in body
    assert "10 rows in 1 Parquet shard(s)" in body
    assert "- `min_reward` = `0.5`" in body
    assert "CREATE OR REPLACE VIEW sft AS" in body
    assert '"beam": 8' in body  # the run's settings


def test_kto_trl_columns_and_shards(harvested, tmp_path):
    out = tmp_path / "kto"
    result = export(harvested, "kto", "--out", str(out), "--columns", "trl", "--shard-rows", "40")
    assert result.returncode == 0, result.stderr
    n = query(harvested, "select count(*) from kto")[0][0]
    assert n > 80  # every assistant turn of 10 golden paths
    shards = sorted((out / "data").iterdir())
    k = -(-n // 40)
    assert [p.name for p in shards] == [f"train-{i:05d}-of-{k:05d}.parquet" for i in range(k)]
    assert [pq.read_metadata(p).num_rows for p in shards] == [40] * (k - 1) + [n - 40 * (k - 1)]

    train = load(out, tmp_path)["train"]
    assert train.column_names == ["prompt", "completion", "label", "tools"]
    assert train.num_rows == n
    good = sum(train["label"])
    assert 0 < good == query(harvested, "select count(*) from kto where label")[0][0]
    assert all(len(c) == 1 and c[0]["role"] == "assistant" for c in train["completion"])
    card = (out / "README.md").read_text()
    assert f"Labels: {good} desirable" in card
    run_id = query(harvested, "select run_id from runs")[0][0]
    assert f"| {run_id} | harvest |" in card and card.count(f" | {n} |") == 1  # run_id read though not exported


def test_query_export(harvested, tmp_path):
    out = tmp_path / "q"
    sql = "select task_id, messages from sft order by task_id limit 3 -- three"
    result = export(harvested, sql, "--out", str(out))
    assert result.returncode == 0, result.stderr
    train = load(out, tmp_path)["train"]
    assert train.num_rows == 3 and train.column_names == ["task_id", "messages"]
    assert "select task_id, messages from sft order by task_id limit 3" in (out / "README.md").read_text()


def test_bad_inputs_exit_2(harvested, tmp_path):
    unknown = export(harvested, "sfft", "--out", str(tmp_path / "x"))
    assert unknown.returncode == 2
    assert one_line_error(unknown) == ('Error: unknown view \'sfft\'; dataset views: sft, kto, dpo, trajectories '
                                       '(or pass a query, e.g. "select * from runs")')
    empty = export(harvested, "sft", "--out", str(tmp_path / "x"), "-p", "min_reward", "2")
    assert empty.returncode == 2
    assert one_line_error(empty) == \
        "Error: no rows in sft: harvest first or lower the minimum reward (-p min_reward 0.5)"
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))  # nothing half-written left
    bad_sql = export(harvested, "selec 1", "--out", str(tmp_path / "x"))
    assert bad_sql.returncode == 2 and 'syntax error at or near "selec"' in one_line_error(bad_sql)

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    refused = export(harvested, "sft", "--out", str(taken))
    assert refused.returncode == 2
    assert one_line_error(refused) == \
        f"Error: --out {taken} is not empty; pass --force to replace its README.md and data/"
    assert export(harvested, "sft", "--out", str(taken), "--force").returncode == 0
    assert sorted(p.name for p in taken.iterdir()) == ["README.md", "data", "notes.txt"]
    # --force replaces only what an export wrote: its card and its shards, never another file under data/
    (taken / "data" / "mine.parquet").write_bytes(b"not ours")
    assert export(harvested, "sft", "--out", str(taken), "--force", "--shard-rows", "4").returncode == 0
    shards = sorted(p.name for p in (taken / "data").iterdir())
    assert "mine.parquet" in shards and all(n == "mine.parquet" or n.endswith("-of-00003.parquet") for n in shards)
    (taken / "README.md").write_text("# my own notes\n")
    foreign = export(harvested, "sft", "--out", str(taken), "--force")
    assert foreign.returncode == 2 and "did not write" in one_line_error(foreign)
    assert (taken / "README.md").read_text() == "# my own notes\n"

    no_token = export(harvested, "sft", "--out", str(tmp_path / "y"), "--push", "user/ds")
    assert no_token.returncode == 2
    assert "HF_TOKEN" in one_line_error(no_token)
    assert not (tmp_path / "y").exists()  # checked before any work


def test_help_has_example():
    result = CliRunner().invoke(cli, ["export", "--help"])
    assert result.exit_code == 0
    assert "Example:\n" in result.output and "factory export sft --out" in result.output


# -- --push against a local server speaking the Hub's upload API -------------------------------------------------

class FakeHub(ThreadingHTTPServer):
    """The endpoints huggingface_hub 2.x calls for `create_repo` + `upload_folder` of small files:
    create, README validation, preupload (every file answered `regular`, so no LFS/xet transfer) and
    the NDJSON commit, whose base64 file contents are kept in `files`."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.created: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.unexpected: list[str] = []
        self.authorization: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        hub = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        hub.authorization.add(self.headers.get("Authorization", ""))
        path = self.path.split("?")[0]
        parts = path.strip("/").split("/")  # api datasets NS NAME (preupload|commit) REVISION
        if path == "/api/repos/create":
            payload = json.loads(body)
            hub.created.append(payload)
            self._reply(200, {"url": f"{hub.url}/datasets/{payload['organization']}/{payload['name']}"})
        elif path == "/api/validate-yaml":
            self._reply(200, {"errors": [], "warnings": []})
        elif len(parts) == 6 and parts[:2] == ["api", "datasets"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                        for f in files]})
        elif len(parts) == 6 and parts[:2] == ["api", "datasets"] and parts[4] == "commit":
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    hub.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    hub.unexpected.append(f"commit item {item['key']}")
            repo = "/".join(parts[2:4])
            self._reply(200, {"commitUrl": f"{hub.url}/datasets/{repo}/commit/{'0' * 40}",
                              "commitOid": "0" * 40, "pullRequestUrl": None})
        else:
            hub.unexpected.append(f"POST {self.path}")
            self._reply(404, {"error": "not served by the test hub"})

    def do_GET(self) -> None:
        # huggingface_hub's best-effort user-agent registry (not part of the upload); it treats 404 as "none"
        if self.path != "/api/agent-harnesses":
            self.server.unexpected.append(f"GET {self.path}")
        self._reply(404, {"error": "not served by the test hub"})


@pytest.fixture()
def hub() -> Iterator[FakeHub]:
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_push_uploads_the_folder(harvested, tmp_path, hub):
    out = tmp_path / "kto"
    out.mkdir()
    (out / "notes.txt").write_text("not for the Hub")
    result = export(harvested, "kto", "--out", str(out), "--shard-rows", "50", "--force",
                    "--push", "user/ds", "--private",
                    env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_dummy", "HF_HOME": str(tmp_path / "hf-home")})
    assert result.returncode == 0, result.stderr
    assert hub.unexpected == []
    assert hub.created == [{"name": "ds", "organization": "user", "type": "dataset", "visibility": "private"}]
    assert hub.authorization == {"Bearer hf_dummy"}
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".txt"}
    assert len(local) >= 3 and "README.md" in local
    assert hub.files == local  # README and every shard, byte for byte
    assert f"pushed to {hub.url}/datasets/user/ds" in result.stdout
    assert 'load_dataset("user/ds", split="train")' in local["README.md"].decode()


def test_push_network_failure_exits_1(harvested, tmp_path):
    from tests.conftest import free_port

    result = export(harvested, "sft", "--out", str(tmp_path / "sft"), "--push", "user/ds",
                    env={"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_TOKEN": "hf_dummy",
                         "HF_HOME": str(tmp_path / "hf-home")})
    assert result.returncode == 1
    assert one_line_error(result).startswith("Error: cannot reach the Hub at http://127.0.0.1:")
    assert (tmp_path / "sft" / "README.md").exists()  # the export itself stands; re-run with --force to retry
