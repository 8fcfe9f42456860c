"""Zaqar's metrics in process: the aggregators, the bounds, what goes on the wire.

The SDK's own OTLP metrics encoder turns what the recorder collects into an
``ExportMetricsServiceRequest``, and the demo receiver's decoder reads it
back: the tests look at what a collector would see.
"""

from __future__ import annotations

import gc
import logging
import os
import time
import tracemalloc
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanContext, TraceFlags

from zaqar_otel import _sdk
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedPoint, decode_metrics_request
from zaqar_otel.metrics import instruments, recorder
from zaqar_otel.metrics.cardinality import OTHER, Destinations
from zaqar_otel.metrics.pipeline import Pipeline
from zaqar_otel.metrics.recorder import Recorder
from zaqar_otel.settings import MetricsSettings

SAMPLED = SpanContext(0x4A0B6A3E1C2D4E5F8A9B0C1D2E3F4A5B, 0x1122334455667788,
                      is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
ENVIRON = {"REQUEST_METHOD": "GET", "wsgi.url_scheme": "http",
           "SERVER_PROTOCOL": "HTTP/1.1"}
ROUTE = "/v2/queues/{queue_name}/messages"


def on_the_wire(rec: Recorder) -> list[ReceivedPoint]:
    """What a collector decodes from the recorder's next export."""
    data = Pipeline(rec, None, Resource({"service.name": "zaqar"}), 1000).collect()
    assert data is not None
    return decode_metrics_request(encode_metrics(data).SerializeToString())


def named(points: list[ReceivedPoint], metric: str) -> list[ReceivedPoint]:
    return [p for p in points if p.metric == metric]


# -- the aggregators -------------------------------------------------------------


def test_histogram_buckets_follow_otlp_bounds() -> None:
    """A value on a boundary counts in the bucket that ends there: (b[i-1], b[i]]."""
    histogram = instruments.Histogram("d", "s", "", (0.1, 1.0), lambda k: {"k": k})
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        histogram.record("a", value)
    metric = histogram.collect(time.time_ns())
    assert metric is not None
    (point,) = metric.data.data_points
    assert point.bucket_counts == (2, 2, 1)
    assert (point.count, point.sum, point.min, point.max) == (5, 4.65, 0.05, 3.0)
    assert point.attributes == {"k": "a"}
    assert point.explicit_bounds == (0.1, 1.0)


def test_exemplars_are_kept_for_sampled_measurements_only() -> None:
    histogram = instruments.Histogram("d", "s", "", (0.1,), lambda k: {})
    histogram.record("a", 0.05, SAMPLED)
    histogram.record("a", 0.5)  # untraced: no exemplar, the bucket keeps none
    metric = histogram.collect(time.time_ns())
    assert metric is not None
    (exemplar,) = metric.data.data_points[0].exemplars
    assert (exemplar.trace_id, exemplar.span_id, exemplar.value) == (
        SAMPLED.trace_id, SAMPLED.span_id, 0.05)
    # Exemplars belong to the interval they were seen in.
    again = histogram.collect(time.time_ns())
    assert again is not None and not again.data.data_points[0].exemplars
    assert again.data.data_points[0].count == 2  # cumulative


@pytest.mark.parametrize(("chosen", "kept"), [("always_off", 0), ("always_on", 2)])
def test_the_exemplar_filter_is_honoured(chosen: str, kept: int) -> None:
    histogram = instruments.Histogram("d", "s", "", (0.1,), lambda k: {}, chosen)
    histogram.record("a", 0.05, SAMPLED)
    histogram.record("a", 0.5)
    metric = histogram.collect(time.time_ns())
    assert metric is not None
    assert len(metric.data.data_points[0].exemplars) == kept


def test_counter_sums_per_key_and_builds_attributes_once() -> None:
    made: list[str] = []

    def attributes_of(key: str) -> dict[str, Any]:
        made.append(key)
        return {"k": key}

    counter = instruments.Counter("c", "{message}", "", attributes_of)
    for key, amount in (("a", 2), ("b", 1), ("a", 3)):
        counter.add(key, amount)
    for _ in range(2):
        metric = counter.collect(time.time_ns())
    assert metric is not None
    assert {p.attributes["k"]: p.value for p in metric.data.data_points} == {
        "a": 5, "b": 1}
    assert metric.data.is_monotonic and sorted(made) == ["a", "b"]


# -- bounded attributes ----------------------------------------------------------


def test_queues_past_the_cap_are_other_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    destinations = Destinations(per_queue=True, per_project=False, max_queues=2)
    with caplog.at_level(logging.WARNING):
        got = [destinations.of(q, "p") for q in ("a", "b", "c", "a", "d")]
    assert got == [("a", None), ("b", None), (OTHER, None), ("a", None),
                   (OTHER, None)]
    assert [r.getMessage() for r in caplog.records
            if "metrics_max_queues" in r.getMessage()] != []
    assert len(caplog.records) == 1


def test_no_queue_attribute_and_projects_only_when_asked() -> None:
    assert Destinations(per_queue=False).of("orders", "p") == (None, None)
    both = Destinations(per_queue=True, per_project=True, max_queues=1)
    assert both.of("orders", "p1") == ("orders", "p1")
    assert both.of("orders", "p2") == (OTHER, OTHER)
    assert Destinations(per_queue=True, max_queues=0).of("x", None) == (OTHER, None)


def test_ten_thousand_queues_keep_memory_bounded() -> None:
    """A tenant creating queue after queue: the series stop at the cap."""
    rec = Recorder(Destinations(max_queues=100))

    def one_queue(i: int) -> None:
        queue = f"tenant-queue-{i:05d}"
        rec.operation("send", "post", queue, "p", 201, 0.002, 1, [], None)
        rec.operation("receive", "claim", queue, "p", 201, 0.002, 1, [3], None)
        rec.operation("settle", "delete", queue, "p", 204, 0.001, 1, [], None)

    for i in range(200):  # the cap is reached; steady state from here
        one_queue(i)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(200, 10_200):
        one_queue(i)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # 100 queues + _other, 7 series each: 3 operation durations, the three
    # counters, the wait
    assert rec.series_count() == 101 * 7
    assert len(rec.destinations) == 100
    assert grown < 64 * 1024, grown  # 10,000 more queues: no growth to speak of
    points = on_the_wire(rec)
    other = [p for p in named(points, recorder.SENT)
             if p.attributes.get("messaging.destination.name") == OTHER]
    assert other[0].value == 10_100


# -- the recorder's series ----------------------------------------------------------


def test_request_attributes_follow_the_http_conventions() -> None:
    rec = Recorder(Destinations())
    rec.request(ENVIRON, ROUTE, "200 OK", 0.004, None, SAMPLED)
    rec.request(ENVIRON, ROUTE, "200 OK", 0.2, None, None)
    rec.request({**ENVIRON, "REQUEST_METHOD": "BREW"}, None, "404 Not Found",
                0.001, None, None)
    rec.request(ENVIRON, ROUTE, "503 Service Unavailable", 0.01, None, None)
    rec.request(ENVIRON, ROUTE, None, 0.01, RuntimeError("boom"), None)
    points = {(p.attributes["http.request.method"],
               p.attributes.get("http.response.status_code"),
               p.attributes.get("error.type")): p
              for p in named(on_the_wire(rec), recorder.HTTP_DURATION)}
    ok = points[("GET", 200, None)]
    assert ok.unit == "s" and ok.count == 2 and ok.cumulative
    assert ok.attributes == {"http.request.method": "GET", "url.scheme": "http",
                             "http.route": ROUTE, "http.response.status_code": 200,
                             "network.protocol.version": "1.1"}
    assert ok.explicit_bounds == instruments.DURATION_BOUNDARIES
    assert ok.exemplars == ((SAMPLED.trace_id, SAMPLED.span_id, 0.004),)
    assert "http.route" not in points[("_OTHER", 404, None)].attributes
    assert ("GET", 503, "503") in points
    assert ("GET", None, "RuntimeError") in points


@pytest.mark.parametrize("mode", ["default", "stable", "dup"])
def test_the_request_duration_follows_the_http_mode(mode: str) -> None:
    """No opt-in: the old http.server.duration (ms, old names), as the wsgi
    instrumentation records it; http: the stable one; http/dup: both."""
    from zaqar_otel._sdk import layout

    old, new = {"default": (True, False), "stable": (False, True),
                "dup": (True, True)}[mode]
    rec = Recorder(Destinations(), conventions=layout.Conventions(
        http_old=old, http_new=new))
    rec.request(ENVIRON, ROUTE, "200 OK", 0.004, None, SAMPLED)
    rec.request(ENVIRON, ROUTE, "503 Service Unavailable", 0.01, None, None)
    points = on_the_wire(rec)
    assert {p.metric for p in points} == (
        {recorder.OLD_HTTP_DURATION} if old else set()) | (
        {recorder.HTTP_DURATION} if new else set())
    for p in named(points, recorder.OLD_HTTP_DURATION):
        assert p.unit == "ms" and p.explicit_bounds == instruments.OLD_HTTP_BOUNDARIES
        assert set(p.attributes) <= {"http.method", "http.scheme", "http.route",
                                     "http.status_code", "http.flavor"}
    ok = [p for p in named(points, recorder.OLD_HTTP_DURATION)
          if p.attributes["http.status_code"] == 200]
    if old:
        assert ok[0].attributes == {"http.method": "GET", "http.scheme": "http",
                                    "http.route": ROUTE, "http.status_code": 200,
                                    "http.flavor": "1.1"}
        assert ok[0].sum == pytest.approx(4.0)  # ms
        assert ok[0].exemplars == ((SAMPLED.trace_id, SAMPLED.span_id,
                                    pytest.approx(4.0)),)
    for p in named(points, recorder.HTTP_DURATION):
        assert p.unit == "s" and "http.method" not in p.attributes


def test_operations_count_sent_consumed_settled_and_the_wait() -> None:
    rec = Recorder(Destinations())
    rec.operation("send", "post", "orders", "p", 201, 0.003, 2, [], SAMPLED)
    rec.operation("receive", "claim", "orders", "p", 201, 0.002, 2, [0, 4], None)
    rec.operation("receive", "list", "orders", "p", 200, 0.002, 1, [7], None)
    rec.operation("settle", "delete", "orders", "p", 204, 0.001, 2, [], None)
    rec.operation("settle", "release", "orders", "p", 204, 0.001, 0, [], None)
    rec.operation("receive", "claim", "missing", "p", 404, 0.001, 0, [], None)
    points = on_the_wire(rec)

    def values(metric: str) -> dict[tuple[str, str], float]:
        return {(p.attributes["messaging.operation.name"],
                 p.attributes["messaging.destination.name"]): p.value
                for p in named(points, metric)}

    assert values(recorder.SENT) == {("post", "orders"): 2}
    assert values(recorder.CONSUMED) == {("claim", "orders"): 2, ("list", "orders"): 1}
    assert values(recorder.SETTLED) == {("delete", "orders"): 2}
    waits = {p.attributes["messaging.operation.name"]: p
             for p in named(points, recorder.WAIT)}
    assert (waits["claim"].count, waits["claim"].sum) == (2, 4.0)
    assert waits["claim"].bucket_counts[:4] == (1, 0, 0, 1)  # 0 s and (2, 5]
    durations = {(p.attributes["messaging.operation.name"],
                  p.attributes.get("error.type")): p
                 for p in named(points, recorder.OPERATION_DURATION)}
    assert set(durations) == {("post", None), ("claim", None), ("list", None),
                              ("delete", None), ("release", None), ("claim", "404")}
    post = durations[("post", None)]
    assert post.attributes["messaging.system"] == "zaqar"
    assert post.attributes["messaging.operation.type"] == "send"
    assert post.exemplars[0][:2] == (SAMPLED.trace_id, SAMPLED.span_id)
    assert "zaqar.project.id" not in post.attributes


def test_a_forked_worker_starts_from_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(Destinations())
    restarted: list[bool] = []
    rec.after_fork(lambda: restarted.append(True))
    rec.request(ENVIRON, ROUTE, "200 OK", 0.004, None, None)
    monkeypatch.setattr(os, "getpid", lambda: -1)
    rec.request(ENVIRON, ROUTE, "200 OK", 0.004, None, None)
    rec.request(ENVIRON, ROUTE, "200 OK", 0.004, None, None)
    (point,) = named(on_the_wire(rec), recorder.HTTP_DURATION)
    assert point.count == 2 and restarted == [True]


# -- the pipeline --------------------------------------------------------------


def _settings(endpoint: str, **kwargs: Any) -> MetricsSettings:
    return MetricsSettings(exporter="otlp_http",
                           exporter_args={"endpoint": endpoint, "timeout": 2.0},
                           **kwargs)


def test_the_pipeline_exports_on_its_timer_to_v1_metrics() -> None:
    with OTLPReceiver() as rx:
        rec = Recorder(Destinations())
        conf = _settings(rx.metrics_url, export_interval_millis=100)
        flow = Pipeline(rec, _sdk.metric_exporter(conf),
                        Resource({"service.name": "z"}), conf.export_interval_millis)
        flow.start()
        try:
            rec.request(ENVIRON, ROUTE, "200 OK", 0.004, None, SAMPLED)
            points = rx.wait_for_points(lambda ps: any(
                p.metric == recorder.HTTP_DURATION for p in ps))
        finally:
            assert flow.shutdown(5.0)
    (point,) = named(points, recorder.HTTP_DURATION)[:1]
    assert point.resource == {"service.name": "z"}
    assert point.scope == "zaqar_otel"
    assert point.exemplars[0][0] == SAMPLED.trace_id


def test_a_down_collector_costs_one_line_and_a_bounded_shutdown(
        caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(Destinations())
    # Nothing listens on port 9 of loopback.
    conf = _settings("http://127.0.0.1:9/v1/metrics")
    flow = Pipeline(rec, _sdk.metric_exporter(conf), Resource({}), 60_000)
    rec.request(ENVIRON, ROUTE, "200 OK", 0.004, None, None)
    with caplog.at_level(logging.WARNING, logger="zaqar_otel.metrics.pipeline"):
        assert flow.export() is False
        assert flow.export() is False
    ours = [r for r in caplog.records if r.name == "zaqar_otel.metrics.pipeline"]
    assert len(ours) == 1 and "failed" in ours[0].getMessage()
    started = time.monotonic()
    flow.shutdown(1.0)
    assert time.monotonic() - started < 2.0


def test_the_grpc_exporter_takes_the_certificate_as_credentials(tmp_path: Any) -> None:
    """The gRPC exporter has no certificate_file argument: the option's file
    becomes channel credentials."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
        OTLPMetricExporter,
    )

    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    made = _sdk.metric_exporter(MetricsSettings(
        exporter="otlp_grpc", exporter_args={"endpoint": "https://c:4317",
                                             "certificate_file": str(pem),
                                             "compression": "gzip"}))
    assert isinstance(made, OTLPMetricExporter)
    made.shutdown()
    assert _sdk.metric_exporter(MetricsSettings(exporter="none")) is None
