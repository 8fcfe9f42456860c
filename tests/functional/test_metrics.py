"""Zaqar's metrics and trace-naming log lines, from a real Zaqar process.

Each test starts ``zaqar-otel-server`` on embedded Redis and SQLite, sends
requests it counts itself, and reads what arrives at a real OTLP receiver
over the wire (``/v1/metrics`` or the gRPC MetricsService), or what Zaqar
wrote to its log file.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness.tracing import KEY, OTEL_SERVER, tracing
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedPoint
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.metrics import recorder
from zaqar_otel.propagation import codec, idmap

pytestmark = pytest.mark.functional

QUEUES = ("orders", "invoices", "audit")
POSTS, PER_POST = 3, 2  # per queue


def metrics_on(receiver: OTLPReceiver, protocol: str = "http",
               **otel: str) -> dict[str, dict[str, str]]:
    """Every kind of tracing on, unsigned requests untraced, metrics every 0.2 s."""
    options = {"sample_ratio": "0", "metrics": "true",
               "metrics_export_interval": "200", **otel}
    if protocol == "grpc":
        options["exporter"] = "otlp_grpc"
    return tracing(receiver, otel=options)


def signed() -> tuple[int, dict[str, str]]:
    """Signed OSProfiler headers, as ``openstack --os-profile KEY`` sends
    them (a root caller), and the trace id the request's trace gets."""
    base_id = str(uuid.uuid4())
    return idmap.trace_id_from_base_id(base_id), codec.encode(base_id, base_id, KEY)


def header(headers: dict[str, str], name: str) -> str:
    return next(v for k, v in headers.items() if k.lower() == name)


