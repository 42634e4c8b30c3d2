"""Finding and reading MultiWOZ: resolution order, zips, the download into the cache, and bad inputs.

Every test runs with `FACTORY_HOME` in a tmp dir, `FACTORY_MULTIWOZ` unset and `FACTORY_MULTIWOZ_URL`
pointing at a closed local port, so nothing here touches the real cache or the internet. Downloads are
served by a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import run
from toolwoz import multiwoz
from toolwoz.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(os.environ.get("FACTORY_MULTIWOZ") or ROOT.parent / "shared" / "multiwoz")
DB_NAMES = ("restaurant_db.json", "hotel_db.json", "attraction_db.json", "train_db.json")
OTHER_FILES = ("taxi_db.json", "police_db.json", "hospital_db.json")  # in the archive, unused by ToolWOZ
ADVICE = "pass --multiwoz PATH or set FACTORY_MULTIWOZ"
ZIP_NAME = "MultiWOZ_2.1.zip"


# -- helpers ----------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _source_bytes(name: str) -> bytes:
    path = SOURCE / name
    if not path.is_file():
        pytest.fail(f"{path} not found; these tests need the MultiWOZ folder (set FACTORY_MULTIWOZ to it)")
    return path.read_bytes()


def _subset(mw: multiwoz.MultiWOZ, n: int) -> dict[str, dict]:
    """n real dialogues, half from the test list and half from the val list."""
    test_ids = {i if i.endswith(".json") else f"{i}.json" for i in mw.test_ids}
    val_ids = {i if i.endswith(".json") else f"{i}.json" for i in mw.val_ids}
    test = sorted(i for i in mw.dialogues if i in test_ids)
    val = sorted(i for i in mw.dialogues if i in val_ids)
    ids = test[: n // 2] + val[: n - n // 2]
    assert len(ids) == n
    return {i: mw.dialogues[i] for i in ids}


def _files(dialogues: dict[str, dict]) -> dict[str, bytes]:
    """The required files: a reduced data.json plus the real list and DB files."""
    out = {"data.json": json.dumps(dialogues).encode()}
    for name in ("testListFile.txt", "valListFile.txt", *DB_NAMES):
        out[name] = _source_bytes(name)
    return out


def _write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _write_zip(path: Path, files: dict[str, bytes], prefix: str = "MultiWOZ_2.1/") -> Path:
    """A zip like the official one: members under a prefix folder, with macOS junk listed first."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr(f"__MACOSX/{prefix}data.json", b"\x00\x05\x16\x07 not the data")
        z.writestr(f"__MACOSX/{prefix}._data.json", b"\x00\x05\x16\x07 resource fork")
        if prefix:
            z.writestr(prefix, b"")
        for name, data in files.items():
            z.writestr(prefix + name, data)
    return path


class _Server:
    """A real HTTP server on 127.0.0.1 serving one folder; records request paths."""

    def __init__(self, directory: Path):
        requests: list[str] = []

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests = requests
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.stopped = False

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.httpd.shutdown()
            self.thread.join(timeout=10)
            self.httpd.server_close()


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated(home, monkeypatch) -> None:
    """Isolate every test: tmp FACTORY_HOME (`home`), no FACTORY_MULTIWOZ, download URL on a closed port."""
    monkeypatch.delenv("FACTORY_MULTIWOZ", raising=False)
    monkeypatch.setenv("FACTORY_MULTIWOZ_URL", f"http://127.0.0.1:{_closed_port()}/{ZIP_NAME}")


@pytest.fixture(scope="session")
def few_dialogues(mw) -> dict[str, dict]:
    """30 real dialogues (15 test, 15 val)."""
    return _subset(mw, 30)


@pytest.fixture(scope="session")
def served_dir(tmp_path_factory, few_dialogues) -> Path:
    """A folder holding a small official-layout zip, for the HTTP server."""
    folder = tmp_path_factory.mktemp("served")
    _write_zip(folder / ZIP_NAME, _files(few_dialogues))
    return folder


@pytest.fixture
def server(served_dir):
    srv = _Server(served_dir)
    yield srv
    srv.stop()


# -- resolution order -------------------------------------------------------------------------------------


