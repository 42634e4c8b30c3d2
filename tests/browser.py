"""Headless Chromium (Debian's `chromium`) for the page tests: a screenshot, the DOM after the page's script
ran, and every console message the page logged.

Chromium prints each console message to stderr as `...:INFO:CONSOLE:<line>] "<text>", source: <url>` when run
with `--enable-logging=stderr --v=0`, whatever its level; our pages log nothing, so any such line is a failure.
The pages also turn a resource that fails to load into a console error.
"""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--virtual-time-budget=3000"]
CONSOLE = re.compile(r":CONSOLE(?::\d+|\(\d+\))\] (.*)$")


def need_chromium() -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: `apt-get install -y chromium` (as root, `make test` and .ci/run "
                    "install it)")
    return CHROMIUM


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [need_chromium(), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int] = (1400, 1000)) -> list[str]:
    """Render `page` to `png`; returns the console messages it logged."""
    result = _chromium(page, profile, f"--screenshot={png}", f"--window-size={size[0]},{size[1]}")
    assert png.is_file(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    return [m.group(1) for line in result.stderr.splitlines() if (m := CONSOLE.search(line))]


def dom(page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran (`--dump-dom`)."""
    result = _chromium(page, profile, "--dump-dom")
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


def pixel_stddev(png: Path) -> float:
    """Standard deviation of the screenshot's grey levels: 0 for a blank page."""
    from PIL import Image, ImageStat

    with Image.open(png) as image:
        return ImageStat.Stat(image.convert("L")).stddev[0]


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value or "" for name, value in attrs if name in ("src", "href")]


def external_links(text: str) -> list[str]:
    """Every src / href of the page that is neither inline (`data:`) nor an anchor (`#...`)."""
    parser = _Links()
    parser.feed(text)
    return [link for link in parser.links if not link.startswith(("data:", "#"))]