class Traffic:
    """Requests sent to Zaqar, counted by route and by queue as sent."""

    def __init__(self, server: ZaqarServer) -> None:
        self.server = server
        self.routes: dict[tuple[str, str, int], int] = {}
        self.sent: dict[str, int] = {}
        self.claimed: dict[str, int] = {}
        self.listed: dict[str, int] = {}
        self.deleted: dict[str, int] = {}

    def call(self, method: str, route: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        status, got, payload = self.server.request(method, path, body, headers)
        key = (method, route, status)
        self.routes[key] = self.routes.get(key, 0) + 1
        return status, got, payload

    def session(self, queue: str, headers: dict[str, str] | None = None) -> None:
        base = f"/v2/queues/{queue}"
        assert self.call("PUT", "/v2/queues/{queue_name}", base,
                         headers=headers)[0] == 201
        for i in range(POSTS):
            status, _, _ = self.call(
                "POST", "/v2/queues/{queue_name}/messages", base + "/messages",
                {"messages": [{"body": {"n": i, "k": k}, "ttl": 300}
                              for k in range(PER_POST)]}, headers)
            assert status == 201
            self.sent[queue] = self.sent.get(queue, 0) + PER_POST
        status, _, listed = self.call(
            "GET", "/v2/queues/{queue_name}/messages",
            base + "/messages?echo=true&limit=4", headers=headers)
        assert status == 200
        self.listed[queue] = self.listed.get(queue, 0) + len(listed["messages"])
        status, _, claimed = self.call(
            "POST", "/v2/queues/{queue_name}/claims", base + "/claims?limit=5",
            {"ttl": 60, "grace": 60}, headers)
        assert status == 201
        self.claimed[queue] = self.claimed.get(queue, 0) + len(claimed["messages"])
        for message in claimed["messages"]:
            path = message["href"]
            assert self.call("DELETE", "/v2/queues/{queue_name}/messages/{message_id}",
                             path, headers=headers)[0] == 204
            self.deleted[queue] = self.deleted.get(queue, 0) + 1


def by(points: list[ReceivedPoint],
       *names: str) -> dict[tuple[Any, ...], ReceivedPoint]:
    return {tuple(p.attributes.get(n) for n in names): p for p in points}


def totals(receiver: OTLPReceiver, metric: str,
           *names: str) -> dict[tuple[Any, ...], float]:
    """The latest (cumulative) value of each series, by these attributes."""
    return {k: (p.count if p.kind == "histogram" else p.value)
            for k, p in by(receiver.latest(metric), *names).items()}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_request_is_counted_at_the_receiver(redis: RedisServer,
                                                   protocol: str) -> None:
    """Untraced requests (no header, sample_ratio 0) and a traced session:
    every one in the HTTP and messaging metrics, exactly as sent; the traced
    one's trace id as the exemplar of the points it fell in."""
    with OTLPReceiver(protocol) as rx, ZaqarServer(
            redis_sql(redis.url), command=OTEL_SERVER,
            extra=metrics_on(rx, protocol)) as server:
        traffic = Traffic(server)
        for queue in QUEUES:
            traffic.session(queue)
        trace_id, headers = signed()
        traffic.session("traced", headers)
        expected = {(m, r, s): n for (m, r, s), n in traffic.routes.items()}

        def arrived(points: list[ReceivedPoint]) -> bool:
            # The old HTTP names: no OTEL_SEMCONV_STABILITY_OPT_IN
            # (test_semconv.py checks each mode's).
            got = totals(rx, recorder.OLD_HTTP_DURATION, "http.method",
                         "http.route", "http.status_code")
            return all(got.get(k) == n for k, n in expected.items())

        rx.wait_for_points(arrived, timeout=20)
        # The metric export can come before the span batch with the last
        # traced request in it: wait for the spans the exemplars name.
        post_points = [p for p in rx.points(recorder.OLD_HTTP_DURATION)
                       if p.attributes.get("http.route") ==
                       "/v2/queues/{queue_name}/messages" and p.exemplars]
        named = {e[1] for p in post_points for e in p.exemplars}
        rx.wait_for(lambda s: s.span_id in named, count=len(named), timeout=20)
        spans = rx.spans()
    sent = totals(rx, recorder.SENT, "messaging.destination.name")
    consumed = totals(rx, recorder.CONSUMED, "messaging.operation.name",
                      "messaging.destination.name")
    settled = totals(rx, recorder.SETTLED, "messaging.destination.name")
    waits = totals(rx, recorder.WAIT, "messaging.operation.name",
                   "messaging.destination.name")
    for queue in (*QUEUES, "traced"):
        assert sent[(queue,)] == traffic.sent[queue] == POSTS * PER_POST
        assert consumed[("claim", queue)] == traffic.claimed[queue]
        assert consumed[("list", queue)] == traffic.listed[queue]
        assert settled[(queue,)] == traffic.deleted[queue]
        assert waits[("claim", queue)] == traffic.claimed[queue]
        assert waits[("list", queue)] == traffic.listed[queue]
    durations = totals(rx, recorder.OPERATION_DURATION, "messaging.operation.name",
                       "messaging.destination.name")
    assert durations[("post", "orders")] == POSTS
    assert durations[("delete", "orders")] == traffic.deleted["orders"]
    # The units and boundaries of the conventions; cumulative, as Prometheus needs.
    http = rx.latest(recorder.OLD_HTTP_DURATION)[0]
    assert http.unit == "ms" and http.cumulative and http.explicit_bounds[1] == 5.0
    assert rx.latest(recorder.SENT)[0].unit == "{message}"
    assert rx.latest(recorder.SENT)[0].monotonic
    # Only the signed session was traced; its id is the exemplars' id.
    assert {s.trace_id for s in spans} == {trace_id}
    exemplar_traces = {e[0] for p in rx.points() for e in p.exemplars}
    assert exemplar_traces == {trace_id}
    # The post route's points as they were when the spans were taken: a
    # later metric export may name spans of a later batch.
    assert post_points, "no exemplar on the post route"
    server_span_ids = {s.span_id for s in spans if s.kind == "SERVER"}
    assert {e[1] for p in post_points for e in p.exemplars} <= server_span_ids
    # Each point is of the exporting process, named as its spans are.
    assert http.resource["service.name"] == spans[0].resource["service.name"]


def test_queues_past_the_cap_are_counted_under_other(redis: RedisServer) -> None:
    with OTLPReceiver() as rx, ZaqarServer(
            redis_sql(redis.url), command=OTEL_SERVER,
            extra=metrics_on(rx, metrics_max_queues="2",
                             metrics_per_project="true")) as server:
        traffic = Traffic(server)
        for queue in ("q1", "q2", "q3", "q4"):
            traffic.session(queue)

        def all_sent(points: list[ReceivedPoint]) -> bool:
            sent = sum(p.value for p in rx.latest(recorder.SENT))
            return sent == 4 * POSTS * PER_POST

        rx.wait_for_points(all_sent, timeout=20)
        log = server.log_text()
    sent = totals(rx, recorder.SENT, "messaging.destination.name", "zaqar.project.id")
    assert sent == {("q1", "test-project"): 6, ("q2", "test-project"): 6,
                    ("_other", "_other"): 12}
    assert log.count("metrics_max_queues") == 1


def test_metrics_alone_with_no_request_traced(redis: RedisServer) -> None:
    """trace_wsgi_transport = false: measured, not traced, signed or not."""
    with OTLPReceiver() as rx, ZaqarServer(
            redis_sql(redis.url), command=OTEL_SERVER,
            extra=tracing(rx, profiler={"trace_wsgi_transport": "false"},
                          otel={"metrics": "true",
                                "metrics_export_interval": "200"})) as server:
        _, headers = signed()
        traffic = Traffic(server)
        traffic.session("alone", headers)

        def all_sent(points: list[ReceivedPoint]) -> bool:
            return sum(p.value for p in rx.latest(recorder.SENT)) == POSTS * PER_POST

        rx.wait_for_points(all_sent, timeout=20)
    assert rx.spans() == []
    assert not any(p.exemplars for p in rx.points())


# -- logs that name their trace -------------------------------------------------

FORMAT = ("%(asctime)s %(levelname)s %(name)s [%(request_id)s] "
          "trace=%(otel_trace_id)s span=%(otel_span_id)s %(message)s")
DEFAULT_FORMAT = ("%(asctime)s %(levelname)s %(name)s [-] trace=%(otel_trace_id)s "
                  "%(message)s")


def test_log_lines_of_a_traced_request_carry_its_trace_id(
        redis: RedisServer, receiver: OTLPReceiver, tmp_path: Path) -> None:
    """Zaqar's own log file, formatted by oslo.log: the lines of a signed
    request name its trace and span; the server span names the request id
    of the response header; other lines have empty fields, none fails."""
    log_file = tmp_path / "zaqar.log"
    extra = tracing(receiver, otel={"sample_ratio": "0"})
    extra["DEFAULT"] = {"log_file": str(log_file), "debug": "true",
                        "logging_context_format_string": FORMAT,
                        "logging_default_format_string": DEFAULT_FORMAT}
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        trace_id, headers = signed()
        status, traced_headers, _ = server.request("PUT", "/v2/queues/logged",
                                                   headers=headers)
        assert status == 201
        status, plain_headers, _ = server.request("GET", "/v2/queues/logged/stats")
        assert status == 200
        span = receiver.wait_for(lambda s: s.kind == "SERVER"
                                 and s.trace_id == trace_id)[0]
        output = server.log_text()
    traced_id = header(traced_headers, "x-openstack-request-id")
    plain_id = header(plain_headers, "x-openstack-request-id")
    assert span.attributes["openstack.request_id"] == traced_id
    lines = log_file.read_text().splitlines()
    traced = [line for line in lines if f"[{traced_id}]" in line]
    plain = [line for line in lines if f"[{plain_id}]" in line]
    assert traced and plain, "\n".join(lines[-20:])
    spans = {s.span_id for s in receiver.spans() if s.trace_id == trace_id}
    for line in traced:
        found = re.search(r"trace=(\w*) span=(\w*)", line)
        assert found and found[1] == f"{trace_id:032x}", line
        assert int(found[2], 16) in spans, line
    for line in plain:
        assert "trace= span= " in line, line
    # Lines outside requests (start-up) use the default format: empty, intact.
    assert any("[-] trace= " in line for line in lines)
    assert "Logging error" not in output and "KeyError" not in output
