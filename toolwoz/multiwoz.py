"""Find and read MultiWOZ 2.x (a folder or the official zip).

Resolution order: an explicit path, env `FACTORY_MULTIWOZ`, the path a command was last given
(`remember`, kept in `$FACTORY_HOME/multiwoz-path`), the cache `$FACTORY_HOME/multiwoz`, then a download of
the official archive from `FACTORY_MULTIWOZ_URL` into the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toolwoz.errors import DataError

DEFAULT_URL = "https://github.com/budzianowski/multiwoz/raw/master/data/MultiWOZ_2.1.zip"
DB_FILES = {d: f"{d}_db.json" for d in ("restaurant", "hotel", "attraction", "train")}
REQUIRED_FILES = ("data.json", "testListFile.txt", "valListFile.txt", *DB_FILES.values())


def factory_home() -> Path:
    """`$FACTORY_HOME`, default `~/.cache/josh-factory`."""
    return Path(os.environ.get("FACTORY_HOME") or Path.home() / ".cache" / "josh-factory")


def _remembered_file() -> Path:
    return factory_home() / "multiwoz-path"


def remember(path: str | os.PathLike) -> None:
    """Record `path` (absolute) so later resolutions without a path find it; best effort."""
    try:
        _remembered_file().parent.mkdir(parents=True, exist_ok=True)
        _remembered_file().write_text(str(Path(path).expanduser().resolve()) + "\n")
    except OSError:
        pass  # a read-only FACTORY_HOME: resolution falls back to the env and the cache


def remembered() -> Path | None:
    """The path `remember` recorded, if it still exists."""
    try:
        text = _remembered_file().read_text().strip()
    except OSError:
        return None
    return Path(text) if text and Path(text).exists() else None


@dataclass(frozen=True)
class MultiWOZ:
    """The parts of MultiWOZ ToolWOZ needs, as plain Python data."""

    source: str
    dialogues: dict[str, dict[str, Any]]  # id with `.json` suffix -> {goal, log}
    test_ids: list[str]
    val_ids: list[str]
    dbs: dict[str, list[dict[str, Any]]]  # domain -> rows in file order


class _Files:
    """Read named files from a folder or a zip (members may sit under any prefix)."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        self.members: dict[str, str] = {}
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"{path} is not a readable zip archive ({e})") from e
            for member in self.zip.namelist():
                base = member.rsplit("/", 1)[-1]
                if base in REQUIRED_FILES and "__MACOSX" not in member:
                    self.members.setdefault(base, member)

    def missing(self) -> list[str]:
        if self.zip is not None:
            return [f for f in REQUIRED_FILES if f not in self.members]
        return [f for f in REQUIRED_FILES if not (self.path / f).is_file()]

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(self.members[name])
        return (self.path / name).read_bytes()


def _looks_complete(path: Path) -> bool:
    return path.exists() and not _Files(path).missing()


def download(url: str, dest: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Download the MultiWOZ zip at `url` and unpack its required files into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / "multiwoz.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except (OSError, ValueError) as e:
            raise DataError(f"could not download MultiWOZ from {url} ({e})") from e
        files = _Files(archive)
        if missing := files.missing():
            raise DataError(f"the archive at {url} lacks {', '.join(missing)}")
        for name in REQUIRED_FILES:
            (Path(tmp) / name).write_bytes(files.read(name))
            shutil.move(str(Path(tmp) / name), dest / name)
    return dest


def resolve(path: str | os.PathLike | None = None, *, allow_download: bool = True,
            progress: Callable[[int, int], None] | None = None) -> Path:
    """Where MultiWOZ is, by the resolution order above; raises DataError saying what to pass."""
    if path:
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError(f"MultiWOZ path {p} does not exist; pass the folder holding data.json or the zip")
        return p
    if env := os.environ.get("FACTORY_MULTIWOZ"):
        p = Path(env).expanduser()
        if not p.exists():
            raise DataError(f"FACTORY_MULTIWOZ={env} does not exist; point it at the MultiWOZ folder or zip")
        return p
    if (known := remembered()) is not None:
        return known
    cache = factory_home() / "multiwoz"
    if _looks_complete(cache):
        return cache
    if not allow_download:
        raise DataError("MultiWOZ not found: pass --multiwoz PATH or set FACTORY_MULTIWOZ")
    url = os.environ.get("FACTORY_MULTIWOZ_URL", DEFAULT_URL)
    try:
        return download(url, cache, progress)
    except DataError as e:
        raise DataError(f"MultiWOZ not found and {e}: pass --multiwoz PATH or set FACTORY_MULTIWOZ") from e


def _json(files: _Files, name: str) -> Any:
    try:
        return json.loads(files.read(name))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{files.path / name} is not valid JSON ({e})") from e


def _id_list(files: _Files, name: str) -> list[str]:
    try:
        text = files.read(name).decode()
    except UnicodeDecodeError as e:
        raise DataError(f"{files.path / name} is not a text file of dialogue ids") from e
    return [line.strip() for line in text.splitlines() if line.strip()]


def load(path: str | os.PathLike | None = None, **resolve_kwargs: Any) -> MultiWOZ:
    """Resolve and read MultiWOZ; any missing or malformed file is one DataError naming it."""
    root = resolve(path, **resolve_kwargs)
    files = _Files(root)
    if missing := files.missing():
        raise DataError(f"{root} lacks {', '.join(missing)}; expected the MultiWOZ 2.1 layout")
    dialogues = _json(files, "data.json")
    if not isinstance(dialogues, dict) or not all(
        isinstance(d, dict) and isinstance(d.get("goal"), dict) and isinstance(d.get("log"), list)
        for d in dialogues.values()
    ):
        raise DataError(f"{root / 'data.json'} is not MultiWOZ dialogues (id -> {{goal, log}})")
    dbs = {}
    for domain, name in DB_FILES.items():
        rows = _json(files, name)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{root / name} is not a list of rows")
        dbs[domain] = rows
    return MultiWOZ(str(root), dialogues, _id_list(files, "testListFile.txt"),
                    _id_list(files, "valListFile.txt"), dbs)
