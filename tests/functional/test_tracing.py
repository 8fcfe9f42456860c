"""A real Zaqar with the zaqar-otel hook, checked where its spans arrive.

Each test starts ``zaqar-otel-server`` (or gunicorn on
``zaqar_otel.wsgi:application``) on 127.0.0.1 against real backends, drives
it the way ``openstack --os-profile KEY messaging ...`` does (python-
zaqarclient after ``osprofiler.profiler.init``), and reads the spans an OTLP
receiver decoded from the wire.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections.abc import Mapping, Sequence

import pytest

from harness.servers import MongoServer
from harness.tracing import (
    KEY,
    OTEL_GUNICORN,
    OTEL_SERVER,
    PYMONGO_SCOPE,
    REDIS_SCOPE,
    SQLALCHEMY_SCOPE,
    ProfiledSession,
    assert_one_tree,
    assert_well_formed,
    canary,
    sql_url,
    tracing,
)
from zaqar_otel.demo.client import producer_consumer_session, profiled, zaqar_client
from zaqar_otel.demo.processes import RedisServer, free_port
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.tree import render_tree
from zaqar_otel.demo.zaqar_server import Pool, ZaqarServer, mongo, pooled, redis_sql
from zaqar_otel.propagation import codec, idmap

pytestmark = pytest.mark.functional


# -- helpers ------------------------------------------------------------------


# -- (a) Redis message store + SQL management store ----------------------------


@pytest.mark.parametrize("sql", ["sqlite", "mariadb", "postgresql"])
def test_profiled_session_redis_and_sql(
    sql: str, redis: RedisServer, receiver: OTLPReceiver
) -> None:
    deployment = redis_sql(redis.url, sql_url(sql))
    extra = tracing(receiver)
    with ZaqarServer(deployment, command=OTEL_SERVER, extra=extra) as server:
        session = ProfiledSession(server, receiver, "orders")
        log = server.log_text()
    # Not even for the stock connection_string messaging://.
    assert " ERROR " not in log and "Traceback" not in log, log
    assert_well_formed(session, "redis_message_controller")
    tree = render_tree(session.spans)
    # Redis commands under the message and claim controllers that sent them.
    assert session.children_of("redis_message_controller", REDIS_SCOPE), tree
    assert session.children_of("redis_claim_controller", REDIS_SCOPE), tree
    # SQL statements under the management store's trace points.
    statements = session.children_of("sqlalchemy_", SQLALCHEMY_SCOPE)
    assert statements, tree
    system = {"sqlite": "sqlite", "mariadb": "mysql", "postgresql": "postgresql"}[sql]
    assert {s.attributes.get("db.system") for s in statements} == {system}
    # Every SQL span is a statement: no "connect" span per Engine.connect(),
    # which Zaqar calls for every statement.
    sql_spans = [s for s in session.spans if s.scope == SQLALCHEMY_SCOPE]
    assert all(s.attributes.get("db.statement") for s in sql_spans), tree
    assert "connect" not in {s.name for s in sql_spans}, tree
    # Named by operation and table, as the database conventions name them,
    # never by a database file path.
    names = {s.name for s in sql_spans}
    assert "INSERT Queues" in names and "DELETE Queues" in names, names
    assert all(re.fullmatch(r"[A-Z]+( \w+)?", n) for n in names), names
    # Statements are exported with placeholders, never with bound values (the
    # queue name is one): only the URL path and the messaging destination
    # name it.
    for s in session.spans:
        if s.scope in (REDIS_SCOPE, SQLALCHEMY_SCOPE):
            assert "orders" not in str(s.attributes), s


def _shape(session: ProfiledSession, server: ZaqarServer) -> list[str]:
    """The session's spans with what differs from run to run (ids, the
    server's port and directory, times) left out: name, kind, parent's name, attributes,
    status, events and links, sorted."""
    by_id = {s.span_id: s for s in session.spans}

    def plain(value: object) -> str:
        text = re.sub(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?"
                      r"[0-9a-f]{12}|[0-9a-f]{24}", "<id>", str(value))
        return text.replace(str(server.dir), "<dir>").replace(
            str(server.port), "<port>")

    shapes = []
    for span in session.spans:
        parent = by_id.get(span.parent_span_id or 0)
        shapes.append(repr((
            span.name, span.kind, parent.name if parent else None, span.scope,
            sorted((k, plain(v)) for k, v in span.attributes.items()
                   if k not in _PER_RUN),
            span.status_code, plain(span.status_message),
            [(name, sorted(attributes)) for name, attributes in span.events],
            [sorted(attributes) for _, _, attributes in span.links])))
    return sorted(shapes)


#: Attributes whose values differ from one run to the next: the client's
#: port and the messages' ages.
_PER_RUN = frozenset(("net.peer.port", "client.port", "net.sock.peer.port",
                      "messaging.message.age"))


def test_the_fast_path_and_the_sdks_own_make_the_same_spans(
        receiver: OTLPReceiver) -> None:
    """[opentelemetry] fast_path = auto (the fast path, on this SDK) and
    off (the SDK's own objects): the same profiled session makes the same
    spans (names, parents, kinds, attributes, status, events, links), one
    well-formed tree each. Each run has a Redis of its own: Zaqar's Lua
    scripts are loaded by its first run only."""
    shapes = {}
    for fast_path in ("auto", "off"):
        extra = tracing(receiver, otel={"fast_path": fast_path})
        with RedisServer() as redis, ZaqarServer(
                redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
            session = ProfiledSession(server, receiver, "orders")
            log = server.log_text()
        path = "fast" if fast_path == "auto" else "stock"
        assert f"spans take the {path} (" in log, log
        assert " ERROR " not in log and "Traceback" not in log, log
        assert_well_formed(session, "redis_message_controller")
        shapes[fast_path] = _shape(session, server)
        receiver.clear()
    assert shapes["auto"] == shapes["off"]


# -- (b) MongoDB wire for both stores -----------------------------------------


def test_profiled_session_mongodb(receiver: OTLPReceiver) -> None:
    with MongoServer() as mongo_server:
        deployment = mongo(mongo_server.url)
        with ZaqarServer(deployment, command=OTEL_SERVER,
                         extra=tracing(receiver)) as server:
            session = ProfiledSession(server, receiver, "orders")
    assert_well_formed(session, "mongodb_message_controller")
    tree = render_tree(session.spans)
    commands = session.children_of("mongodb_", PYMONGO_SCOPE)
    assert commands, tree
    # Statement capture is off: the command name alone, no document.
    for s in commands:
        statement = s.attributes.get("db.statement", "")
        assert " " not in statement and "{" not in statement, s


# -- (c) pooling with two pools -----------------------------------------------


def test_profiled_session_pooling(receiver: OTLPReceiver) -> None:
    with RedisServer() as first, RedisServer() as second:
        pools = [Pool("pool-a", first.url + "/0", weight=100),
                 Pool("pool-b", second.url + "/0", weight=100)]
        deployment = pooled(pools)
        with ZaqarServer(deployment, command=OTEL_SERVER,
                         extra=tracing(receiver)) as server:
            sessions = [ProfiledSession(server, receiver, f"orders-{i}")
                        for i in range(4)]
    for session in sessions:
        assert_well_formed(session, "redis_message_controller")
    lookups = [s for session in sessions for s in session.named("zaqar.pool.lookup")]
    assert lookups, render_tree(sessions[0].spans)
    by_pool = {s.attributes["zaqar.pool.name"]: s.attributes.get("zaqar.pool.uri")
               for s in lookups}
    assert set(by_pool) <= {"pool-a", "pool-b"} and by_pool, by_pool
    for name, uri in by_pool.items():
        assert uri == {"pool-a": first.url + "/0", "pool-b": second.url + "/0"}[name]


# -- trust: what starts a trace and what does not ------------------------------


def test_forged_or_missing_headers_export_nothing_and_change_nothing(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra=tracing(receiver)) as server:
        server.request("PUT", "/v2/queues/orders")
        server.request("POST", "/v2/queues/orders/messages",
                       body={"messages": [{"body": {"n": 1}, "ttl": 300}]})
        canary(server, receiver)
        plain = server.request("GET", "/v2/queues/orders/stats")
        forged = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), "not-the-key")
        garbled = {codec.X_TRACE_INFO: "%%%not-base64", codec.X_TRACE_HMAC: "00"}
        oversized = {codec.X_TRACE_INFO: "A" * 8000,
                     codec.X_TRACE_HMAC: forged[codec.X_TRACE_HMAC]}
        unsampled_w3c = {"traceparent": f"00-{uuid.uuid4().hex}-{'1' * 16}-01"}
        answers = [server.request("GET", "/v2/queues/orders/stats", headers=h)
                   for h in (forged, garbled, oversized, unsampled_w3c)]
        last = canary(server, receiver, clear=False)
        # Only the canary's trace: nothing from the requests before it.
        assert {s.trace_id for s in receiver.spans()} == {last}, render_tree(
            receiver.spans())
    for status, _, body in answers:
        assert (status, body) == (plain[0], plain[2])


def test_traceparent_alone_continues_the_callers_trace_when_honored(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    extra = tracing(receiver, otel={"honor_w3c_sampled": "true"})
    trace_id, span_id = uuid.uuid4().int, 0x1234ABCD5678EF01
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        status, _, _ = server.request(
            "PUT", "/v2/queues/w3c",
            headers={"traceparent": f"00-{trace_id:032x}-{span_id:016x}-01"})
        assert status == 201
        (root,) = receiver.wait_for(lambda s: s.kind == "SERVER")
        time.sleep(0.2)
        spans = receiver.spans()
    assert root.trace_id == trace_id and root.parent_span_id == span_id
    assert root.name == "PUT /v2/queues/{queue_name}"
    assert root.attributes["zaqar_otel.trace_origin"] == "traceparent"
    assert_one_tree(spans, remote_parent=span_id)
    assert len(spans) > 1  # the controller and SQL spans continue it too


# -- each trace_* option removes exactly its family -----------------------------


def families(spans: Sequence[ReceivedSpan]) -> set[str]:
    """Which option produced each span, for redis + SQL deployments.

    Zaqar traces its queue controllers when either store option is on, so
    those belong to no single family.
    """
    out = set()
    for s in spans:
        if s.scope == REDIS_SCOPE:
            out.add("trace_redis")
        elif s.scope == SQLALCHEMY_SCOPE:
            out.add("trace_sqlalchemy")
        elif s.name.endswith("_queue_controller"):
            continue
        elif s.name.startswith("redis_"):
            out.add("trace_message_store")
        elif s.name.startswith("sqlalchemy_"):
            out.add("trace_management_store")
        elif s.kind == "SERVER":
            out.add("trace_wsgi_transport")
    return out


def _families_with(redis_url: str, receiver: OTLPReceiver,
                   profiler: Mapping[str, str]) -> set[str]:
    receiver.clear()
    extra = tracing(receiver, profiler=profiler)
    with ZaqarServer(redis_sql(redis_url), command=OTEL_SERVER, extra=extra) as server:
        session = ProfiledSession(server, receiver, "families")
    return families(session.spans)


def test_each_trace_option_removes_exactly_its_family(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    everything = _families_with(redis.url, receiver, {})
    options = ("trace_redis", "trace_sqlalchemy", "trace_message_store",
               "trace_management_store")
    assert everything == {"trace_wsgi_transport", *options}
    for option in options:
        assert _families_with(redis.url, receiver, {option: "false"}) == (
            everything - {option}), option


def test_enabled_false_exports_nothing_even_for_signed_requests(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    # The stock key and connection string: Zaqar's own start-up would trace
    # signed requests and log an error for messaging://.
    extra = tracing(receiver, profiler={"enabled": "false", "hmac_keys": "SECRET_KEY"})
    del extra["profiler"]["hmac_keys"]
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        with profiled("SECRET_KEY"):
            record = producer_consumer_session(zaqar_client(server.url), "off")
        time.sleep(1.0)  # several export intervals
        log = server.log_text()
    assert record.deleted_ids == record.posted_ids
    assert receiver.requests == 0 and receiver.spans() == []
    assert " ERROR " not in log and "Traceback" not in log, log


def test_stock_key_is_refused_and_zaqar_serves_untraced(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    extra = tracing(receiver, profiler={"hmac_keys": "SECRET_KEY"})
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        with profiled("SECRET_KEY"):
            status = server.request("PUT", "/v2/queues/stock")[0]
        log = server.wait_for_log("allow_stock_hmac_key")
        time.sleep(0.5)
    assert status == 201
    assert "[profiler] hmac_keys" in log and "Traceback" not in log
    assert receiver.spans() == []


# -- operations: shutdown, concurrency, other osprofiler drivers ---------------


def test_sigterm_flushes_spans_still_queued(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    # A minute between exports: only the shutdown flush can deliver them.
    extra = tracing(receiver, otel={"schedule_delay": "60000"})
    server = ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra)
    with server:
        with profiled(KEY) as prof:
            zaqar_client(server.url).queue("flush", force_create=True)
            trace_id = idmap.trace_id_from_base_id(prof.get_base_id())
        time.sleep(0.2)
        assert receiver.spans() == []
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        # Ended by SIGTERM, as zaqar-server is, after the flush.
        assert server.proc.wait(timeout=10) == -signal.SIGTERM
        took = time.monotonic() - started
    assert took < 5.0
    assert any(s.trace_id == trace_id and s.kind == "SERVER" for s in receiver.spans())


def test_concurrent_profiled_requests_on_threaded_gunicorn(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    with ZaqarServer(redis_sql(redis.url), command=OTEL_GUNICORN,
                     extra=tracing(receiver)) as server:
        zaqar_client(server.url).queue("busy", force_create=True)
        barrier = threading.Barrier(8)
        trace_ids: list[int] = []
        errors: list[BaseException] = []

        def client() -> None:
            try:
                queue = zaqar_client(server.url).queue("busy", auto_create=False)
                with profiled(KEY) as prof:
                    barrier.wait(timeout=10)
                    queue.post([{"body": {"n": i}, "ttl": 60} for i in range(3)])
                    trace_ids.append(idmap.trace_id_from_base_id(prof.get_base_id()))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        receiver.wait_for(lambda s: s.kind == "SERVER" and s.trace_id in trace_ids,
                          count=8)
        time.sleep(0.2)
        spans = [s for s in receiver.spans() if s.trace_id in trace_ids]
    assert len(set(trace_ids)) == 8
    groups = {t: [s for s in spans if s.trace_id == t] for t in trace_ids}
    for group in groups.values():
        root = assert_one_tree(group, remote_parent=group[0].parent_span_id
                               if len(group) == 1 else _caller(group))
        assert root.name == "POST /v2/queues/{queue_name}/messages"
        assert any(s.name == "redis_message_controller" for s in group)
    assert len({s.span_id for s in spans}) == len(spans)


def _caller(group: list[ReceivedSpan]) -> int | None:
    ids = {s.span_id for s in group}
    parents = {s.parent_span_id for s in group} - ids
    assert len(parents) == 1, parents
    return parents.pop()


def test_non_otlp_osprofiler_driver_keeps_getting_trace_points(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    import json

    import redis as redis_client
    from osprofiler.drivers import base as osprofiler_drivers

    extra = tracing(receiver, profiler={"connection_string": redis.url})
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        session = ProfiledSession(server, receiver, "forwarded")
    # What `osprofiler trace show --connection-string redis://... BASE_ID` reads.
    report = osprofiler_drivers.get_driver(redis.url).get_report(session.base_id)
    assert "redis_message_controller" in json.dumps(report["stats"])
    with redis_client.Redis.from_url(redis.url) as client:
        stored = b"".join(client.lrange(f"osprofiler_opt:{session.base_id}", 0, -1))
    assert b'"args"' not in stored and session.marker.encode() not in stored


@pytest.mark.parametrize("collector", ["hanging", "refusing"])
def test_sigterm_with_collector_down_exits_within_shutdown_timeout(
    collector: str, redis: RedisServer, receiver: OTLPReceiver
) -> None:
    # osprofiler's OTLP driver blocks 30 s here; ours stops at the option.
    extra = tracing(receiver, otel={"shutdown_timeout": "2", "timeout": "30"})
    if collector == "refusing":
        extra["opentelemetry"]["endpoint"] = f"http://127.0.0.1:{free_port()}"
    receiver.mode = "hang"
    server = ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra)
    with server:
        headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
        for n in range(5):
            status = server.request("PUT", f"/v2/queues/down-{n}", headers=headers)[0]
            assert status == 201  # a down collector costs requests nothing
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=15)
        took = time.monotonic() - started
        log = server.log_text()
    assert took < 2.0 + 1.5, f"exit took {took:.1f}s\n{log[-2000:]}"
    assert "Traceback" not in log


@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_forked_gunicorn_workers_each_export(
    preload: bool, redis: RedisServer, receiver: OTLPReceiver
) -> None:
    command = ["{bin}/gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "2",
               *(["--preload"] if preload else []), "zaqar_otel.wsgi:application"]
    with ZaqarServer(redis_sql(redis.url), command=command,
                     extra=tracing(receiver)) as server:
        trace_ids = []
        for n in range(6):
            with profiled(KEY) as prof:
                zaqar_client(server.url).queue(f"fork-{n}", force_create=True)
                trace_ids.append(idmap.trace_id_from_base_id(prof.get_base_id()))
        servers = receiver.wait_for(
            lambda s: s.kind == "SERVER" and s.trace_id in trace_ids, count=6)
        # Without --preload each worker imports the app, and so sets up, itself
        # (the second may still be booting when the first answers).
        expected_setups = 1 if preload else 2
        deadline = time.monotonic() + 30
        while (server.log_text().count("zaqar-otel: tracing on") < expected_setups
               and time.monotonic() < deadline):
            time.sleep(0.2)
        log = server.log_text()
    # Every request's spans arrived, whichever worker served it.
    assert {s.trace_id for s in servers} == set(trace_ids)
    assert log.count("zaqar-otel: tracing on") == expected_setups, log[-3000:]


def test_server_span_is_outside_keystone_auth(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    # A request keystonemiddleware turns away (no token) still has its server
    # span: the auth time is inside it. No keystone is contacted for that.
    extra = tracing(receiver)
    extra["DEFAULT"] = {"auth_strategy": "keystone"}
    extra["keystone_authtoken"] = {
        "www_authenticate_uri": f"http://127.0.0.1:{free_port()}/identity"}
    headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
    trace_id = codec.decode(headers[codec.X_TRACE_INFO],
                             headers[codec.X_TRACE_HMAC], [KEY]).trace_id
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        status = server.request("GET", "/v2/queues", headers=headers)[0]
        (span,) = receiver.wait_for(lambda s: s.trace_id == trace_id)
    assert status == 401
    # The old HTTP names: no OTEL_SEMCONV_STABILITY_OPT_IN (test_semconv.py).
    assert span.kind == "SERVER" and span.attributes["http.status_code"] == 401
    assert span.name == "GET /v2/queues"


def test_database_down_marks_spans_as_errors_and_keeps_zaqars_answer(
    receiver: OTLPReceiver,
) -> None:
    extra = tracing(receiver)
    # Zaqar retries a lost Redis 10 times, a second apart, by default.
    extra["drivers:message_store:redis"] = {
        "max_reconnect_attempts": "1", "reconnect_sleep": "0.1"}
    with RedisServer() as redis_server:
        with ZaqarServer(redis_sql(redis_server.url), command=OTEL_SERVER,
                         extra=extra) as server:
            server.request("PUT", "/v2/queues/down")
            redis_server.stop()
            body = {"messages": [{"body": {"n": 1}, "ttl": 60}]}
            untraced = server.request("POST", "/v2/queues/down/messages", body=body)
            headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
            traced = server.request("POST", "/v2/queues/down/messages", body=body,
                                    headers=headers)
            trace_id = codec.decode(headers[codec.X_TRACE_INFO],
                                     headers[codec.X_TRACE_HMAC], [KEY]).trace_id
            (root,) = receiver.wait_for(
                lambda s: s.trace_id == trace_id and s.kind == "SERVER")
            time.sleep(0.2)
            spans = [s for s in receiver.spans() if s.trace_id == trace_id]
    assert traced[0] >= 500 and (traced[0], traced[2]) == (untraced[0], untraced[2])
    assert root.status_code == "ERROR"
    assert root.attributes["http.status_code"] == traced[0]
    failed = [s for s in spans if s.status_code == "ERROR" and s is not root]
    assert any(s.scope == REDIS_SCOPE for s in failed), render_tree(spans)
    controller = next(s for s in spans if s.name == "redis_message_controller")
    assert controller.status_code == "ERROR"
    assert any(name == "exception" for name, _ in controller.events)


def test_sample_ratio_traces_requests_without_headers(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    extra = tracing(receiver, otel={"sample_ratio": "1.0"})
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        assert server.request("PUT", "/v2/queues/sampled")[0] == 201
        (root,) = receiver.wait_for(lambda s: s.kind == "SERVER" and s.name.startswith(
            "PUT"))
        time.sleep(0.2)
        spans = [s for s in receiver.spans() if s.trace_id == root.trace_id]
    assert root.parent_span_id is None  # a new trace, started here
    assert root.attributes["zaqar_otel.trace_origin"] == "sample_ratio"
    assert assert_one_tree(spans) is root and len(spans) > 1


def test_dropped_spans_are_logged_once_and_counted_when_export_resumes(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    receiver.mode = "error"  # the collector answers 503 to every export
    extra = tracing(receiver, otel={"timeout": "1"})
    traces = set()
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        for n in range(20):
            headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
            traces.add(codec.decode(headers[codec.X_TRACE_INFO],
                                     headers[codec.X_TRACE_HMAC], [KEY]).trace_id)
            status = server.request("PUT", f"/v2/queues/drop-{n}", headers=headers)[0]
            assert status == 201
            time.sleep(0.05)  # several export attempts, all refused
        server.wait_for_log("zaqar-otel: dropping spans", timeout=10)
        receiver.mode = "ok"
        canary(server, receiver, clear=False)  # export resumes, no restart
        log = server.wait_for_log("spans were dropped meanwhile", timeout=10)
        # Refused exports are not recorded by the receiver: what is here was
        # exported after the collector came back.
        arrived = [s for s in receiver.spans() if s.trace_id in traces]
    assert log.count("zaqar-otel: dropping spans") == 1, log
    assert "Failed to export" not in log and "Transient error" not in log
    (dropped,) = re.findall(r"works again; (\d+) spans were dropped", log)
    # Every request's server span either arrived or was counted as dropped
    # (how many of each depends on when the retries gave up).
    missing_servers = 20 - sum(1 for s in arrived if s.kind == "SERVER")
    assert int(dropped) >= max(missing_servers, 1), log
