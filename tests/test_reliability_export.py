"""Reliability of `factory export` (issue 25): an export appears whole or not at all.

The real CLI runs in a subprocess on a temporary warehouse and is SIGKILLed at points of its work, each found by
watching its staging folder beside --out (not by time): the folder made, its first shard, half the shards, all of
them (the card being built), the card written. Once into an empty --out, once with --force over an older export.
After every kill, `datasets.load_dataset(--out)` either finds nothing or loads all the rows of one export (the old
or the new), its card agreeing with its shards; after a re-run, the export is whole and no staging folder is left.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from factory.store.writer import Writer
from tests.conftest import FACTORY, run

ROWS = 240  # one row per shard (--shard-rows 1): a kill can land between any two shards
OLD_ROWS = 7
QUERY = "select rollout_id, run_id, reward from rollouts order by rollout_id"
POINTS = {  # kill point -> is it reached, given the staging folders beside --out (the last one leaves a folder)
    "card written": lambda folders: any((f / "README.md").exists() for f in folders),
    "staging folder made": lambda folders: bool(folders),
    "first shard": lambda folders: _shards(folders) >= 1,
    "all shards, card being built": lambda folders: _shards(folders) >= ROWS,
    "half the shards": lambda folders: _shards(folders) >= ROWS // 2,
}
ALWAYS_REACHED = list(POINTS)[1:]  # before the card, which waits for `datasets` to import


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A warehouse with one run of ROWS rollouts, written through the real writer."""
    path = tmp_path_factory.mktemp("export-kills") / "w.duckdb"
    with Writer(path, "test") as writer:
        writer.append({"runs": [{"run_id": "eval-a", "kind": "eval", "created_at": "2026-01-01 00:00:00",
                                 "status": "done", "config": "{}", "agent_model": "teacher", "split": "val"}],
                       "rollouts": [{"rollout_id": f"eval-a/T{i:04d}.json/0", "run_id": "eval-a",
                                     "task_id": f"T{i:04d}.json", "sample": 0, "status": "done", "reward": 1.0,
                                     "goals_total": 1, "goals_done": 1, "n_nodes": 1, "n_steps": 1}
                                    for i in range(ROWS)]})
    return path


@pytest.fixture(scope="module")
def old_export(source, tmp_path_factory) -> Path:
    """A whole export of the first OLD_ROWS rows, made once: tests copy it into place."""
    out = tmp_path_factory.mktemp("old") / "ds"
    made = run(*export_args(source, out, f"{QUERY} limit {OLD_ROWS}"), env={"HF_TOKEN": ""})
    assert made.returncode == 0, made.stderr
    return out


def export_args(wh: Path, out: Path, query: str = QUERY, *extra: str) -> list[str]:
    return ["export", query, "--out", str(out), "--shard-rows", "1", "-w", str(wh), *extra]


