"""``zaqar-otel.pth``: what it does to every Python start of the environment.

Issue 24, item 10. The ``.pth`` runs in every Python process of the venv, Zaqar
or not. With ``OTEL_PROPAGATORS`` set (as the README tells operators) it puts
a finder in front of the import system that imports ``zaqar_otel`` (its guard,
``zaqar_otel.propagation.env_guard``) when an OpenTelemetry module is first
looked for: a start that never imports OpenTelemetry loads nothing of ours (no
``importlib.metadata``), and when the package behind it is gone (``pip
uninstall`` of an editable install leaves the copied ``.pth`` behind) or
broken, every start stays silent. Each test makes a fresh venv holding the
repository's ``.pth``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
PROPAGATORS = "tracecontext,baggage,osprofiler"


def _venv(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh venv (no pip) with zaqar-otel.pth; (its python, its purelib)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=60)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=30).stdout.strip())
    (purelib / "zaqar-otel.pth").write_text((ROOT / "zaqar-otel.pth").read_text())
    return py, purelib


def _start(py: Path, code: str = "pass",
           **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([py, "-c", code], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **env},
                          cwd=py.parent)


# Looks for OpenTelemetry (absent from the fresh venv): the .pth's finder
# then imports zaqar_otel.
TRIGGER = "try:\n import opentelemetry\nexcept ImportError:\n pass\nprint('ok')"


def test_a_start_is_silent_when_the_package_is_gone(tmp_path: Path) -> None:
    py, _ = _venv(tmp_path)
    for value in (PROPAGATORS, "tracecontext,bogus"):
        done = _start(py, TRIGGER, OTEL_PROPAGATORS=value)
        assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_a_start_is_silent_when_the_package_is_broken(tmp_path: Path) -> None:
    py, purelib = _venv(tmp_path)
    broken = purelib / "zaqar_otel"
    (broken / "propagation").mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('half-removed')\n")
    done = _start(py, TRIGGER, OTEL_PROPAGATORS=PROPAGATORS)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
    (broken / "__init__.py").write_text("")
    (broken / "propagation" / "__init__.py").write_text("")
    (broken / "propagation" / "env_guard.py").write_text("import no_such_module\n")
    done = _start(py, TRIGGER, OTEL_PROPAGATORS=PROPAGATORS)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


PROBE = """
import json, sys
loaded = sorted(sys.modules)
try:
    import opentelemetry  # not in this venv: only looked for
except ImportError:
    pass
guard = sys.modules.get("zaqar_otel.propagation.env_guard")
guarding = guard is not None and guard._GuardFirst in sys.meta_path
print(json.dumps({"loaded": loaded, "guarding": guarding}))
"""


def test_a_start_that_is_not_zaqar_loads_nothing_heavy(tmp_path: Path) -> None:
    # The checkout on the path before zaqar-otel.pth runs (aa_ sorts first),
    # as an installed package would be.
    py, purelib = _venv(tmp_path)
    (purelib / "aa_checkout.pth").write_text(f"{ROOT}\n")
    done = _start(py, PROBE, OTEL_PROPAGATORS=PROPAGATORS)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    found = json.loads(done.stdout)
    # Nothing of zaqar-otel's, importlib.metadata (about 25 ms), email (what
    # it pulls in) or OpenTelemetry is loaded at start...
    tops = ("zaqar_otel", "email", "opentelemetry", "osprofiler", "oslo_config")
    heavy = [m for m in found["loaded"] if m == "importlib.metadata"
             or m.split(".")[0] in tops]
    assert heavy == []
    # ... and the guard is in place as soon as OpenTelemetry is looked for.
    assert found["guarding"]


def test_the_guard_still_drops_an_unknown_name_when_propagate_is_imported() -> None:
    # The project's own environment (its .pth, its entry points): the names
    # are checked when opentelemetry.propagate is first imported.
    code = ("import os, opentelemetry.propagate as p; "
            "from zaqar_otel.propagation import env_guard; "
            "print(os.environ['OTEL_PROPAGATORS'], env_guard.unknown())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "OTEL_PROPAGATORS": "tracecontext,bogus"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tracecontext", "('bogus',)"]