def test_explicit_path_beats_env(monkeypatch, tmp_path, mw):
    explicit = _write_folder(tmp_path / "explicit", _files(_subset(mw, 10)))
    from_env = _write_folder(tmp_path / "env", _files(_subset(mw, 20)))
    monkeypatch.setenv("FACTORY_MULTIWOZ", str(from_env))
    assert multiwoz.resolve(explicit) == explicit
    got = multiwoz.load(explicit)
    assert got.source == str(explicit)
    assert len(got.dialogues) == 10
    # The env var is not even looked at when a path is given.
    monkeypatch.setenv("FACTORY_MULTIWOZ", str(tmp_path / "does-not-exist"))
    assert len(multiwoz.load(str(explicit)).dialogues) == 10


def test_env_beats_cache(monkeypatch, tmp_path, home, mw):
    cache = _write_folder(home / "multiwoz", _files(_subset(mw, 10)))
    from_env = _write_folder(tmp_path / "env", _files(_subset(mw, 20)))
    monkeypatch.setenv("FACTORY_MULTIWOZ", str(from_env))
    assert multiwoz.resolve() == from_env
    got = multiwoz.load()
    assert got.source == str(from_env) != str(cache)
    assert len(got.dialogues) == 20


def test_a_remembered_path_beats_the_cache_not_the_env(monkeypatch, tmp_path, home, mw):
    """`--multiwoz PATH` on one command (`factory toolwoz build`) is found by the next ones without it."""
    cache = _write_folder(home / "multiwoz", _files(_subset(mw, 10)))
    given = _write_folder(tmp_path / "given", _files(_subset(mw, 20)))
    multiwoz.remember(given)
    assert (home / "multiwoz-path").read_text().strip() == str(given)
    assert multiwoz.resolve() == given and len(multiwoz.load().dialogues) == 20
    from_env = _write_folder(tmp_path / "env", _files(_subset(mw, 5)))
    monkeypatch.setenv("FACTORY_MULTIWOZ", str(from_env))
    assert multiwoz.resolve() == from_env
    monkeypatch.delenv("FACTORY_MULTIWOZ")
    shutil.rmtree(given)  # a remembered folder that is gone is skipped
    assert multiwoz.remembered() is None and multiwoz.resolve() == cache


def test_the_cli_remembers_the_multiwoz_path(home, tmp_path, mw):
    given = _write_folder(tmp_path / "given", _files(_subset(mw, 10)))
    result = run("toolwoz", "build", "--multiwoz", str(given), "-w", str(tmp_path / "w.duckdb"),
                 env={"FACTORY_HOME": str(home), "FACTORY_MULTIWOZ": ""})
    assert result.returncode == 0, result.stderr
    assert multiwoz.remembered() == given
    # given as $FACTORY_MULTIWOZ (as `make demo` passes it), it is remembered all the same
    other = _write_folder(tmp_path / "other", _files(_subset(mw, 10)))
    result = run("toolwoz", "build", "-w", str(tmp_path / "w2.duckdb"),
                 env={"FACTORY_HOME": str(home), "FACTORY_MULTIWOZ": str(other)})
    assert result.returncode == 0, result.stderr
    assert multiwoz.remembered() == other


def test_cache_beats_download(monkeypatch, home, mw, server):
    cache = _write_folder(home / "multiwoz", _files(_subset(mw, 10)))
    monkeypatch.setenv("FACTORY_MULTIWOZ_URL", server.url(ZIP_NAME))
    got = multiwoz.load()
    assert got.source == str(cache)
    assert len(got.dialogues) == 10
    assert server.requests == []  # the download was never attempted
    assert multiwoz.resolve(allow_download=False) == cache


def test_incomplete_cache_is_replaced_by_download(monkeypatch, home, mw, few_dialogues, server):
    files = _files(_subset(mw, 10))
    del files["valListFile.txt"]
    cache = _write_folder(home / "multiwoz", files)
    monkeypatch.setenv("FACTORY_MULTIWOZ_URL", server.url(ZIP_NAME))
    got = multiwoz.load()
    assert server.requests == [f"/{ZIP_NAME}"]
    assert got.source == str(cache)
    assert set(got.dialogues) == set(few_dialogues)
    assert (cache / "valListFile.txt").read_bytes() == _source_bytes("valListFile.txt")


def test_factory_home_default_is_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FACTORY_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert multiwoz.factory_home() == tmp_path / "user" / ".cache" / "josh-factory"
    monkeypatch.setenv("FACTORY_HOME", str(tmp_path / "elsewhere"))
    assert multiwoz.factory_home() == tmp_path / "elsewhere"


