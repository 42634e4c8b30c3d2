"""A folder that appears whole or not at all: written in a staging folder beside it, then put in its place.

`replacing(out)` yields `.<name>.export-<random>` beside `out`; when the block ends without an error, the staging
folder takes `out`'s place in one step: a rename when `out` is absent or empty, else an atomic exchange of the two
(Linux `renameat2(RENAME_EXCHANGE)`), after which the staging name holds the old folder and is deleted. Where the
system cannot exchange, the old folder is renamed aside (`...-old`) first, the new one renamed in, then the old one
deleted. Whatever moment a kill hits, `out` is the complete old folder or the complete new one (or, in the fallback's
moment between two renames, absent, with the old one aside), and `clean(out)`, which every export runs first, puts
an old folder aside back and deletes every staging folder a dead process left. A living process holds an `flock` on
its staging folder (and on the old folder it replaces), so a concurrent `clean` leaves them alone.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from factory.errors import UserError

OLD_SUFFIX = "-old"


def prefix(out: Path) -> str:
    """Names of `out`'s staging folders start with this: `.<name>.export-`."""
    return f".{out.name}.export-"


def _lock(path: Path) -> int | None:
    """An open descriptor of folder `path` holding an exclusive flock; None if a living process holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def leftovers(out: Path) -> list[Path]:
    """The staging folders beside `out` (a dead export's or a living one's): `.<name>.export-` and 8 letters,
    digits or `_` (ours are hex; tempfile's, which earlier versions used, take the others), maybe `-old`."""
    if not out.parent.is_dir():
        return []
    name = re.compile(re.escape(prefix(out)) + r"[a-z0-9_]{8}(?:" + OLD_SUFFIX + ")?")
    return sorted(p for p in out.parent.iterdir() if name.fullmatch(p.name) and p.is_dir() and not p.is_symlink())


def clean(out: Path) -> None:
    """Undo what a killed export left beside `out`: an old folder renamed aside while `out` is missing goes back
    to `out`; every other staging folder no living process holds is deleted."""
    out = Path(os.path.realpath(out))
    for path in leftovers(out):
        try:
            fd = _lock(path)
        except FileNotFoundError:  # its own process removed it meanwhile
            continue
        if fd is None:
            continue  # a living export's
        try:
            if path.name.endswith(OLD_SUFFIX) and not os.path.lexists(out) and (path / "README.md").is_file():
                os.rename(path, out)  # killed between the fallback's two renames: the old folder is whole
            else:
                shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where this system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), str(b))


def carry_over(old: Path, new: Path, skip: Callable[[Path], bool]) -> None:
    """Put every file of `old` whose relative path `skip` does not claim into `new` as a hard link (a copy where
    linking fails), so `old` stays untouched until the swap; symbolic links are recreated, folders made."""
    for root, dirs, files in os.walk(old):
        rel = Path(root).relative_to(old)
        (new / rel).mkdir(exist_ok=True)
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            src, dst = Path(root) / name, new / rel / name
            if skip(rel / name) or os.path.lexists(dst):
                continue
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)


@contextmanager
def replacing(out: Path, keep_from_old: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty staging folder beside `out` (symbolic links resolved); when the block ends without an error
    it becomes `out` in one step, `out`'s files that `keep_from_old(relative path)` claims carried into it first.
    On an error the staging folder goes and `out` stays as it was."""
    out = Path(os.path.realpath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{prefix(out)}{secrets.token_hex(4)}"
    tmp.mkdir()
    fd = _lock(tmp)
    old_fd = None
    try:
        yield tmp
        if not out.is_dir() or not any(out.iterdir()):
            os.rename(tmp, out)  # onto an absent or empty folder: one step
            return
        old_fd = _lock(out)
        if old_fd is None:
            raise UserError(f"another factory export is replacing {out}; wait for it to finish")
        if keep_from_old is not None:
            carry_over(out, tmp, lambda rel: not keep_from_old(rel))
            os.chmod(tmp, out.stat().st_mode)
        if _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # the old folder, under the staging name now
            return
        aside = tmp.with_name(tmp.name + OLD_SUFFIX)
        os.rename(out, aside)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(aside, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        for held in (fd, old_fd):
            if held is not None:
                os.close(held)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
