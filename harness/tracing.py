"""What the tests, the peers and the benchmarks share about a traced Zaqar.

The HMAC key the tests sign with, the commands that start Zaqar with the
hook, zaqar.conf sections with every kind of tracing on (to a receiver:
``tracing``; to a collector that samples: ``to_collector``), a profiled
producer/consumer session as the CLI sends it and the checks every deployment
must pass (one well-nested tree: ``assert_one_tree``), and a canary request
that flushes what was exported before it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Mapping

import zaqar_otel
from harness.servers import mariadb_url, postgres_url, require_mariadb, require_postgres
from zaqar_otel.demo.client import producer_consumer_session, profiled, zaqar_client
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.tree import by_trace, render_tree
from zaqar_otel.demo.zaqar_server import ZaqarServer
from zaqar_otel.propagation import codec, idmap

KEY = "zaqar-otel-functional-key"
OTEL_SERVER = ("{bin}/zaqar-otel-server", "--config-file", "{config}")
OTEL_GUNICORN = (
    "{bin}/gunicorn", "--bind", "127.0.0.1:{port}", "--threads", "8",
    "zaqar_otel.wsgi:application",
)  # fmt: skip
ALL_TRACING = {
    "enabled": "true",
    "hmac_keys": KEY,
    "trace_wsgi_transport": "true",
    "trace_message_store": "true",
    "trace_management_store": "true",
    "trace_redis": "true",
    # A span per Redis command, which the tests' trees name; the default,
    # an event per command, is tests/functional/test_redis_command_events.py's.
    "redis_command_spans": "true",
    "trace_mongodb": "true",
    "trace_sqlalchemy": "true",
    "trace_pooling": "true",
}
# The requests of producer_consumer_session, by route template.
SESSION_ROUTES = {
    "PUT /v2/queues/{queue_name}",
    "POST /v2/queues/{queue_name}/messages",
    "GET /v2/queues/{queue_name}/messages",
    "POST /v2/queues/{queue_name}/claims",
    "DELETE /v2/queues/{queue_name}/messages/{message_id}",
    "DELETE /v2/queues/{queue_name}",
}
REDIS_SCOPE = "opentelemetry.instrumentation.redis"
PYMONGO_SCOPE = "opentelemetry.instrumentation.pymongo"
SQLALCHEMY_SCOPE = "opentelemetry.instrumentation.sqlalchemy"
_SLACK_NS = 1_000_000  # clocks tick coarsely on some hosts: allow 1 ms


# The switches tracing() leaves off: every one on with it.
EVERYTHING = {"trace_message_links": "true", "trace_websocket_transport": "true",
              "trace_requests": "true"}


def tracing(
    receiver: OTLPReceiver,
    profiler: Mapping[str, str] | None = None,
    otel: Mapping[str, str] | None = None,
) -> dict[str, dict[str, str]]:
    """zaqar.conf sections: every kind of tracing on, exported to ``receiver``."""
    return {
        "profiler": {**ALL_TRACING, **(profiler or {})},
        "opentelemetry": {
            "endpoint": receiver.endpoint,
            "schedule_delay": "50",
            **(otel or {}),
        },
    }


def traced_extra(receiver: OTLPReceiver, **otel: str) -> dict[str, dict[str, str]]:
    """``tracing`` with ``EVERYTHING`` on and a 2 s ``shutdown_timeout``."""
    return tracing(receiver, profiler=EVERYTHING, otel={"shutdown_timeout": "2",
                                                        **otel})


def to_collector(endpoint: str, key: str = KEY,
                 **otel: str) -> dict[str, dict[str, str]]:
    """zaqar.conf sections: the request, the stores and Redis / SQL traced,
    every request (the collector samples), exported OTLP/HTTP to a
    collector's ``endpoint``; ``otel`` adds ``[opentelemetry]`` options."""
    return {
        "profiler": {"enabled": "true", "hmac_keys": key,
                     "trace_wsgi_transport": "true",
                     "trace_message_store": "true", "trace_redis": "true",
                     "redis_command_spans": "true",
                     "trace_management_store": "true",
                     "trace_sqlalchemy": "true"},
        "opentelemetry": {"exporter": "otlp_http", "endpoint": endpoint,
                          "schedule_delay": "200", "sample_ratio": "1.0",
                          **otel},
    }


