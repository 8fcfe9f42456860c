"""Debian's ``chromium``, headless, for the pages the project renders.

::

    page = open_page(path, tmp_path)          # skips (fails under $CI) without it
    page.dom                                  # the DOM after the page's scripts ran
    page.screenshot                           # a PNG file

Every run gets a fresh profile directory and nothing that phones home
(no sync, component updates, background networking or QUIC), so a page
that loads something from the network shows it by not showing it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.servers import unavailable

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
TIMEOUT = 180


@dataclass
class Page:
    dom: str
    screenshot: Path


def chromium() -> str:
    """The chromium program; skip (fail under $CI) without it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        unavailable("chromium is not installed (apt-get install chromium; "
                     "tools/services.sh installs it)")
    assert found is not None
    return found


def _run(args: list[str], what: str) -> str:
    with tempfile.TemporaryDirectory(prefix="zaqar-otel-chromium-") as profile:
        done = subprocess.run(  # noqa: S603 - our own argv
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"chromium {what}: {done.stderr[-2000:]}"
    return done.stdout


def open_page(path: Path, out_dir: Path, fragment: str = "",
              size: tuple[int, int] = (1400, 1000)) -> Page:
    """Load ``path`` (a local file), dump its DOM and take a screenshot."""
    url = path.resolve().as_uri() + fragment
    dom = _run(["--dump-dom", url], "--dump-dom")
    shot = out_dir / (path.stem + ".png")
    _run([f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}", url],
         "--screenshot")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
    return Page(dom, shot)
