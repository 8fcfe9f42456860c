"""Dropped spans: counted, and logged when dropping starts and when it stops."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from zaqar_otel._sdk import fast, layout
from zaqar_otel._sdk.fast.otlp_encoding import EncodedSpan
from zaqar_otel._sdk.fast.processor import CountingBatchSpanProcessor
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.export.processor import DropCounter


class Collector(SpanExporter):
    """An in-process stand-in whose answer the test chooses (no network here:
    the functional tests drive a real OTLP receiver)."""

    def __init__(self) -> None:
        self.accept = False
        self.received: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.exporting = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.release.wait(10)
        if not self.accept:
            return SpanExportResult.FAILURE
        self.received.extend(s.name for s in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _spans(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("t")
    for n in range(count):
        tracer.start_span(f"s{n}").end()


def test_failed_exports_are_counted_and_logged_twice_in_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = Collector()
    processor = CountingBatchSpanProcessor(collector, DropCounter("test"),
                                           schedule_delay_millis=10_000)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with caplog.at_level(logging.WARNING, logger="zaqar_otel.export.processor"):
        for _ in range(3):  # three failing batches
            _spans(provider, 5)
            processor.force_flush()
        collector.accept = True
        _spans(provider, 2)
        processor.force_flush()
    assert processor.drops.total == 15
    assert collector.received == ["s0", "s1"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "dropping spans" in lines[0] and "15 spans were dropped" in lines[1]
    provider.shutdown()


def test_a_full_queue_counts_each_dropped_span() -> None:
    collector = Collector()
    collector.accept = True
    collector.release.clear()  # the exporter hangs: the queue fills up
    processor = CountingBatchSpanProcessor(
        collector, DropCounter("test"), max_queue_size=4, max_export_batch_size=1,
        schedule_delay_millis=1)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    _spans(provider, 1)  # taken by the worker, which then hangs
    assert collector.exporting.wait(5)
    _spans(provider, 20)  # 4 fit in the queue
    assert processor.drops.total == 16
    collector.release.set()
    provider.shutdown()


def test_error_texts_are_scrubbed_before_export() -> None:
    """Whatever recorded the exception (an instrumentor, the SDK), the
    exported message, stack trace and status hold no query or credentials."""
    collector = Collector()
    collector.accept = True
    exported: list[ReadableSpan] = []
    collector.export = lambda spans: exported.extend(spans) or SpanExportResult.SUCCESS
    processor = CountingBatchSpanProcessor(collector, DropCounter("test"))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    token, password = "s3cr3t", "pw-0d5e"
    with pytest.raises(ValueError):
        with tracer.start_as_current_span("webhook"):
            raise ValueError(f"url: /hook?token={token}\n[parameters: ('{password}')]")
    with tracer.start_as_current_span("clean"):
        pass
    processor.force_flush()
    failed, clean = exported
    event = failed.events[0]
    assert event.attributes["exception.message"] == "url: /hook"
    assert "s3cr3t" not in event.attributes["exception.stacktrace"]
    assert password not in str(event.attributes)
    assert token not in str(failed.status.description)
    assert clean.name == "clean" and not clean.events
    provider.shutdown()


def _end_three_spans(processor: CountingBatchSpanProcessor, name: str,
                     caplog: pytest.LogCaptureFixture) -> tuple[TracerProvider, Any]:
    """Three spans ended through ``processor``, none of them raising, the
    processor's error lines captured; the provider and its tracer."""
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with caplog.at_level(logging.ERROR, logger="zaqar_otel.export.processor"):
        for _ in range(3):
            tracer.start_span(name).end()  # must not raise
    return provider, tracer


class _BrokenInternals:
    """What a changed or broken SDK could hand us instead of its BatchProcessor."""

    def emit(self, span: object) -> None:
        raise RuntimeError("SDK internals changed")

    def shutdown(self, *args: object) -> None:
        pass

    def force_flush(self, *args: object) -> bool:
        return True