class ProfiledSession:
    """One ``producer_consumer_session`` under ``openstack --os-profile KEY``."""

    def __init__(self, server: ZaqarServer, receiver: OTLPReceiver, queue: str):
        self.marker = "marker-" + uuid.uuid4().hex
        with profiled(KEY) as prof:
            self.base_id, self.parent_id = prof.get_base_id(), prof.get_id()
            self.record = producer_consumer_session(
                zaqar_client(server.url), queue, marker=self.marker)
        self.trace_id = idmap.trace_id_from_base_id(self.base_id)
        # The CLI is the root of its OSProfiler trace (parent_id == base_id)
        # and exports no span: each server span is then a root, as
        # osprofiler's own driver makes it; else it is the caller's child.
        self.caller_span_id = (None if self.parent_id == self.base_id
                               else idmap.span_id_from_uuid(self.parent_id))
        # The queue delete is the last request: once its server span is here,
        # every span of the session is (children end, and so are queued for
        # export, before their parents).
        receiver.wait_for(lambda s: s.trace_id == self.trace_id and s.kind == "SERVER"
                          and s.name == "DELETE /v2/queues/{queue_name}")
        # Served by several worker processes (uwsgi, gunicorn), an earlier
        # request's spans may still be on their way from another one: wait
        # for a server span of each request (create, post, list, claim, one
        # delete per claimed message, the queue's delete).
        with contextlib.suppress(AssertionError):
            receiver.wait_for(lambda s: s.trace_id == self.trace_id
                              and s.kind == "SERVER",
                              count=5 + len(self.record.deleted_ids), timeout=2.0)
        self.spans = [s for s in receiver.spans() if s.trace_id == self.trace_id]
        self.raw = receiver.raw

    def requests(self) -> list[tuple[ReceivedSpan, list[ReceivedSpan]]]:
        """Each server span with its whole subtree, each checked as one tree."""
        children: dict[int | None, list[ReceivedSpan]] = {}
        for s in self.spans:
            children.setdefault(s.parent_span_id, []).append(s)
        out = []
        for root in children.get(self.caller_span_id, []):
            tree, todo = [], [root]
            while todo:
                span = todo.pop()
                tree.append(span)
                todo.extend(children.get(span.span_id, []))
            assert assert_one_tree(tree, remote_parent=self.caller_span_id) is root
            out.append((root, tree))
        return out

    def named(self, prefix: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def children_of(self, parent_prefix: str, scope: str) -> list[ReceivedSpan]:
        """Spans of ``scope`` whose parent is a ``parent_prefix`` span."""
        parents = {s.span_id for s in self.named(parent_prefix)}
        return [s for s in self.spans
                if s.scope == scope and s.parent_span_id in parents]


def assert_well_formed(session: ProfiledSession, controller_prefix: str) -> None:
    """What issue 3 asks of every deployment's profiled session."""
    spans = session.spans
    tree = render_tree(spans)
    # One trace, whose id is the base_id the CLI prints, in Jaeger's hex form.
    assert f"{session.trace_id:032x}" == session.base_id.replace("-", "")
    assert len({s.span_id for s in spans}) == len(spans), "duplicate span ids\n" + tree
    # Every span belongs to a request whose server span is a root (the CLI
    # exports no span) or the caller's child.
    requests = session.requests()
    assert sum(len(t) for _, t in requests) == len(spans), tree
    assert {root.name for root, _ in requests} == SESSION_ROUTES, tree
    for root, _ in requests:
        assert root.kind == "SERVER"
        assert root.attributes["http.route"] == root.name.split(" ", 1)[1]
        # The stable HTTP names (OTEL_SEMCONV_STABILITY_OPT_IN=http) or the
        # old ones (no opt-in): tests/functional/test_semconv.py checks which.
        method = root.attributes.get("http.request.method",
                                     root.attributes.get("http.method"))
        status = root.attributes.get("http.response.status_code",
                                     root.attributes.get("http.status_code"))
        assert method == root.name.split(" ", 1)[0]
        assert isinstance(status, int) and 200 <= status < 300
        assert "url.query" not in root.attributes
        assert "?" not in str(root.attributes.get("http.target", ""))
        assert root.attributes["zaqar_otel.trace_origin"] == "osprofiler"
    # Controller trace points with their full names, under the server spans.
    controllers = session.named(controller_prefix)
    assert controllers, tree
    assert all(s.attributes.get("code.function.name") for s in controllers)
    assert all(not s.name.endswith("controlle") for s in spans)
    # zaqar-otel's own spans say which distro and version made them.
    ours = [s for s in spans if s.scope == "zaqar_otel"]
    assert ours and {s.scope_version for s in ours} == {zaqar_otel.__version__}
    assert {s.resource.get("telemetry.distro.name") for s in spans} == {"zaqar-otel"}
    assert {s.resource.get("telemetry.distro.version") for s in spans} == {
        zaqar_otel.__version__}
    # No message body anywhere in what was exported.
    assert session.marker.encode() not in session.raw
    assert b"updated" not in session.raw


def sql_url(kind: str) -> str | None:
    if kind == "mariadb":
        require_mariadb()
        return mariadb_url()
    if kind == "postgresql":
        require_postgres()
        return postgres_url()
    return None


def canary(server: ZaqarServer, receiver: OTLPReceiver, clear: bool = True) -> int:
    """A validly signed request whose span, once exported, flushes the rest.

    Spans are exported in the order they end: once the canary's is here,
    every span of an earlier request is too. Returns the canary's trace id.
    """
    headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
    info = codec.decode(headers[codec.X_TRACE_INFO], headers[codec.X_TRACE_HMAC],
                        [KEY])
    assert info is not None
    trace_id = idmap.trace_id_from_base_id(info.base_id)
    assert server.request("GET", "/v2/queues", headers=headers)[0] == 200
    receiver.wait_for(lambda s: s.trace_id == trace_id and s.kind == "SERVER")
    if clear:
        receiver.clear()
    return trace_id


def osprofiler_driver(port: int, key: str = KEY,
                      **profiler: str) -> dict[str, dict[str, str]]:
    """zaqar.conf sections for plain Zaqar tracing through osprofiler's own
    OTLP driver (the anchor), exporting to an OTLP/HTTP receiver on ``port``
    of loopback: the driver appends /v1/traces and speaks plain http."""
    return {"profiler": {
        "enabled": "true",
        "hmac_keys": key,
        "trace_wsgi_transport": "true",
        "trace_message_store": "true",
        "trace_management_store": "true",
        "connection_string": f"otlp://127.0.0.1:{port}",
        **profiler,
    }}


def assert_one_tree(
    spans: Iterable[ReceivedSpan], remote_parent: int | None = None
) -> ReceivedSpan:
    """Assert the spans form exactly one well-nested trace; return its root.

    ``remote_parent`` is the span id the root may point at when the trace
    continues a context propagated from elsewhere.
    """
    spans = list(spans)
    problems: list[str] = []
    if not spans:
        raise AssertionError("no spans")
    if len(by_trace(spans)) != 1:
        problems.append(f"{len(by_trace(spans))} trace ids, expected 1")
    by_id: dict[int, ReceivedSpan] = {}
    for s in spans:
        if s.span_id in by_id:
            problems.append(f"duplicate span id {s.span_id_hex} ({s.name})")
        by_id[s.span_id] = s
    roots = [s for s in spans if s.parent_span_id in (None, remote_parent)]
    if len(roots) != 1:
        names = ", ".join(s.name for s in roots) or "none"
        problems.append(f"{len(roots)} roots, expected 1: {names}")
    for s in spans:
        if s.parent_span_id in (None, remote_parent):
            continue
        parent = by_id.get(s.parent_span_id)
        if parent is None:
            problems.append(
                f"{s.name}: parent {s.parent_span_id:016x} is not in the list"
            )
        elif (
            s.start_ns < parent.start_ns - _SLACK_NS
            or s.end_ns > parent.end_ns + _SLACK_NS
        ):
            # Times relative to the parent's start read better than epoch ns.
            start, end = ((t - parent.start_ns) / 1e6 for t in (s.start_ns, s.end_ns))
            problems.append(
                f"{s.name} [{start:+.2f}ms, {end:+.2f}ms] is not inside "
                f"{parent.name} [0, {parent.duration_ms:.2f}ms]"
            )
    if problems:
        raise AssertionError(
            "spans are not one tree:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\n"
            + render_tree(spans)
        )
    return roots[0]


def arrived(receiver: OTLPReceiver, trace_ids: list[int],
            timeout: float = 30.0) -> list[ReceivedSpan]:
    """The server spans of ``trace_ids`` received within ``timeout``."""
    wanted = set(trace_ids)

    def mine(s: ReceivedSpan) -> bool:
        return s.kind == "SERVER" and s.trace_id in wanted

    try:
        return receiver.wait_for(mine, count=len(wanted), timeout=timeout)
    except AssertionError:
        return [s for s in receiver.spans() if mine(s)]
