"""A real Zaqar server process, and the zaqar.conf of a deployment.

``ZaqarServer`` writes a zaqar.conf for a ``Deployment`` into a temp dir, starts
a command (``zaqar-server`` by default, ``zaqar-otel-server``, gunicorn) on a
free 127.0.0.1 port, waits for ``GET /v2/ping`` to answer 204 and stops the
process by pid. The config file sits at ``<dir>/.zaqar/zaqar.conf`` and the
child runs with ``HOME=<dir>``: ``zaqar.transport.wsgi.app`` (the app gunicorn
loads) calls ``CONF(args=[])`` and so only reads oslo.config's default files,
the first of which is ``~/.zaqar/zaqar.conf``.

The client side, python-zaqarclient as the CLI drives it, is
:mod:`zaqar_otel.demo.client`.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from zaqar_otel.demo.processes import (
    ServerProcess,
    call,
    free_port,
    render_conf,
    service_reachable,
)

__all__ = [
    "GUNICORN_COMMAND",
    "ZAQAR_SERVER_COMMAND",
    "Deployment",
    "Pool",
    "ZaqarServer",
    "ZaqarServerError",
    "create_tables",
    "mongo",
    "pooled",
    "redis_sql",
]

Sections = dict[str, dict[str, str]]

# Placeholders: {bin} venv bin dir, {config} zaqar.conf, {port}, {dir} temp dir.
ZAQAR_SERVER_COMMAND = ("{bin}/zaqar-server", "--config-file", "{config}")
GUNICORN_COMMAND = (
    "{bin}/gunicorn",
    "--bind",
    "127.0.0.1:{port}",
    "--threads",
    "8",
    "zaqar.transport.wsgi.app:app",
)


@dataclass
class Pool:
    """A pool registered through the admin API (``PUT /v2/pools/{name}``)."""

    name: str
    uri: str
    weight: int = 100
    # Overrides of [drivers:message_store:<scheme>] for this pool, e.g. the
    # Mongo database name.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Deployment:
    """The storage part of zaqar.conf plus what must happen around the server."""

    name: str
    sections: Sections
    # Management store URL whose schema we create (Zaqar's alembic migrations
    # do not run on SQLite); "{dir}" is the server's temp dir.
    sql_url: str | None = None
    pools: list[Pool] = field(default_factory=list)


def redis_sql(redis_url: str, sql_url: str | None = None) -> Deployment:
    """(a) Redis message store, SQL management store (SQLite file by default)."""
    sql_url = sql_url or "sqlite:///{dir}/zaqar.sqlite"
    return Deployment(
        name="redis+" + urlsplit(sql_url).scheme,
        sections={
            "drivers": {"message_store": "redis", "management_store": "sqlalchemy"},
            "drivers:message_store:redis": {"uri": redis_url},
            "drivers:management_store:sqlalchemy": {"uri": sql_url},
        },
        sql_url=sql_url,
    )


def mongo(mongo_url: str, database: str | None = None) -> Deployment:
    """(b) MongoDB wire protocol (e.g. SecantusDB) for both stores."""
    database = database or "zaqar_" + uuid.uuid4().hex[:8]
    return Deployment(
        name="mongodb",
        sections={
            # A standalone server is neither a replica set nor mongos: Zaqar
            # refuses to start on it unless told the store may lose messages.
            "DEFAULT": {"unreliable": "True"},
            "drivers": {"message_store": "mongodb", "management_store": "mongodb"},
            # Messages go to "<database>_messages_p<N>" partition databases.
            "drivers:message_store:mongodb": {"uri": mongo_url, "database": database},
            "drivers:management_store:mongodb": {
                "uri": mongo_url,
                "database": database + "_mgmt",
            },
        },
    )


def pooled(pools: Sequence[Pool], catalog: Deployment | None = None) -> Deployment:
    """(c) Pooling: the catalog lives in ``catalog``'s management store.

    The pools are registered through the admin API once the server answers.
    Without ``catalog``, a SQLite file catalog is used.
    """
    base = catalog or redis_sql("redis://unused")
    sections = {k: dict(v) for k, v in base.sections.items()}
    # In pooling mode the message store options are only defaults that each
    # pool's URI and options override; the pools decide.
    sections.pop("drivers:message_store:redis", None)
    scheme = urlsplit(pools[0].uri).scheme
    sections["drivers"]["message_store"] = scheme
    sections.setdefault("DEFAULT", {}).update(pooling="True", admin_mode="True")
    if scheme == "mongodb":
        sections["DEFAULT"]["unreliable"] = "True"
    return Deployment(
        name="pooled-" + scheme + "+" + base.sections["drivers"]["management_store"],
        sections=sections,
        sql_url=base.sql_url,
        pools=list(pools),
    )


class ZaqarServerError(RuntimeError):
    """The server died or never became ready; the message has its log tail."""


class ZaqarServer(ServerProcess):
    """One Zaqar server process; use as a context manager or start()/stop().

    Each ``start()`` takes a new free port. ``stop()`` sends SIGTERM (Zaqar
    under zaqar-otel flushes its spans on the way out), SIGKILL to the
    process group after ``stop_timeout``, then drops the server's SQL
    database and removes its temp dir; the log stays readable through
    ``log_text()``.
    """

    name = "zaqar"
    close_grace = None
    keeps_data = False
    error = ZaqarServerError

    def __init__(
        self,
        deployment: Deployment,
        *,
        command: Sequence[str] = ZAQAR_SERVER_COMMAND,
        env: Mapping[str, str] | None = None,
        python: str | os.PathLike[str] | None = None,
        extra: Mapping[str, Mapping[str, str]] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        websocket: bool = False,
    ) -> None:
        super().__init__(port=0, workdir=workdir)
        self.deployment = deployment
        py = Path(python or sys.executable)
        # Not resolved: a venv's bin/python is a symlink to the base interpreter.
        self.bin_dir = str(py if py.is_dir() else py.parent)
        self.command = list(command)
        self.env = dict(env or {})
        self.extra = {k: dict(v) for k, v in (extra or {}).items()}
        self.config_path = self.dir / ".zaqar" / "zaqar.conf"
        self.start_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        # transport = websocket on the same free port; ready when it listens.
        self.websocket = websocket
        self.sql_url: str | None = None
        self._drop_sql: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> Sections:
        """The zaqar.conf sections: generated ones with ``extra`` merged over."""
        sections: Sections = {
            "DEFAULT": {"auth_strategy": ""},  # no keystone: X-Project-ID header
            "drivers": {"transport": "wsgi"},
            "drivers:transport:wsgi": {"bind": "127.0.0.1", "port": str(self.port)},
        }
        for source in (self.deployment.sections, self.extra):
            for name, options in source.items():
                sections.setdefault(name, {}).update(options)
        if self.sql_url:
            sections["drivers:management_store:sqlalchemy"]["uri"] = self.sql_url
        if self.websocket:
            sections["drivers"]["transport"] = "websocket"
            sections["drivers:transport:websocket"] = {
                "bind": "127.0.0.1", "port": str(self.port)}
        return sections

    def _prepare(self) -> None:
        self.port = free_port()
        if self.deployment.sql_url:
            self.sql_url, self._drop_sql = _prepare_sql(
                self.deployment.sql_url.replace("{dir}", str(self.dir))
            )
        self.config_path.parent.mkdir(exist_ok=True)
        self.config_path.write_text(render_conf(self.config()))

    def _argv(self) -> list[str]:
        subs = {
            "bin": self.bin_dir,
            "config": str(self.config_path),
            "port": str(self.port),
            "dir": str(self.dir),
        }
        return [arg.format(**subs) for arg in self.command]

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.dir),
            "PATH": self.bin_dir + os.pathsep + os.environ.get("PATH", ""),
            **self.env,
        }

    def _ping(self) -> None:
        if self.websocket:
            if not service_reachable("127.0.0.1", self.port, timeout=0.5):
                raise ZaqarServerError("not listening")
            return
        status, _, _ = self.request("GET", "/v2/ping", timeout=2.0)
        # 401: keystone auth turned the anonymous ping away, so the app is up.
        if status not in (204, 401):
            raise ZaqarServerError(f"HTTP {status}")

    def _started(self) -> None:
        for pool in self.deployment.pools:
            self.register_pool(pool)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        project: str = "test-project",
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], Any]:
        """A raw API call to this server; JSON bodies are (de)serialised."""
        hdrs = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project,
                **(headers or {})}
        return call(self.port, method, path, body, hdrs, timeout)

    def register_pool(self, pool: Pool) -> None:
        """Admin API: needs admin_mode = True and the "admin" role header."""
        body = {"weight": pool.weight, "uri": pool.uri, "options": pool.options}
        status, _, payload = self.request(
            "PUT", f"/v2/pools/{pool.name}", body, headers={"X-Roles": "admin"}
        )
        if status != 201:
            raise ZaqarServerError(
                f"registering pool {pool.name} ({pool.uri}): HTTP {status} "
                f"{payload}\n{self.log_tail()}"
            )

    def _discard(self) -> None:
        if self._drop_sql:
            _drop_database(self._drop_sql)
            self._drop_sql = None
        super()._discard()

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """Wait until ``text`` is in the log: servers log after responding."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log_text()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in log\n{self.log_tail()}")
            time.sleep(0.05)
        return log


