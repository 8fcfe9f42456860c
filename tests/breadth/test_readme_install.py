"""The README's "Real Zaqar, traced, in five minutes" with its install lines.

tests/functional/test_readme.py follows the section in the test's own venv,
leaving out the lines that install software. Here they run too, as a
newcomer types them on Debian, with Python 3.11 as ``python3``:

* ``sudo apt-get install -y redis-server curl`` with ``--simulate`` (the test
  does not change the machine's packages; Debian's index must know both
  names; ``sudo`` is left out when the test runs as root);
* ``python3 -m venv zaqar-venv && . zaqar-venv/bin/activate``: the venv's
  ``bin`` then stays first on PATH for every later line, as activation does
  in the newcomer's shell;
* ``pip install '.[zaqar]' redis`` in this checkout, with the pip that venv
  bundles, from the package index;

then every other line of the section as written, against that venv alone:
init-db, check, listen, zaqar-otel-server, sign-headers and curl, and the
trace ``listen`` prints.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.breadth.support import python_or_skip
from tests.functional import test_readme
from zaqar_otel.demo.processes import RedisServer, free_port


def test_the_five_minute_section_installs_and_traces(tmp_path: Path) -> None:
    python = python_or_skip("3.11")
    apt = shutil.which("apt-get")
    assert apt, "the section's first line needs Debian's apt-get"
    pythons = tmp_path / "python3.11"
    pythons.mkdir()
    (pythons / "python3").symlink_to(python)
    home = tmp_path / "home"
    home.mkdir()
    sudo = "" if os.geteuid() == 0 else "sudo "
    with RedisServer() as redis:
        shell = test_readme.Shell(
            home,
            {"6379": str(redis.port), "8888": str(free_port()),
             "4318": str(free_port()),
             "sudo apt-get install -y": f"{sudo}apt-get install --simulate -y",
             "'.[zaqar]'": f"'{test_readme.ROOT}[zaqar]'"},
            path=(home / "zaqar-venv" / "bin", pythons))
        try:
            printed = test_readme.follow(shell, "zaqar-otel-server", installs=True)
        finally:
            shell.stop()
    test_readme.check_tree(printed)
    venv = home / "zaqar-venv"
    # What ran was the README's venv, not the test's.
    assert (venv / "bin" / "zaqar-otel-server").exists()
    assert list(venv.glob("lib/python3.11/site-packages/zaqar/__init__.py")), \
        "pip install '.[zaqar]' installed Zaqar in zaqar-venv"
