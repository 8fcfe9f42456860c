"""One trace, one set of attribute names: ``OTEL_SEMCONV_STABILITY_OPT_IN``.

The contrib instrumentations name their attributes by the opt-in (old names
without it, the stable ones with ``http`` / ``database``, both with the
``/dup`` variants); zaqar-otel's server spans, webhook calls and HTTP
metric follow the same variable, read once at set-up. A real
zaqar-otel-server is driven through a profiled producer/consumer session
(and a webhook delivery) in each mode, on Redis + SQL and on the MongoDB
wire protocol (SecantusDB), and every span of the trace, and every HTTP
metric point, is checked at a real OTLP receiver: the mode's names are
there, the other mode's never.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import pytest

from harness.servers import MongoServer
from harness.tracing import (
    KEY,
    OTEL_SERVER,
    PYMONGO_SCOPE,
    REDIS_SCOPE,
    SQLALCHEMY_SCOPE,
    ProfiledSession,
    assert_well_formed,
    sql_url,
    tracing,
)
from harness.websocket import exchange
from zaqar_otel.demo.client import profiled, zaqar_client
from zaqar_otel.demo.processes import RedisServer, WebhookSubscriber
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.tree import render_tree
from zaqar_otel.demo.zaqar_server import ZaqarServer, mongo, redis_sql
from zaqar_otel.metrics import recorder
from zaqar_otel.propagation import codec

pytestmark = pytest.mark.functional

#: Names of the old HTTP and database conventions (as the contrib
#: instrumentations give them without opt-in) ...
OLD_NAMES = frozenset((
    "http.method", "http.status_code", "http.target", "http.url", "http.scheme",
    "http.host", "http.flavor", "http.user_agent", "http.server_name",
    "net.host.name", "net.host.port", "net.peer.ip", "net.peer.name",
    "net.peer.port", "net.transport", "net.protocol.name",
    "db.system", "db.statement", "db.name", "db.operation", "db.user",
    "db.redis.database_index", "db.mongodb.collection",
))
#: ... and their stable successors.
NEW_NAMES = frozenset((
    "http.request.method", "http.response.status_code", "url.path", "url.full",
    "url.scheme", "server.address", "server.port", "client.address",
    "client.port", "network.protocol.version", "network.transport",
    "network.protocol.name", "network.peer.address", "network.peer.port",
    "user_agent.original", "error.type",
    "db.system.name", "db.query.text", "db.namespace", "db.operation.name",
    "db.collection.name",
))
#: mode -> (OTEL_SEMCONV_STABILITY_OPT_IN, old names given, new names given)
MODES = {
    "default": (None, True, False),
    "stable": ("http,database", False, True),
    "dup": ("http/dup,database/dup", True, True),
}
# What each mode must show on the spans of the session, at least.
MUST = {
    "server": ({"http.method", "http.status_code", "net.host.name"},
               {"http.request.method", "http.response.status_code",
                "server.address"}),
    "redis": ({"db.system", "db.statement", "net.peer.name", "net.peer.port"},
              {"db.system.name", "db.query.text", "server.address",
               "server.port"}),
    "sql": ({"db.system", "db.statement", "db.operation"},
            {"db.system.name", "db.query.text", "db.operation.name",
             "db.collection.name"}),
    "sql-network": ({"net.peer.name", "net.peer.port"},
                    {"server.address", "server.port"}),
    "mongodb": ({"db.system", "db.name", "net.peer.name"},
                {"db.system.name", "db.namespace", "server.address"}),
    "webhook": ({"http.method", "http.url", "http.status_code", "http.user_agent"},
                {"http.request.method", "url.full", "http.response.status_code",
                 "user_agent.original", "server.address", "server.port"}),
    "websocket": ({"net.protocol.name"}, {"network.protocol.name"}),
}


def _env(mode: str) -> dict[str, str]:
    opt_in = MODES[mode][0]
    # An empty value is no opt-in, whatever the test runner's environment has.
    return {"OTEL_SEMCONV_STABILITY_OPT_IN": opt_in or ""}


def _check_names(spans: Iterable[ReceivedSpan], mode: str, tree: str) -> None:
    _, old, new = MODES[mode]
    for span in spans:
        names = set(span.attributes)
        if not old:
            assert not names & OLD_NAMES, (mode, span.name, names & OLD_NAMES, tree)
        if not new:
            assert not names & NEW_NAMES, (mode, span.name, names & NEW_NAMES, tree)


def _must(spans: list[ReceivedSpan], kind: str, mode: str, tree: str) -> None:
    assert spans, (kind, tree)
    _, old, new = MODES[mode]
    wanted = (MUST[kind][0] if old else set()) | (MUST[kind][1] if new else set())
    for span in spans:
        assert wanted <= set(span.attributes), (mode, kind, span.name,
                                                wanted - set(span.attributes))


def _session(server: ZaqarServer, receiver: OTLPReceiver, mode: str,
             controller: str) -> ProfiledSession:
    session = ProfiledSession(server, receiver, "orders")
    assert_well_formed(session, controller)
    tree = render_tree(session.spans)
    _check_names(session.spans, mode, tree)
    _must([s for s in session.spans if s.kind == "SERVER"], "server", mode, tree)
    for s in session.spans:
        # No mode exports a query string or a message body.
        assert "?" not in str(s.attributes.get("http.target", "")), s.attributes
    return session


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sql", ["sqlite", "mariadb", "postgresql"])
def test_redis_sql_and_webhook_spans_and_metrics_follow_the_mode(
        mode: str, sql: str, redis: RedisServer) -> None:
    url = sql_url(sql)
    with OTLPReceiver() as receiver, WebhookSubscriber() as subscriber:
        extra = tracing(receiver, profiler={"trace_requests": "true"},
                        otel={"metrics": "true", "metrics_export_interval": "200"})
        extra["storage"] = {"message_pipeline": "zaqar.notification.notifier"}
        with ZaqarServer(redis_sql(redis.url, url), command=OTEL_SERVER,
                         extra=extra, env=_env(mode)) as server:
            session = _session(server, receiver, mode, "redis_message_controller")
            # A webhook delivery: its own trace, the requests instrumentation's
            # CLIENT span under the deliver span.
            client = zaqar_client(server.url)
            queue = client.queue("hooked", force_create=True)
            client.subscription("hooked", subscriber=subscriber.url + "/hook",
                                ttl=600)
            with profiled(KEY):
                queue.post([{"body": {"event": "created"}, "ttl": 120}])
            deliver = receiver.wait_for(lambda s: s.name == "deliver hooked",
                                        timeout=20)[0]
            call = receiver.wait_for(
                lambda s: s.kind == "CLIENT" and s.trace_id == deliver.trace_id,
                timeout=20)[0]
            points = receiver.wait_for_points(
                lambda ps: any(p.metric in (recorder.HTTP_DURATION,
                                            recorder.OLD_HTTP_DURATION)
                               and p.attributes.get("http.route") ==
                               "/v2/queues/{queue_name}" for p in ps), timeout=20)
            log = server.log_text()
    assert "Traceback" not in log, log
    tree = render_tree(session.spans)
    _must([s for s in session.spans if s.scope == REDIS_SCOPE], "redis", mode, tree)
    statements = [s for s in session.spans if s.scope == SQLALCHEMY_SCOPE]
    _must(statements, "sql", mode, tree)
    if sql != "sqlite":
        _must(statements, "sql-network", mode, tree)
    # Named by operation and table in every mode.
    assert "INSERT Queues" in {s.name for s in statements}, tree
    _sql_operation_names(statements, mode, tree)
    _check_names([deliver, call], mode, render_tree([deliver, call]))
    _must([call], "webhook", mode, render_tree([deliver, call]))
    # The HTTP metric: the mode's name, unit and attributes.
    _, old, new = MODES[mode]
    http = [p for p in points
            if p.metric in (recorder.HTTP_DURATION, recorder.OLD_HTTP_DURATION)]
    assert {p.metric for p in http} == (
        {recorder.OLD_HTTP_DURATION} if old else set()) | (
        {recorder.HTTP_DURATION} if new else set())
    for p in http:
        names = set(p.attributes)
        if p.metric == recorder.OLD_HTTP_DURATION:
            assert p.unit == "ms" and "http.method" in names, p
            assert not names & NEW_NAMES, (p.metric, names)
        else:
            assert p.unit == "s" and "http.request.method" in names, p
            assert not names & OLD_NAMES, (p.metric, names)


def _sql_operation_names(statements: list[ReceivedSpan], mode: str,
                         tree: str) -> None:
    """The old ``db.operation`` is the span's name (``INSERT Queues``), as
    it always was; the stable ``db.operation.name`` is the operation alone
    (``INSERT``) and ``db.collection.name`` the table, the span named
    ``{db.operation.name} {db.collection.name}``."""
    _, old, new = MODES[mode]
    for span in statements:
        attributes = span.attributes
        if old:
            assert attributes["db.operation"] == span.name, (span.name, attributes)
        if new:
            operation = attributes["db.operation.name"]
            table = attributes.get("db.collection.name")
            assert span.name == (f"{operation} {table}" if table else operation), (
                span.name, attributes)
    if new:
        inserts = [s.attributes for s in statements if s.name == "INSERT Queues"]
        assert all(a["db.operation.name"] == "INSERT"
                   and a["db.collection.name"] == "Queues" for a in inserts), tree
        # Each statement Zaqar's SQL store makes names its table.
        assert all("db.collection.name" in s.attributes for s in statements), tree


@pytest.mark.parametrize("mode", MODES)
def test_mongodb_wire_spans_follow_the_mode(mode: str) -> None:
    with OTLPReceiver() as receiver, MongoServer() as mongo_server:
        with ZaqarServer(mongo(mongo_server.url), command=OTEL_SERVER,
                         extra=tracing(receiver), env=_env(mode)) as server:
            session = _session(server, receiver, mode, "mongodb_message_controller")
    tree = render_tree(session.spans)
    _must([s for s in session.spans if s.scope == PYMONGO_SCOPE], "mongodb", mode,
          tree)


@pytest.mark.parametrize("mode", MODES)
def test_websocket_spans_follow_the_mode(mode: str, redis: RedisServer) -> None:
    headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
    info = codec.decode(headers[codec.X_TRACE_INFO], headers[codec.X_TRACE_HMAC],
                        [KEY])
    assert info is not None

    def request(action: str, body: dict[str, object]) -> dict[str, object]:
        return {"action": action, "body": body, "headers": {
            "Client-ID": str(uuid.uuid4()), "X-Project-ID": "p", **headers}}

    with OTLPReceiver() as receiver:
        extra = tracing(receiver, profiler={"trace_websocket_transport": "true"})
        with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                         websocket=True, env=_env(mode)) as server:
            responses = exchange(server.port, [
                request("queue_create", {"queue_name": "ws"}),
                request("message_post", {"queue_name": "ws", "messages": [
                    {"body": {"n": 1}, "ttl": 120}]})])
            receiver.wait_for(lambda s: s.trace_id == info.trace_id
                              and s.name == "websocket message_post")
            time.sleep(0.3)
            spans = [s for s in receiver.spans() if s.trace_id == info.trace_id]
    assert [r["headers"]["status"] for r in responses] == [201, 201], responses
    tree = render_tree(spans)
    _check_names(spans, mode, tree)
    _must([s for s in spans if s.kind == "SERVER"], "websocket", mode, tree)
    _must([s for s in spans if s.scope == REDIS_SCOPE], "redis", mode, tree)
