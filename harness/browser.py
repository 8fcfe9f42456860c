"""Debian's ``chromium``, headless, for the pages the project renders.

::

    page = open_page(path, tmp_path)          # skips (fails under $CI) without it
    page.dom                                  # the DOM after the page's scripts ran
    page.screenshot                           # a PNG file
    assert_drawn(page.screenshot)             # not a blank page

Every run gets a fresh profile directory and nothing that phones home
(no sync, component updates, background networking or QUIC), so a page
that loads something from the network shows it by not showing it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
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
        done = subprocess.run(
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


def png_rows(png: bytes, rows: int | None = None) -> tuple[int, int, list[bytes]]:
    """(width, bytes a pixel, the first ``rows`` rows unfiltered) of an
    8-bit, non-interlaced greyscale / RGB / RGBA PNG, what chromium writes:
    a minimal decoder (the test dependencies have no image library)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, header, data = 8, b"", []
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            data.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    assert depth == 8 and channels and not interlace, (depth, colour, interlace)
    stride = width * channels
    raw = zlib.decompress(b"".join(data))
    previous, out = bytes(stride), []
    for y in range(min(height, rows) if rows is not None else height):
        kind, row = raw[y * (stride + 1)], bytearray(
            raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:  # Sub
            for i in range(channels, stride):
                row[i] = (row[i] + row[i - channels]) & 255
        elif kind == 2:  # Up
            row = bytearray((a + b) & 255 for a, b in zip(row, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = row[i - channels] if i >= channels else 0
                row[i] = (row[i] + ((left + previous[i]) >> 1)) & 255
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = row[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc
                                    else b if pb <= pc else c)) & 255
        else:
            assert kind == 0, f"PNG filter {kind}"
        previous = bytes(row)
        out.append(previous)
    return width, channels, out


def assert_drawn(screenshot: Path, band: tuple[int, int] = (100, 400),
                 colours: int = 8, ink: float = 0.01) -> None:
    """The page is drawn where its table's first rows are (pixel rows
    ``band``, below the heading and the filter box): more than ``colours``
    distinct colours there (text is anti-aliased) and more than ``ink`` of
    its pixels not the background (the commonest colour). A blank page, or
    one with a heading and no table, fails."""
    width, channels, pixels = png_rows(screenshot.read_bytes(), band[1])
    counted: Counter[bytes] = Counter()
    for row in pixels[band[0]:]:
        counted.update(row[i:i + channels] for i in range(0, len(row), channels))
    total = sum(counted.values())
    assert total, f"{screenshot.name}: fewer than {band[0]} pixel rows"
    drawn = (total - counted.most_common(1)[0][1]) / total
    assert len(counted) > colours and drawn > ink, (
        f"{screenshot.name} looks blank: {len(counted)} colours, {drawn:.2%} "
        f"of pixel rows {band[0]}-{band[1]} not the background")
