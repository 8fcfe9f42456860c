"""An operator's pip: ``pip install zaqar-otel`` with the pip each Python
bundles (issue 14.3).

For Python 3.10 to 3.13: a fresh venv with the pip its ``ensurepip`` puts
there, not upgraded (3.10.13: 23.0.1, 3.11.7 and 3.12.1: 23.2.1, 3.13.0:
24.2 here), resolves the wheel alone and with the ``zaqar`` extra against
the index (``--dry-run --report``): no ``ResolutionImpossible``, and what it
would install is inside the ranges pyproject.toml declares. The pips of
Python 3.11 to 3.13 failed on the earlier ranges (the SDK 1.45.2 has no
pymongo instrumentation to match; see pyproject.toml). The matrix installs
each pair for real with the same pips (matrix.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.breadth import matrix
from tests.breadth.support import python_or_skip, run


def _declared(wheel: Path) -> dict[str, Requirement]:
    reqs = matrix.requires(wheel) + matrix.requires(wheel, "zaqar")
    return {canonicalize_name(r.name): r for r in reqs}


def _dry_run(pip: Path, what: str, report: Path) -> dict[str, str]:
    done = subprocess.run(
        [str(pip), "install", "--dry-run", "--quiet", "--disable-pip-version-check",
         "--no-input", "--report", str(report), what],
        capture_output=True, text=True, timeout=1200)
    said = done.stdout + done.stderr
    assert "ResolutionImpossible" not in said, (
        f"{pip} cannot resolve {what}:\n{said[-4000:]}")
    assert done.returncode == 0, said[-4000:]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]}


@pytest.mark.parametrize("minor", matrix.PYTHONS)
def test_the_bundled_pip_resolves_the_wheel(minor: str, wheel: Path,
                                            tmp_path: Path) -> None:
    python = python_or_skip(minor)
    venv = tmp_path / "venv"
    run([python, "-m", "venv", venv])
    pip = venv / "bin" / "pip"
    bundled = run([python, "-c", "import ensurepip; print(ensurepip.version())"])
    assert run([pip, "--version"]).split()[1] == bundled.strip()  # not upgraded
    declared = _declared(wheel)
    for what in (str(wheel), f"{wheel}[zaqar]"):
        picked = _dry_run(pip, what, tmp_path / "report.json")
        for name, version in picked.items():
            if name in declared:
                assert declared[name].specifier.contains(version, prereleases=True), (
                    minor, what, name, version, str(declared[name]))
        assert "opentelemetry-sdk" in picked and "greenlet" in picked, picked
        if what.endswith("[zaqar]"):
            # The newest release the Python allows: 23 needs Python 3.11.
            newest = max((r for r, oldest in matrix.RELEASES.items()
                          if tuple(map(int, minor.split("."))) >= oldest),
                         key=lambda r: tuple(map(int, r.split("."))))
            assert picked["zaqar"].split(".")[0] == newest.split(".")[0], picked
