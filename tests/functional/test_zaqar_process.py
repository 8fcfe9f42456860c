"""The Zaqar process fixture against real backends, and the CLI-like client.

Every test starts real processes on 127.0.0.1 (Zaqar, redis-server,
SecantusDB) or uses the machine's MariaDB/PostgreSQL; nothing is mocked.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from harness.servers import MongoServer, require_mariadb, require_postgres
from zaqar_otel.demo.client import producer_consumer_session, profiled, zaqar_client
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.zaqar_server import (
    GUNICORN_COMMAND,
    Pool,
    ZaqarServer,
    ZaqarServerError,
    mongo,
    pooled,
    redis_sql,
)

pytestmark = pytest.mark.functional






def assert_round_trip(server: ZaqarServer, queue: str) -> None:
    record = producer_consumer_session(zaqar_client(server.url), queue)
    assert record.listed == record.posted
    assert record.claimed == record.posted
    assert record.claim_id
    assert sorted(record.deleted_ids) == sorted(record.posted_ids)
    if "gunicorn" not in server.command[0]:  # gunicorn has no access log here
        # The requests reached this very process (its access log).
        log = server.wait_for_log(f'"DELETE /v2/queues/{queue} HTTP/1.1" 204')
        assert f'"PUT /v2/queues/{queue} HTTP/1.1" 201' in log


def test_redis_sqlite(redis: RedisServer) -> None:
    # oslo.config reads OS_<GROUP>__<OPTION> from the environment too.
    server = ZaqarServer(redis_sql(redis.url), env={"OS_DEFAULT__DEBUG": "True"})
    with server:
        assert " DEBUG " in server.log_text()
        config = server.config_path.read_text()
        assert "management_store = sqlalchemy" in config
        assert f"uri = {redis.url}" in config
        assert_round_trip(server, "orders")
        pid = server.pid
    assert server.proc is not None and server.proc.returncode is not None
    assert pid and "Serving on host 127.0.0.1" in server.log_text()
    assert not server.dir.exists()  # temp dir gone, log kept in memory


def test_mongodb(mongo_server: MongoServer) -> None:
    with ZaqarServer(mongo(mongo_server.url, database="zq")) as server:
        assert_round_trip(server, "orders")
    import pymongo

    with pymongo.MongoClient(mongo_server.url) as client:
        names = client.list_database_names()
    # Management data in "<database>_queues", messages in partition databases.
    assert {"zq_mgmt_queues", "zq_messages_p0"} <= set(names)


def _set_weights(server: ZaqarServer, **weights: int) -> None:
    for name, weight in weights.items():
        status, _, body = server.request(
            "PATCH", f"/v2/pools/{name}", {"weight": weight}, {"X-Roles": "admin"}
        )
        assert status == 200, body


def test_pooling_two_redis_pools() -> None:
    with RedisServer() as r1, RedisServer() as r2:
        deployment = pooled([Pool("p1", r1.url), Pool("p2", r2.url)])
        with ZaqarServer(deployment) as server:
            status, _, body = server.request(
                "GET", "/v2/pools?detailed=true", headers={"X-Roles": "admin"}
            )
            assert status == 200
            assert {p["uri"] for p in body["pools"]} == {r1.url, r2.url}
            # Pool choice is weighted-random: steer each queue with weights.
            _set_weights(server, p1=100, p2=0)
            assert_round_trip(server, "on-p1")
            _set_weights(server, p1=0, p2=100)
            assert_round_trip(server, "on-p2")
            zaqar_client(server.url).queue("kept").post([{"body": 1, "ttl": 60}])
            log = server.wait_for_log("queue:on-p2 pool:p2")
            assert "queue:on-p1 pool:p1" in log
            import redis as redis_lib

            with redis_lib.Redis(port=r2.port) as client:
                assert client.dbsize() > 0  # "kept" lives in the second Redis


def test_pooling_two_mongo_databases(mongo_server: MongoServer) -> None:
    # Pool URIs must be unique; appname makes two URIs for one server.
    pools = [
        Pool(f"m{i}", f"{mongo_server.url}/?appname=m{i}", options={"database": db})
        for i, db in enumerate(("pool_a", "pool_b"))
    ]
    deployment = pooled(pools, catalog=mongo(mongo_server.url, database="cat"))
    with ZaqarServer(deployment) as server:
        _set_weights(server, m0=0, m1=100)
        assert_round_trip(server, "in-pool-b")
        server.wait_for_log("queue:in-pool-b pool:m1")
    import pymongo

    with pymongo.MongoClient(mongo_server.url) as client:
        assert "pool_b_messages_p0" in client.list_database_names()


def _database_exists(base_url: str, name: str) -> bool:
    engine = sa.create_engine(base_url)
    query = (
        "SELECT 1 FROM pg_database WHERE datname = :n"
        if engine.dialect.name == "postgresql"
        else "SELECT 1 FROM information_schema.schemata WHERE schema_name = :n"
    )
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query), {"n": name}).first() is not None
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_redis_shared_sql(backend: str, redis: RedisServer) -> None:
    base_url = require_mariadb() if backend == "mariadb" else require_postgres()
    server = ZaqarServer(redis_sql(redis.url, base_url))
    with server:
        assert server.sql_url and server.sql_url != base_url
        db = server.sql_url.rsplit("/", 1)[-1]
        assert db.startswith("zaqar_") and _database_exists(base_url, db)
        assert_round_trip(server, "orders")
    assert not _database_exists(base_url, db)  # per-server database dropped


def test_gunicorn_threads(redis: RedisServer) -> None:
    with ZaqarServer(redis_sql(redis.url), command=GUNICORN_COMMAND) as server:
        errors: list[BaseException] = []

        def session(name: str) -> None:
            try:
                assert_round_trip(server, name)
            except BaseException as exc:  # re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=session, args=(f"q{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        status, headers, _ = server.request("GET", "/v2/ping")
        assert status == 204 and headers["Server"] == "gunicorn"
    # The app found ~/.zaqar/zaqar.conf (HOME=temp dir): it used our Redis.
    assert "Booting worker" in server.log_text()


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict[str, str]]] = []

    def _answer(self) -> None:
        self.seen.append((self.command, self.path, dict(self.headers)))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b""
        if self.command == "POST":
            body = json.dumps({"resources": ["/v2/queues/q/messages/1"]}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_profiled_client_sends_trace_headers() -> None:
    from osprofiler import _utils as utils  # what osprofiler.web uses to verify

    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client = zaqar_client(f"http://127.0.0.1:{httpd.server_port}")
        client.queue("plain", force_create=True)
        with profiled("SECRET_KEY") as prof:
            queue = client.queue("traced", force_create=True)
            queue.post([{"body": {"n": 1}, "ttl": 60}])
            ids = {"base_id": prof.get_base_id(), "parent_id": prof.get_id()}
        client.queue("after", force_create=True)
    finally:
        httpd.shutdown()
        httpd.server_close()
    by_path = {path: headers for _, path, headers in _Recorder.seen}
    assert "X-Trace-Info" not in by_path["/v2/queues/plain"]
    assert "X-Trace-Info" not in by_path["/v2/queues/after"]  # cleaned up
    for path in ("/v2/queues/traced", "/v2/queues/traced/messages"):
        headers = by_path[path]
        assert headers["X-Project-Id"] == "test-project"
        data = utils.signed_unpack(
            headers["X-Trace-Info"], headers["X-Trace-HMAC"], ["SECRET_KEY"]
        )
        assert data is not None, "HMAC does not verify with the key"
        assert {k: data[k] for k in ids} == ids


def test_profiled_session_traced_by_zaqar(redis: RedisServer) -> None:
    """Zaqar's own OSProfiler accepts the headers and records the spans."""
    from osprofiler.drivers import base as drivers

    with RedisServer() as traces:
        extra = {
            "profiler": {
                "enabled": "true",
                "hmac_keys": "SECRET_KEY",
                "connection_string": traces.url,
                "trace_wsgi_transport": "true",
                # Zaqar 23.0.1 loads no storage driver when enabled is true
                # and either of these is false (storage/utils.py returns None).
                "trace_message_store": "true",
                "trace_management_store": "true",
            }
        }
        with ZaqarServer(redis_sql(redis.url), extra=extra) as server:
            assert "hmac_keys = SECRET_KEY" in server.config_path.read_text()
            with profiled("SECRET_KEY") as prof:
                producer_consumer_session(zaqar_client(server.url), "traced")
                base_id = prof.get_base_id()
        report = drivers.get_driver(traces.url).get_report(base_id)
    wsgi = [c for c in report["children"] if c["info"]["name"] == "wsgi"]
    assert len(wsgi) == 7  # PUT, POST, GET, claim, 2 deletes, DELETE queue
    assert all(c["parent_id"] == prof.get_id() for c in wsgi)


def test_stop_kills_a_server_that_ignores_sigterm(redis: RedisServer) -> None:
    ignore_term = (
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "from zaqar.cmd.server import run; run()"
    )
    command = ["{bin}/python", "-c", ignore_term, "--config-file", "{config}"]
    server = ZaqarServer(
        redis_sql(redis.url), command=command, python=sys.executable, stop_timeout=1
    )
    with server:
        assert_round_trip(server, "orders")
    assert server.proc is not None and server.proc.returncode == -signal.SIGKILL


def test_server_that_dies_reports_its_log(redis: RedisServer) -> None:
    deployment = redis_sql(redis.url)
    deployment.sections["drivers"]["message_store"] = "no-such-store"
    server = ZaqarServer(deployment, startup_timeout=30)
    with pytest.raises(ZaqarServerError, match="exited with") as err:
        server.start()
    assert "no-such-store" in str(err.value)
    assert server.proc is not None and server.proc.poll() is not None