def test_nothing_found_without_download_says_what_to_pass(home):
    with pytest.raises(DataError) as excinfo:
        multiwoz.resolve(allow_download=False)
    assert ADVICE in _one_line_error(excinfo)
    assert not (home / "multiwoz").exists()


# -- zips -------------------------------------------------------------------------------------------------


def test_official_style_zip_loads_like_the_folder(tmp_path, mw):
    files = {name: _source_bytes(name) for name in (*multiwoz.REQUIRED_FILES, *OTHER_FILES)}
    archive = _write_zip(tmp_path / ZIP_NAME, files)
    assert multiwoz.resolve(archive) == archive
    got = multiwoz.load(archive)
    assert got.source == str(archive)
    assert len(got.dialogues) == len(mw.dialogues)
    assert got.dialogues == mw.dialogues
    assert got.test_ids == mw.test_ids and got.val_ids == mw.val_ids
    assert got.dbs == mw.dbs


def test_zip_from_env(monkeypatch, tmp_path, few_dialogues):
    archive = _write_zip(tmp_path / "mw.zip", _files(few_dialogues), prefix="data/MultiWOZ_2.1/")
    monkeypatch.setenv("FACTORY_MULTIWOZ", str(archive))
    got = multiwoz.load()
    assert got.source == str(archive)
    assert got.dialogues == few_dialogues


def test_zip_without_prefix_folder(tmp_path, few_dialogues):
    archive = _write_zip(tmp_path / "flat.zip", _files(few_dialogues), prefix="")
    assert multiwoz.load(archive).dialogues == few_dialogues


# -- download ---------------------------------------------------------------------------------------------


def test_download_into_cache_then_reuse_without_server(monkeypatch, home, few_dialogues, served_dir, server):
    monkeypatch.setenv("FACTORY_MULTIWOZ_URL", server.url(ZIP_NAME))
    progress: list[tuple[int, int]] = []
    got = multiwoz.load(progress=lambda done, total: progress.append((done, total)))
    cache = home / "multiwoz"
    assert got.source == str(cache)
    assert len(got.dialogues) == len(few_dialogues) == 30
    assert got.dialogues == few_dialogues
    assert server.requests == [f"/{ZIP_NAME}"]
    size = (served_dir / ZIP_NAME).stat().st_size
    assert progress and progress[-1] == (size, size)
    # The required files are unpacked at the top of the cache; no archive or temp folder is left.
    names = {p.name for p in cache.iterdir()}
    assert set(multiwoz.REQUIRED_FILES) <= names
    assert not [p for p in cache.iterdir() if p.is_dir() or p.suffix == ".zip"]
    for name in ("testListFile.txt", *DB_NAMES):
        assert (cache / name).read_bytes() == _source_bytes(name)

    server.stop()
    again = multiwoz.load()
    assert again.source == str(cache)
    assert again.dialogues == got.dialogues and again.dbs == got.dbs
    assert server.requests == [f"/{ZIP_NAME}"]


def test_download_from_closed_port_is_a_data_error(monkeypatch, home):
    url = f"http://127.0.0.1:{_closed_port()}/{ZIP_NAME}"
    monkeypatch.setenv("FACTORY_MULTIWOZ_URL", url)
    with pytest.raises(DataError) as excinfo:
        multiwoz.load()
    message = _one_line_error(excinfo)
    assert ADVICE in message
    assert url in message
    cache = home / "multiwoz"
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written


def test_download_404_is_a_data_error(monkeypatch, home, server):
    monkeypatch.setenv("FACTORY_MULTIWOZ_URL", server.url("nothing-here.zip"))
    with pytest.raises(DataError) as excinfo:
        multiwoz.load()
    message = _one_line_error(excinfo)
    assert ADVICE in message
    assert "404" in message
    assert server.requests == ["/nothing-here.zip"]
    cache = home / "multiwoz"
    assert not cache.exists() or not any(cache.iterdir())


def test_download_of_an_incomplete_archive_names_the_missing_file(monkeypatch, tmp_path, home, few_dialogues):
    files = _files(few_dialogues)
    del files["train_db.json"]
    folder = tmp_path / "served-bad"
    folder.mkdir()
    _write_zip(folder / ZIP_NAME, files)
    srv = _Server(folder)
    try:
        monkeypatch.setenv("FACTORY_MULTIWOZ_URL", srv.url(ZIP_NAME))
        with pytest.raises(DataError) as excinfo:
            multiwoz.load()
    finally:
        srv.stop()
    message = _one_line_error(excinfo)
    assert "train_db.json" in message and ADVICE in message
    assert not (home / "multiwoz" / "data.json").exists()