def staging_folders(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.export-")]


def _shards(folders: list[Path]) -> int:
    count = 0
    for folder in folders:
        try:
            count += len(os.listdir(folder / "data"))
        except FileNotFoundError:  # not made yet, or renamed into place meanwhile
            pass
    return count


def kill_when(args: list[str], out: Path, reached: Callable[[list[Path]], bool]) -> bool:
    """Run `factory ARGS`; SIGKILL it the moment `reached(staging folders)` holds. True if it was killed, False if
    it ended first."""
    proc = subprocess.Popen([*FACTORY, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_TOKEN": ""})
    try:
        while proc.poll() is None:
            try:
                hit = reached(staging_folders(out))
            except FileNotFoundError:  # a folder renamed or deleted while we looked
                hit = False
            if hit:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.0005)
        assert proc.returncode == 0, proc.stderr.read()
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def loaded_rows(out: Path, cache: Path) -> int | None:
    """Rows `datasets.load_dataset(out)` loads (None: it finds nothing), checked against the card and shards."""
    import datasets
    from huggingface_hub import DatasetCard

    if not out.exists():
        return None  # (load_dataset would look for a Hub repo of that name)
    try:
        train = datasets.load_dataset(str(out), cache_dir=str(cache))["train"]
    except (FileNotFoundError, ValueError):
        assert not list(out.rglob("*.parquet")), "shards that do not load"
        return None
    card = DatasetCard.load(out / "README.md").data.to_dict()
    assert card["dataset_info"]["splits"][0]["num_examples"] == train.num_rows
    shards = sorted((out / "data").glob("train-*.parquet"))
    assert all(p.name.endswith(f"-of-{len(shards):05d}.parquet") for p in shards)
    assert len(set(train["rollout_id"])) == train.num_rows
    return train.num_rows


@pytest.mark.parametrize("force", [False, True], ids=["into an empty --out", "--force over an older export"])
def test_a_killed_export_leaves_nothing_that_loads_but_a_whole_one(source, old_export, tmp_path, force) -> None:
    out = tmp_path / "ds"
    killed = []
    for i, (point, reached) in enumerate(POINTS.items()):
        if out.exists() and (not force or loaded_rows(out, tmp_path / f"cache-before-{i}") != OLD_ROWS):
            shutil.rmtree(out)  # the last kill came after the swap: put back what this chain starts from
        if force and not out.exists():
            shutil.copytree(old_export, out)
        if kill_when(export_args(source, out, QUERY, *(["--force"] if force else [])), out, reached):
            killed.append(point)
        rows = loaded_rows(out, tmp_path / f"cache-{i}")
        assert rows in ({OLD_ROWS, ROWS} if force else {None, ROWS}), (point, rows)
    assert [p for p in killed if p in ALWAYS_REACHED] == ALWAYS_REACHED, killed
    print(f"killed at: {', '.join(killed)}")

    assert staging_folders(out), "the last kill (half the shards) left its staging folder"
    again = run(*export_args(source, out, QUERY, "--force"), env={"HF_TOKEN": ""})
    assert again.returncode == 0, again.stderr
    assert loaded_rows(out, tmp_path / "cache-again") == ROWS
    assert staging_folders(out) == []


def test_an_old_export_moved_aside_comes_back_and_a_living_staging_folder_stays(source, old_export, tmp_path):
    """The moment between the fallback's two renames (a system without an atomic exchange): --out is gone, the old
    export lies aside, the new one in its staging folder. The next export puts the old one back before anything
    else and deletes the dead staging folder, but not the one a living export holds (its flock)."""
    out = tmp_path / "ds"
    shutil.copytree(old_export, tmp_path / ".ds.export-0a1b2c3d")
    shutil.copytree(old_export, tmp_path / ".ds.export-0a1b2c3d-old")
    living = tmp_path / ".ds.export-1e1e1e1e"
    living.mkdir()
    fd = os.open(living, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as an export running beside this one holds it
        refused = run(*export_args(source, out), env={"HF_TOKEN": ""})  # no --force: the old export is in the way
        assert refused.returncode == 2 and "is not empty" in refused.stderr
        assert staging_folders(out) == [living]
    finally:
        os.close(fd)
    assert loaded_rows(out, tmp_path / "cache") == OLD_ROWS


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic exchange", "fallback: aside, in, delete"])
def test_replacing_keeps_other_files_and_leaves_no_staging(tmp_path, monkeypatch, exchange) -> None:
    """`staging.replacing` over a folder holding an older card and shards and someone's notes, by renameat2's
    exchange and by the fallback a system without it takes (the exchange reported unsupported)."""
    from factory.store import staging

    if not exchange:
        monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    out = tmp_path / "ds"
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text("old card")
    (out / "data" / "train-00000-of-00002.parquet").write_text("old")
    (out / "data" / "train-00001-of-00002.parquet").write_text("old")
    (out / "data" / "mine.parquet").write_text("mine")
    (out / "notes").mkdir()
    (out / "notes" / "a.txt").write_text("notes")
    os.symlink("notes/a.txt", out / "link.txt")
    ours = ("README.md", "train-00000-of-00002.parquet", "train-00001-of-00002.parquet")
    with staging.replacing(out, keep_from_old=lambda rel: rel.name not in ours) as tmp:
        (tmp / "data").mkdir()
        (tmp / "data" / "train-00000-of-00001.parquet").write_text("new")
        (tmp / "README.md").write_text("new card")
        assert (out / "README.md").read_text() == "old card"  # nothing changes until the block ends
    files = {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}
    assert files == {"README.md": "new card", "data/mine.parquet": "mine", "data/train-00000-of-00001.parquet": "new",
                     "link.txt": "notes", "notes/a.txt": "notes"}
    assert (out / "link.txt").is_symlink()
    assert staging_folders(out) == []

    with pytest.raises(RuntimeError):  # a failure inside the block leaves the folder as it was
        with staging.replacing(out) as tmp:
            (tmp / "README.md").write_text("half")
            raise RuntimeError("disk full")
    assert (out / "README.md").read_text() == "new card" and staging_folders(out) == []