def test_a_broken_sdk_never_raises_into_span_end(
        caplog: pytest.LogCaptureFixture) -> None:
    """span.end() runs on the request thread and the SDK does not catch."""
    drops = DropCounter("here")
    processor = CountingBatchSpanProcessor(Collector(), drops)
    real = processor._batch_processor
    processor._batch_processor = _BrokenInternals()  # type: ignore[assignment]
    _end_three_spans(processor, "request", caplog)
    assert drops.total == 3
    failures = [r for r in caplog.records if "handing a span" in r.getMessage()]
    assert len(failures) == 1  # logged once, then swallowed
    real.shutdown()


def test_another_sdk_layout_leaves_full_queue_lines_to_the_sdk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the known private queue, nothing is counted wrongly and the
    SDK's own 'Queue full' lines are not filtered away."""
    from zaqar_otel import settings

    monkeypatch.setattr(layout, "batch_queue", lambda processor: None)
    conf = settings.Settings(enabled=True, hmac_keys=("k",), exporter="console")
    processor = fast.span_processor(conf)
    assert processor is not None and not processor.counts_full_queue
    sdk = logging.getLogger("opentelemetry.sdk._shared_internal")
    record = logging.LogRecord(sdk.name, logging.WARNING, "x", 1,
                               "Queue full, dropping %s.", ("span",), None)
    assert all(f.filter(record) for f in sdk.filters)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("s").end()
    assert processor.drops.total == 0
    processor.shutdown()


def test_the_grpc_span_exporter_takes_the_certificate_as_credentials(
        tmp_path: Path) -> None:
    """[opentelemetry] certificate with otlp_grpc: the SDK's gRPC exporter
    has no certificate_file argument; the file becomes channel credentials."""
    from zaqar_otel import settings as settings_module
    from zaqar_otel._sdk.fast import otlp_grpc

    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    made = fast.span_exporter(settings_module.Settings(
        enabled=True, exporter="otlp_grpc",
        exporter_args={"endpoint": "https://collector:4317",
                       "certificate_file": str(pem)}))
    assert isinstance(made, otlp_grpc.OTLPSpanExporter)
    made.shutdown()


def _otlp_processor(receiver: OTLPReceiver,
                    drops: DropCounter) -> CountingBatchSpanProcessor:
    from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter

    return CountingBatchSpanProcessor(
        OTLPSpanExporter(endpoint=receiver.traces_url), drops,
        schedule_delay_millis=600_000)


def test_spans_are_scrubbed_and_encoded_as_they_end(receiver: OTLPReceiver) -> None:
    """With zaqar-otel's OTLP exporter the queue holds encoded spans, not
    span objects, and what the collector decodes is what was recorded, with
    the error texts scrubbed."""
    processor = _otlp_processor(receiver, DropCounter("test"))
    assert processor.encodes_at_end
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    token = "s3cr3t"
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER):
        with pytest.raises(ValueError):
            with tracer.start_as_current_span("webhook", attributes={"n": 1}):
                raise ValueError(f"url: /hook?token={token}")
    status_only = tracer.start_span("status only")  # an error text, no event
    status_only.set_status(Status(StatusCode.ERROR, f"GET /?token={token}"))
    status_only.end()
    event_only = tracer.start_span("event only")  # an exception's event, no status
    event_only.record_exception(ValueError(f"GET /?token={token}"))
    event_only.end()
    queue = layout.batch_queue(processor)
    assert queue is not None and len(queue) == 4
    assert all(type(piece) is EncodedSpan for piece in queue)  # type: ignore[attr-defined]
    assert processor.force_flush()
    webhook, request, status, event = receiver.wait_for(count=4)
    assert event.events[0][1]["exception.message"] == "GET /"
    assert (webhook.name, request.name) == ("webhook", "request")
    assert webhook.parent_span_id == request.span_id
    assert webhook.attributes == {"n": 1}
    assert webhook.status_message == "ValueError: url: /hook"
    assert status.status_message == "GET /"
    assert token not in repr(receiver.spans())
    provider.shutdown()