def _prepare_sql(url: str) -> tuple[str, str | None]:
    """Create Zaqar's management tables; returns (url to use, db to drop).

    Zaqar's alembic migration 006 is MySQL-only and Zaqar has no table
    prefix, so on a shared server each ZaqarServer gets its own database
    (``zaqar_<hex>``, dropped on stop). A user who may not create databases
    gets the tables in the given database dropped and created afresh instead.
    SQLite gets a file in the temp dir.
    """
    import sqlalchemy as sa

    drop = None
    if not url.startswith("sqlite"):
        name = "zaqar_" + uuid.uuid4().hex[:12]
        try:
            _admin(url, f"CREATE DATABASE {name}")
            url = drop = urlunsplit(urlsplit(url)._replace(path="/" + name))
        except sa.exc.DBAPIError:
            drop = None
    create_tables(url, fresh=drop is None)
    return url, drop


def create_tables(url: str, *, fresh: bool = False) -> list[str]:
    """Create Zaqar's management store tables at a SQLAlchemy ``url``.

    What ``zaqar-sql-db-manage upgrade head`` would make, from Zaqar's own
    table definitions (``zaqar.storage.sqlalchemy.tables``): its alembic
    migration 006 is MySQL-only and fails on SQLite. Tables that exist are
    kept, unless ``fresh`` (dropped and created afresh). Returns the names of
    the tables it created.
    """
    import sqlalchemy as sa
    from zaqar.storage.sqlalchemy import tables

    engine = sa.create_engine(url)
    try:
        if fresh:
            tables.metadata.drop_all(engine)
        existing = set(sa.inspect(engine).get_table_names())
        tables.metadata.create_all(engine)
    finally:
        engine.dispose()
    return [name for name in tables.metadata.tables if name not in existing]


def _drop_database(url: str) -> None:
    statement = "DROP DATABASE IF EXISTS " + urlsplit(url).path.lstrip("/")
    if url.startswith("postgresql"):
        # The killed server's backends may not have noticed it is gone yet.
        statement += " WITH (FORCE)"
    _admin(url, statement)


def _admin(url: str, statement: str) -> None:
    """Run CREATE/DROP DATABASE on the server's default database."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    if engine.dialect.name == "postgresql":
        # Postgres cannot drop the database it is connected to.
        engine.dispose()
        engine = sa.create_engine(
            sa.engine.make_url(url).set(database="postgres"),
            isolation_level="AUTOCOMMIT",
        )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()
