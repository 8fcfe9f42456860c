"""Servers beyond what the demo ships (:mod:`zaqar_otel.demo.processes`).

SecantusDB (a MongoDB wire-protocol server, from the ``secantusdb`` package
the test extra installs) as a :class:`ServerProcess`; the machine's
PostgreSQL and MariaDB (URLs, and a skip when they are not there, a failure
when $CI is set); the project's Go binaries (``make backends``). Redis, the
webhook subscriber and the helpers around every server (free_port,
wait_port, call, ...) are the demo's: :mod:`zaqar_otel.demo.processes`.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from zaqar_otel.demo.processes import HOST, ServerProcess, service_reachable, wait_port

__all__ = [
    "BIN",
    "REPO",
    "MongoServer",
    "binary",
    "mariadb_url",
    "postgres_url",
    "require_mariadb",
    "require_postgres",
    "require_service",
    "unavailable",
]

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".cache" / "bin"


def unavailable(reason: str) -> None:
    # A developer without the service gets a skip; CI must have every service,
    # so there a missing one is a failure.
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, when $CI is set, fail) unless host:port accepts connections."""
    if not service_reachable(host, port):
        unavailable(f"{name} not reachable on {host}:{port}")


def _require_module(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError:
        unavailable(f"{package} is not installed (pip install {package})")


def postgres_url(user: str = "postgres", db: str = "test") -> str:
    """SQLAlchemy URL of the system PostgreSQL (trust auth on loopback)."""
    return f"postgresql+psycopg2://{user}@{HOST}:5432/{db}"


def mariadb_url(user: str = "root", db: str = "test") -> str:
    """SQLAlchemy URL of the system MariaDB (root, empty password)."""
    return f"mysql+pymysql://{user}@{HOST}:3306/{db}"


def require_postgres() -> str:
    """Require the system PostgreSQL and its driver; return its URL."""
    require_service("PostgreSQL", HOST, 5432)
    _require_module("psycopg2", "psycopg2-binary")
    return postgres_url()


def require_mariadb() -> str:
    """Require the system MariaDB and its driver; return its URL."""
    require_service("MariaDB", HOST, 3306)
    _require_module("pymysql", "PyMySQL")
    return mariadb_url()


# .ci/run builds the binaries beside the first test steps and writes the
# build's pid here; the tests that need them run last (tests/conftest.py)
# and wait for that build rather than skip.
BUILDING = REPO / ".cache" / "backends-build.pid"
BUILD_WAIT = 45 * 60.0  # a cold build (Go's caches empty) takes ~30 min


def binary(name: str, target: str) -> str:
    """``.cache/bin/NAME``; skip (fail under CI) when it is not built.

    While a build that .ci/run started is still running, wait for it (up
    to BUILD_WAIT) instead.
    """
    path = BIN / name
    deadline = time.monotonic() + BUILD_WAIT
    while not os.access(path, os.X_OK) and _building() \
            and time.monotonic() < deadline:
        time.sleep(2.0)
    if not os.access(path, os.X_OK):
        unavailable(f"{name} is not built: run `make {target}` "
                    "(Go and the Go module proxy; collector/build.mk)")
    return str(path)


def _building() -> bool:
    """Whether the build whose pid .ci/run recorded is still running."""
    try:
        pid = int(BUILDING.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _secantusd() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "secantusd-py")
    found = exe if os.path.exists(exe) else shutil.which("secantusd-py")
    if not found:
        raise RuntimeError("secantusd-py not found: pip install secantusdb")
    return found


class MongoServer(ServerProcess):
    """SecantusDB, a MongoDB wire-compatible server.

    Quirks of ``secantusd-py`` 0.7.0b3:
    - it auto-discovers ``./secantusd.toml`` and ``~/.secantus/secantusd.toml``;
      an explicit empty ``--config`` keeps the host's files out;
    - by default it advertises a single-node replica set "secantus" (so change
      streams work); plain ``mongodb://host:port`` URLs still connect;
    - it answers ~0.4 s after launch, but SIGTERM takes ~2 s once clients have
      disconnected (its accept thread is joined with a 2 s timeout), which is
      why ``close()`` kills it.
    """

    name = "mongo"

    @property
    def url(self) -> str:
        return f"mongodb://{HOST}:{self.port}"

    def _argv(self) -> list[str]:
        config = self.dir / "secantusd.toml"
        config.touch()
        return [
            _secantusd(),
            "--config", str(config),
            "--host", HOST,
            "--port", str(self.port),
            "--storage-path", str(self.dir / "data"),
            "--log-level", "WARNING",
        ]  # fmt: skip

    def _ping(self) -> None:
        # Wait for the port first: pymongo's monitor backs off after a refused
        # connection, which would add ~0.5 s to every start.
        wait_port(HOST, self.port, timeout=self.start_timeout)
        import pymongo

        client: Any = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=2000)
        with client:
            client.admin.command("ping")