def test_a_span_that_cannot_be_encoded_is_dropped_and_counted(
        receiver: OTLPReceiver, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoding runs inside span.end(): a failure there is logged once and
    counted, never raised into the request; the next span goes out."""
    drops = DropCounter("test")
    processor = _otlp_processor(receiver, drops)
    encoder = processor._encoder
    assert encoder is not None
    # A span read by field goes to encoded_by_field, others to encoded.
    names = ("encoded", "encoded_by_field")
    working = {name: getattr(encoder, name) for name in names}

    def broken(span: ReadableSpan) -> EncodedSpan:
        raise MemoryError("no room for the span")

    for name in names:
        monkeypatch.setattr(encoder, name, broken)
    provider, tracer = _end_three_spans(processor, "lost", caplog)
    for name in names:
        monkeypatch.setattr(encoder, name, working[name])
    tracer.start_span("kept").end()
    assert processor.force_flush()
    assert [s.name for s in receiver.wait_for(count=1)] == ["kept"]
    assert drops.total == 3
    assert len([r for r in caplog.records if "handing a span" in r.getMessage()]) == 1
    provider.shutdown()


def test_a_full_queue_of_encoded_spans_counts_each_dropped_span(
        receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector that does not answer: the queue fills, each span beyond
    it is counted, and none of them is encoded for nothing."""
    from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter

    receiver.mode = "hang"
    drops = DropCounter("test")
    processor = CountingBatchSpanProcessor(
        OTLPSpanExporter(endpoint=receiver.traces_url, timeout=5), drops,
        max_queue_size=4, max_export_batch_size=1, schedule_delay_millis=1)
    assert processor._encoder is not None
    encoded: list[str] = []

    def counted(name: str) -> Callable[[ReadableSpan], EncodedSpan]:
        working = getattr(processor._encoder, name)

        def counting(span: ReadableSpan) -> EncodedSpan:
            encoded.append(span.name)
            return working(span)

        return counting

    # A span read by field goes to encoded_by_field, others to encoded.
    for name in ("encoded", "encoded_by_field"):
        monkeypatch.setattr(processor._encoder, name, counted(name))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    _spans(provider, 1)  # taken by the worker, whose export hangs
    deadline = time.monotonic() + 5
    while len(layout.batch_queue(processor) or ()) and time.monotonic() < deadline:
        time.sleep(0.01)
    _spans(provider, 20)  # 4 fit in the queue
    assert drops.total == 16
    assert len(encoded) == 5
    receiver.mode = "ok"
    provider.shutdown()


def test_other_exporters_get_the_spans_themselves() -> None:
    """An exporter without an early encoder (console, a user's) is handed
    span objects, as by the SDK's processor."""
    collector = Collector()
    collector.accept = True
    processor = CountingBatchSpanProcessor(collector, DropCounter("test"))
    assert not processor.encodes_at_end
    provider = TracerProvider()
    provider.add_span_processor(processor)
    _spans(provider, 2)
    processor.force_flush()
    assert collector.received == ["s0", "s1"]
    provider.shutdown()


def test_export_requests_are_bounded_in_bytes() -> None:
    """Runs of at most max_bytes encoded bytes, in order; a span larger than
    that alone in its own."""
    from zaqar_otel._sdk.fast.otlp_encoding import EncodedSpan
    from zaqar_otel.export.processor import byte_bounded

    pieces = [EncodedSpan(b"x" * size, None, None)  # type: ignore[arg-type]
              for size in (400, 400, 300, 2000, 100, 100)]
    runs = byte_bounded(pieces, 1000)
    assert [[len(p.field) for p in run] for run in runs] == [
        [400, 400], [300], [2000], [100, 100]]
    assert byte_bounded([], 1000) == []
    # Spans not encoded as they ended (the SDK's path): by an estimate.
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    kept = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("t")
    for size in (10, 10, 600):
        tracer.start_span("s", attributes={"v": "x" * size}).end()
    sdk_spans = list(kept.get_finished_spans())
    assert [len(run) for run in byte_bounded(sdk_spans, 800)] == [2, 1]


def test_the_queue_is_bounded_in_bytes_too(receiver: OTLPReceiver) -> None:
    """A collector that does not answer and spans of 10 KB: the queue holds
    at most max_queue_bytes of them; each beyond is counted and dropped;
    once exported, the bytes are free again."""
    from opentelemetry.sdk.trace import SpanLimits

    from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter

    receiver.mode = "hang"
    drops = DropCounter("test")
    processor = CountingBatchSpanProcessor(
        OTLPSpanExporter(endpoint=receiver.traces_url, timeout=5), drops,
        max_queue_bytes=65536, max_queue_size=2048, max_export_batch_size=512,
        schedule_delay_millis=60000)
    provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=None))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(20):
        tracer.start_span("big", attributes={"v": "x" * 10000}).end()
    assert drops.total == 14  # 6 of about 10 KB fit in 64 KiB
    assert 60000 < processor.queued_bytes <= 65536
    receiver.mode = "ok"
    assert processor.force_flush()
    assert processor.queued_bytes == 0
    assert len(receiver.wait_for(count=6)) == 6
    provider.shutdown()


