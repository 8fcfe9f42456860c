"""Where an operator installs zaqar-otel (issue 14.5), each started and traced.

* **devstack-like**: Zaqar in a venv of its own (``pip install zaqar redis``),
  zaqar-otel installed into it afterwards by a second ``pip install``, as
  devstack adds a plugin to its services' venv. That second install must
  change none of the packages Zaqar brought (it only adds), and
  ``zaqar-otel-server`` of that venv traces.
* **a distribution's packages**: Zaqar and every dependency in a
  system site-packages directory, as python3-* packages put them;
  zaqar-otel built from its source without build isolation and installed
  without dependencies into a venv made with ``--system-site-packages``
  (``pip install --no-build-isolation --no-deps``): the build uses the
  system's setuptools (77 or newer: the SPDX ``license`` needs it), pip
  resolves nothing, and the entry points and the ``zaqar-otel.pth`` start-up
  hook still work with zaqar-otel and Zaqar in different directories. The
  system directory stands beside the base interpreter's site-packages (this
  machine's Pythons are not ours to install into): a ``.pth`` in the venv
  names it, which puts it on ``sys.path`` where ``--system-site-packages``
  puts the system's, after the venv's own.
* **uwsgi** (``--http``, 2 processes, 4 threads): in the default suite,
  tests/functional/test_uwsgi_layout.py.

The venvs are cached in .cache/breadth/layout-*, keyed like the matrix's;
zaqar-otel itself is reinstalled from this tree on every run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from tests.breadth import matrix
from tests.breadth.support import freeze, python_or_skip, run, site_packages
from tests.tracing_support import (
    OTEL_SERVER,
    ProfiledSession,
    assert_well_formed,
    tracing,
)
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

#: The devstack-like venv on Python 3.11, whose bundled pip (23.2.1) failed
#: on the earlier ranges; the distribution on 3.12 (Ubuntu 24.04's), whose
#: base site-packages here holds nothing but pip (3.11's holds this
#: machine's own packages, which a system site-packages venv would see).
DEVSTACK_PYTHON = "3.11"
DISTRIBUTION_PYTHON = "3.12"
ZAQAR = "23.0.1"
PIP = ("--disable-pip-version-check", "--no-input")


def _cached(name: str, python: str, recipe: str) -> tuple[Path, bool]:
    """.cache/breadth/layout-<name>-<key>: (its path, whether it is ready)."""
    key = hashlib.sha256("\0".join([
        recipe, run([python, "-VV"]), ZAQAR,
        (matrix.ROOT / "pyproject.toml").read_text()]).encode()).hexdigest()[:12]
    path = matrix.CACHE / f"layout-{name}-{key}"
    if (path / ".ready").exists():
        return path, True
    for old in matrix.CACHE.glob(f"layout-{name}-*"):
        shutil.rmtree(old)
    path.mkdir(parents=True)
    return path, False


def _traced_session(bin_dir: Path, redis: RedisServer, receiver: OTLPReceiver,
                    queue: str) -> str:
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, python=bin_dir,
                     extra=tracing(receiver)) as server:
        session = ProfiledSession(server, receiver, queue)
        log = server.log_text()
    assert_well_formed(session, "redis_message_controller")
    assert " ERROR " not in log and "Traceback" not in log, log
    return log


WHERE = ("import json, zaqar, zaqar_otel; "
         "print(json.dumps([zaqar.__file__, zaqar_otel.__file__]))")


def test_devstack_like_zaqars_own_venv_then_zaqar_otel(
        wheel: Path, redis: RedisServer, receiver: OTLPReceiver) -> None:
    python = python_or_skip(DEVSTACK_PYTHON)
    home, ready = _cached("devstack", python, "2")
    venv = home / "venv"
    pip, py = venv / "bin" / "pip", venv / "bin" / "python"
    if not ready:
        run([python, "-m", "venv", venv])
        # Zaqar and its store's client (devstack installs redis for the
        # redis store; Zaqar does not depend on it).
        run([pip, "install", *PIP, f"zaqar=={ZAQAR}", "redis"])
        before = freeze(py)
        run([pip, "install", *PIP, wheel])  # the operator's second step
        after = freeze(py)
        (home / "changes.json").write_text(json.dumps({
            "changed": {n: [v, after.get(n)] for n, v in before.items()
                        if after.get(n) != v},
            "added": sorted(set(after) - set(before))}))
        run([pip, "check"])
        (home / ".ready").touch()
    else:
        run([pip, "install", *PIP, "--quiet", "--no-deps", "--force-reinstall", wheel])
    changes = json.loads((home / "changes.json").read_text())
    assert changes["changed"] == {}, changes  # Zaqar's packages are as pip left them
    assert "zaqar-otel" in changes["added"] and "opentelemetry-sdk" in changes["added"]
    where = json.loads(run([py, "-c", WHERE], cwd=tempfile.gettempdir()))
    assert all(path.startswith(str(venv)) for path in where), where
    _traced_session(venv / "bin", redis, receiver, "devstack")


def test_distribution_packages_no_build_isolation_no_deps(
        wheel: Path, redis: RedisServer, receiver: OTLPReceiver,
        tmp_path: Path) -> None:
    python = python_or_skip(DISTRIBUTION_PYTHON)
    home, ready = _cached("distribution", python, "2")
    system, venv = home / "dist-packages", home / "venv"
    pip, py = venv / "bin" / "pip", venv / "bin" / "python"
    if not ready:
        # The distribution: Zaqar, its redis store's client, zaqar-otel's
        # dependencies and the build backend, installed into one directory by
        # a helper venv's pip.
        helper = home / "helper"
        run([python, "-m", "venv", helper])
        run([helper / "bin" / "pip", "install", *PIP, "--target", system,
             f"zaqar=={ZAQAR}", "redis", "setuptools>=77", "wheel",
             *map(str, matrix.requires(wheel))])
        shutil.rmtree(helper)
        run([python, "-m", "venv", "--system-site-packages", venv])
        (site_packages(py) / "_distribution.pth").write_text(f"{system}\n")
        (home / ".ready").touch()
    # The package, built from its source as a distribution builds it.
    source = matrix.copy_tree(tmp_path / "zaqar-otel")
    run([pip, "install", *PIP, "--quiet", "--no-build-isolation", "--no-deps",
         "--force-reinstall", source], cwd=tmp_path)
    run([pip, "check"])
    zaqar_file, ours = json.loads(run([py, "-c", WHERE], cwd=tempfile.gettempdir()))
    assert zaqar_file.startswith(str(system)), zaqar_file
    assert ours.startswith(str(site_packages(py))), ours
    assert (site_packages(py) / "zaqar-otel.pth").exists()
    # The entry points from the installed metadata: the propagator by name.
    run([py, "-c", "from opentelemetry.propagators.textmap import TextMapPropagator; "
         "from opentelemetry.util._importlib_metadata import entry_points; "
         "(ep,) = entry_points(group='opentelemetry_propagator', name='osprofiler'); "
         "assert isinstance(ep.load()(hmac_keys=['k']), TextMapPropagator)"],
        cwd=tempfile.gettempdir())
    _traced_session(venv / "bin", redis, receiver, "distribution")
