"""Helpers of the breadth tests: Pythons, venvs, commands."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.breadth import matrix


def python_or_skip(minor: str) -> str:
    """Python ``minor`` (say "3.11"); a skip without it, a failure under $CI."""
    found = matrix.find_python(minor)
    if found is None:
        reason = (f"no python{minor} (PATH, pyenv, "
                  f"$ZAQAR_OTEL_PYTHON{minor.replace('.', '_')})")
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def run(command: Sequence[str | os.PathLike[str]], timeout: float = 1200,
        **kwargs: object) -> str:
    """Run ``command``; its stdout, or a failure with all it printed."""
    done = subprocess.run(list(map(str, command)), capture_output=True, text=True,
                          timeout=timeout, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, (
        f"$ {' '.join(map(str, command))}\nexit {done.returncode}\n"
        f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return str(done.stdout)


def site_packages(python: Path) -> Path:
    return Path(run([python, "-c", "import sysconfig; "
                     "print(sysconfig.get_paths()['purelib'])"]).strip())


def freeze(python: Path) -> dict[str, str]:
    """name -> version of every distribution ``python`` sees."""
    out = run([python, "-c", "import json; from importlib import metadata; "
               "print(json.dumps({d.metadata['Name'].lower(): d.version "
               "for d in metadata.distributions()}))"], cwd=tempfile.gettempdir())
    return dict(json.loads(out))