def test_resource_attributes_that_are_not_utf8_are_made_so_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A byte of OTEL_RESOURCE_ATTRIBUTES that is not UTF-8 (surrogate-
    escaped in os.environ): U+FFFD in the process's resource, which spans
    and metrics share, and one line."""
    import os

    from opentelemetry.exporter.otlp.proto.common._internal import _encode_resource

    from zaqar_otel._sdk import resource

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES",
                       os.fsdecode(b"deployment.environment=eu\xff,team=q"))
    with caplog.at_level(logging.WARNING, logger="zaqar_otel._sdk.resource"):
        made = resource.for_process("zaqar")
    assert made.attributes["deployment.environment"] == "eu\ufffd"
    assert made.attributes["team"] == "q"
    _encode_resource(made).SerializeToString()  # what the metric exporter does
    assert len(caplog.records) == 1 and "deployment.environment" in caplog.text


def test_a_span_too_large_for_the_collector_alone_is_the_only_one_dropped() -> None:
    """A receiver that refuses requests over 8 KiB: a 16 KB span among small
    ones is dropped and counted, every other span of its batch arrives."""
    from opentelemetry.sdk.trace import SpanLimits

    from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter

    with OTLPReceiver(max_request_bytes=8192) as receiver:
        drops = DropCounter("test")
        processor = CountingBatchSpanProcessor(
            OTLPSpanExporter(endpoint=receiver.traces_url), drops,
            schedule_delay_millis=60000)
        provider = TracerProvider(
            span_limits=SpanLimits(max_span_attribute_length=None))
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("t")
        for i in range(30):
            size = 16000 if i == 10 else 500
            tracer.start_span(f"s{i}", attributes={"v": "x" * size}).end()
        assert processor.force_flush()
        names = {s.name for s in receiver.wait_for(count=29)}
        provider.shutdown()
    assert names == {f"s{i}" for i in range(30)} - {"s10"}
    assert drops.total == 1



def _ended(*names: str) -> list[ReadableSpan]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    kept = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    for name in names:
        provider.get_tracer("t").start_span(name).end()
    return list(kept.get_finished_spans())


def test_a_plain_http_collector_restarted_between_exports_gets_the_next_batch(
        ) -> None:
    """The fast path posts to a plain http:// collector over one kept-alive
    connection (not the SDK's requests session: a tenth of its cost); a
    collector restarted between two exports closed that connection, and the
    next export is delivered all the same."""
    from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter

    with OTLPReceiver() as first:
        port = first.port
        exporter = OTLPSpanExporter(endpoint=first.traces_url)
        assert layout.http_session(exporter) is None  # not the session's
        for name in ("one", "two"):  # the second reuses the connection
            assert exporter.export(_ended(name)) is SpanExportResult.SUCCESS
        assert {s.name for s in first.wait_for(count=2)} == {"one", "two"}
    with OTLPReceiver(port=port) as second:
        assert exporter.export(_ended("three")) is SpanExportResult.SUCCESS
        assert [s.name for s in second.wait_for(count=1)] == ["three"]
    exporter.shutdown()


def test_a_refusing_collector_is_a_connection_error_and_nothing_on_stderr(
        capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector that refuses the connection: the export fails as the
    SDK's would (a connection error, retried by the SDK), and nothing is
    printed (Python 3.13 printed a response finalizer's traceback, in every
    worker's log, at each export while the collector was down)."""
    import gc
    import socket
    import sys

    from zaqar_otel._sdk.fast import http_transport

    # What Python prints as "Exception ignored in": a finalizer's error.
    ignored: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)

    with socket.socket() as closed:  # a free port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1/traces"
    transport = http_transport.for_endpoint(url)
    assert transport is not None
    for _ in range(3):
        result = transport.request("POST", url, data=b"spans", timeout=2)
        assert isinstance(result.error, ConnectionRefusedError)
        assert transport.is_connection_error(result.error)
    gc.collect()
    assert not ignored
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("endpoint,environ", [
    ("https://127.0.0.1:1/v1/traces", {}),
    ("http://alice:pw@127.0.0.1:1/v1/traces", {}),
    ("http://collector.example:4318/v1/traces",
     {"HTTP_PROXY": "http://127.0.0.1:3128", "NO_PROXY": ""}),
    ("http://127.0.0.1:1/v1/traces",
     {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": "x"}),
], ids=["https", "userinfo", "proxy", "credential-provider"])
def test_what_the_session_adds_keeps_the_session(
        monkeypatch: pytest.MonkeyPatch, endpoint: str,
        environ: dict[str, str]) -> None:
    """TLS, a proxy from the environment, credentials in the URL or an
    operator's credential provider: the SDK's requests session posts, as
    without zaqar-otel; a plain http:// endpoint otherwise does not."""
    from zaqar_otel._sdk.fast import http_transport

    plain = "http://collector.example:4318/v1/traces"
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    assert http_transport.for_endpoint(plain) is not None
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert http_transport.for_endpoint(endpoint) is None


# Run by a fresh interpreter: a fork in the test process would also run the
# at-fork hooks of the TracerProviders earlier tests left behind, and one of
# them can wait for ever on a lock another thread held at the fork.
_FORKED_WORKER = """
import os, signal, sys, time
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter

def ended(name):
    kept = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    provider.get_tracer("t").start_span(name).end()
    return list(kept.get_finished_spans())

exporter = OTLPSpanExporter(endpoint=sys.argv[1])
if exporter.export(ended("master")) is not SpanExportResult.SUCCESS:
    sys.exit("the master's first export failed")
transport = exporter._client._transport
if not hasattr(transport, "_connection"):
    sys.exit(3)  # SDK 1.45.0: its own urllib3 transport
parents = transport._connection
transport._lock.acquire()  # as if held by an export at the fork
pid = os.fork()
if pid == 0:  # the worker
    ok = (exporter.export(ended("worker")) is SpanExportResult.SUCCESS
          and transport._connection is not parents)
    os._exit(0 if ok else 1)
transport._lock.release()
deadline = time.monotonic() + 60
while not (found := os.waitpid(pid, os.WNOHANG))[0]:
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.exit("the forked worker did not finish within 60 s")
    time.sleep(0.05)
if os.waitstatus_to_exitcode(found[1]) != 0:
    sys.exit("the forked worker's export failed or used the master's socket")
if exporter.export(ended("master again")) is not SpanExportResult.SUCCESS:
    sys.exit("the master's export after the fork failed")
if transport._connection is not parents:
    sys.exit("the master did not keep its connection alive")
exporter.shutdown()
"""


def test_a_forked_worker_exports_over_its_own_connection() -> None:
    """A worker forked after the master exported (uwsgi forks without
    Python's at-fork hooks): it does not write on the master's kept-alive
    socket (nor wait on a lock held at the fork); both deliver."""
    import subprocess
    import sys

    with OTLPReceiver() as receiver:
        run = subprocess.run(
            [sys.executable, "-c", _FORKED_WORKER, receiver.traces_url],
            capture_output=True, text=True, timeout=180, check=False)
        if run.returncode == 3:
            pytest.skip("this SDK posts through its own urllib3 transport")
        assert run.returncode == 0, run.stderr[-3000:]
        names = {s.name for s in receiver.wait_for(count=3)}
    assert names == {"master", "worker", "master again"}
