"""Model folders appear whole or not at all: written into a staging folder beside the target, then renamed.

A command killed while saving (`kill -9`, a full disk) leaves only `.NAME.staging` (and, when it died between
the two renames of a replacement, `.NAME.old`, the previous complete folder). No command loads those names,
and the next `staged(target)` removes the staging folder and puts a stranded previous folder back.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def staging_dir(target: Path) -> Path:
    """Where a new `target` is written before it is renamed into place."""
    return target.with_name(f".{target.name}.staging")


def _old_dir(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def clean_leftovers(target: Path) -> None:
    """Remove what a killed `staged(target)` left: the staging folder; a previous folder moved aside goes back."""
    shutil.rmtree(staging_dir(target), ignore_errors=True)
    old = _old_dir(target)
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(target)


@contextmanager
def staged(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; when the block succeeds it replaces `target` (two renames on one file
    system), when it fails (or is interrupted) it is removed and `target` is left as it was."""
    target = target.expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    stage = staging_dir(target)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = _old_dir(target)
    if target.exists():
        target.rename(old)
    stage.rename(target)
    shutil.rmtree(old, ignore_errors=True)
