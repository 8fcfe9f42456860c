"""What the tests need of servers beyond :mod:`zaqar_otel.demo.processes`.

The machine's PostgreSQL and MariaDB (URLs, and a skip when they are not
there, a failure when $CI is set). The servers the tests start themselves
(Redis, SecantusDB, a webhook subscriber) and the helpers around them
(free_port, wait_port, call, ...) are in :mod:`zaqar_otel.demo.processes`.
"""

from __future__ import annotations

import os

import pytest

from zaqar_otel.demo.processes import HOST, service_reachable

__all__ = [
    "mariadb_url",
    "postgres_url",
    "require_mariadb",
    "require_postgres",
    "require_service",
]


def _unavailable(reason: str) -> None:
    # A developer without the service gets a skip; CI must have every service,
    # so there a missing one is a failure.
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, when $CI is set, fail) unless host:port accepts connections."""
    if not service_reachable(host, port):
        _unavailable(f"{name} not reachable on {host}:{port}")


def _require_module(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError:
        _unavailable(f"{package} is not installed (pip install {package})")


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