# -- missing and malformed inputs -------------------------------------------------------------------------


def test_missing_explicit_path_names_it(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(missing)
    assert str(missing) in _one_line_error(excinfo)


def test_missing_env_path_names_it(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / ZIP_NAME
    monkeypatch.setenv("FACTORY_MULTIWOZ", str(missing))
    with pytest.raises(DataError) as excinfo:
        multiwoz.load()
    message = _one_line_error(excinfo)
    assert str(missing) in message and "FACTORY_MULTIWOZ" in message


def test_folder_without_data_json_names_it(tmp_path, few_dialogues):
    files = _files(few_dialogues)
    del files["data.json"]
    folder = _write_folder(tmp_path / "mw", files)
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(folder)
    message = _one_line_error(excinfo)
    assert "data.json" in message and str(folder) in message
    assert "train_db.json" not in message and "ListFile" not in message


def test_empty_folder_names_every_missing_file(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(folder)
    message = _one_line_error(excinfo)
    for name in multiwoz.REQUIRED_FILES:
        assert name in message


def test_data_json_not_json_names_it(tmp_path, few_dialogues):
    folder = _write_folder(tmp_path / "mw", {**_files(few_dialogues), "data.json": b'{"PMUL4462.json": {"goal": '})
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(folder)
    assert str(folder / "data.json") in _one_line_error(excinfo)


def test_data_json_not_utf8_names_it(tmp_path, few_dialogues):
    folder = _write_folder(tmp_path / "mw", {**_files(few_dialogues), "data.json": b'{"a": "\xff\xfe\xfa"}'})
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(folder)
    assert str(folder / "data.json") in _one_line_error(excinfo)


@pytest.mark.parametrize("content", [
    [],
    ["PMUL4462.json"],
    {"PMUL4462.json": "a dialogue"},
    {"PMUL4462.json": {"goal": {}}},
    {"PMUL4462.json": {"goal": {}, "log": "not a list"}},
    {"PMUL4462.json": {"goal": [], "log": []}},
])
def test_data_json_that_is_not_dialogues_names_it(tmp_path, few_dialogues, content):
    folder = _write_folder(tmp_path / "mw", {**_files(few_dialogues), "data.json": json.dumps(content).encode()})
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(folder)
    assert str(folder / "data.json") in _one_line_error(excinfo)


@pytest.mark.parametrize("name, content", [
    ("hotel_db.json", b"[{\"name\": \"unterminated"),
    ("train_db.json", b'{"trainID": "TR0001"}'),
    ("restaurant_db.json", b"[1, 2, 3]"),
    ("attraction_db.json", b"\xff\xfe not text"),
])
def test_malformed_db_file_names_it(tmp_path, few_dialogues, name, content):
    folder = _write_folder(tmp_path / "mw", {**_files(few_dialogues), name: content})
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(folder)
    message = _one_line_error(excinfo)
    assert str(folder / name) in message
    assert all(other not in message for other in DB_NAMES if other != name)


def test_non_zip_file_as_path_names_it(tmp_path):
    fake = tmp_path / ZIP_NAME
    fake.write_bytes(b"<!DOCTYPE html><html><body>Sign in to GitHub</body></html>")
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(fake)
    assert str(fake) in _one_line_error(excinfo)


def test_zip_lacking_data_json_names_it(tmp_path, few_dialogues):
    files = _files(few_dialogues)
    del files["data.json"]
    archive = _write_zip(tmp_path / ZIP_NAME, files)  # only the __MACOSX junk is called data.json
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(archive)
    message = _one_line_error(excinfo)
    assert "data.json" in message and str(archive) in message


def test_zip_with_malformed_data_json_names_it(tmp_path, few_dialogues):
    archive = _write_zip(tmp_path / ZIP_NAME, {**_files(few_dialogues), "data.json": b"not json at all"})
    with pytest.raises(DataError) as excinfo:
        multiwoz.load(archive)
    message = _one_line_error(excinfo)
    assert "data.json" in message and str(archive) in message

