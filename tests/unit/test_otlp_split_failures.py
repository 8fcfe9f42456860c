"""A split request's halves against collectors that fail them
(``_sdk/fast/otlp_grpc.py``, ``_sdk/fast/otlp_http.py``,
``export/processor.py``'s counts), over loopback to small scripted servers.

A request the collector refuses as too large is sent again in halves. What
must hold (issue 24, item 1): a stream reset of a request beyond gRPC's
default receive limit is taken as a refusal too; once split, a half that
fails is never handed back to the SDK's retry (which would send the whole
request again, or drop the delivered halves with it): every span delivered
once, and the ones lost counted with why."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from zaqar_otel._sdk.fast.otlp_grpc import OTLPSpanExporter as GrpcExporter
from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter as HttpExporter
from zaqar_otel.demo.receiver import decode_request
from zaqar_otel.export.processor import CountingExporter, DropCounter

LIMIT = 4 << 20  # gRPC's default receive limit


def spans(count: int = 10, size: int = 500_000) -> list[ReadableSpan]:
    """``count`` spans of ``size`` bytes each: 10 of 500 KB are a request
    beyond ``LIMIT``, each half within it."""
    kept = InMemorySpanExporter()
    # Uncut, whatever OTEL_*ATTRIBUTE_VALUE_LENGTH_LIMIT the environment has.
    whole = SpanLimits(max_span_attribute_length=SpanLimits.UNSET,
                       max_attribute_length=SpanLimits.UNSET)
    provider = TracerProvider(resource=Resource({"service.name": "zaqar"}),
                              span_limits=whole)
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("t")
    for i in range(count):
        tracer.start_span(f"s{i}", attributes={"v": "x" * size}).end()
    return list(kept.get_finished_spans())


class Scripted:
    """What a scripted collector saw and kept: ``answer(size, names)`` says
    how a request of ``size`` bytes carrying the spans ``names`` is answered
    (None: kept). By content, not by order: on a starved machine a request
    may time out before the collector sees it, and the order shifts."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.seen: list[int] = []
        self.kept: Counter[str] = Counter()
        self.lock = threading.Lock()

    def take(self, body: bytes) -> Any:
        names = [s.name for s in decode_request(body)]
        with self.lock:
            self.seen.append(len(body))
            verdict = self.answer(len(body), set(names))
            if verdict is None:
                self.kept.update(names)
        return verdict


def grpc_collector(script: Scripted) -> tuple[grpc.Server, int]:
    def export(body: bytes, context: grpc.ServicerContext
               ) -> ExportTraceServiceResponse:
        verdict = script.take(body)
        if verdict is not None:
            context.abort(verdict, "scripted")
        return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.unary_unary_rpc_method_handler(
        export, response_serializer=ExportTraceServiceResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def grpc_export(script: Scripted, timeout: float
                ) -> tuple[SpanExportResult, DropCounter]:
    """``spans()`` exported over gRPC to a collector answering by ``script``."""
    server, port = grpc_collector(script)
    try:
        exporter = GrpcExporter(endpoint=f"127.0.0.1:{port}", insecure=True,
                                timeout=timeout)
        counted = export_counted(exporter, spans())
        exporter.shutdown()
    finally:
        server.stop(0)
    return counted


def export_counted(exporter: Any, batch: list[ReadableSpan]
                   ) -> tuple[SpanExportResult, DropCounter]:
    drops = DropCounter("scripted")
    result = CountingExporter(exporter, drops, max_bytes=64 << 20).export(batch)
    return result, drops


def test_a_grpc_stream_reset_beyond_the_receive_limit_is_split() -> None:
    """A collector that resets the stream (INTERNAL, not RESOURCE_EXHAUSTED)
    of a request beyond 4 MiB: the halves arrive (before: the SDK does not
    retry INTERNAL, and all 10 spans were dropped)."""
    script = Scripted(lambda size, names: grpc.StatusCode.INTERNAL
                      if size > LIMIT else None)
    result, drops = grpc_export(script, timeout=10)
    assert result is SpanExportResult.SUCCESS
    assert script.kept == Counter(f"s{i}" for i in range(10))
    assert (drops.exported_total, drops.total) == (10, 0)


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.UNAVAILABLE])
def test_a_failed_grpc_half_is_neither_sent_twice_nor_drops_the_other(
        code: grpc.StatusCode, caplog: pytest.LogCaptureFixture) -> None:
    """The request refused as too large, its second half answered ``code``
    every time: the first half arrives once (before: UNAVAILABLE made the
    SDK send the whole request again, the first half twice; PERMISSION_DENIED
    counted all 10 spans as dropped), the second is counted as lost, the
    drop line names the code."""
    def answer(size: int, names: set[str]) -> grpc.StatusCode | None:
        if size > LIMIT:
            return grpc.StatusCode.RESOURCE_EXHAUSTED
        return code if "s5" in names else None  # the second half

    script = Scripted(answer)
    # The SDK retries UNAVAILABLE until this timeout: long enough for the
    # whole request on a starved machine, short enough for the retries.
    with caplog.at_level(logging.WARNING, logger="zaqar_otel"):
        result, drops = grpc_export(script, timeout=8)
    assert result is SpanExportResult.SUCCESS
    assert script.kept == Counter(f"s{i}" for i in range(5))
    assert (drops.exported_total, drops.total) == (5, 5)
    lines = [r.getMessage() for r in caplog.records
             if "dropping spans" in r.getMessage()]
    assert len(lines) == 1 and f"gRPC {code.name}" in lines[0], lines
    assert any("taken as too large" in r.getMessage() for r in caplog.records)
    if code is grpc.StatusCode.UNAVAILABLE:
        assert len(script.seen) > 3  # retried, as the SDK retries a request


def test_a_grpc_half_that_fails_once_is_retried_and_sent_once() -> None:
    """The second half answered UNAVAILABLE once: every span arrives once."""
    failed: list[int] = []

    def answer(size: int, names: set[str]) -> grpc.StatusCode | None:
        if size > LIMIT:
            return grpc.StatusCode.RESOURCE_EXHAUSTED
        if "s5" in names and not failed:  # the second half, the first time
            failed.append(size)
            return grpc.StatusCode.UNAVAILABLE
        return None

    script = Scripted(answer)
    result, drops = grpc_export(script, timeout=10)
    assert result is SpanExportResult.SUCCESS
    assert script.kept == Counter(f"s{i}" for i in range(10))
    assert (drops.exported_total, drops.total) == (10, 0)


class _HttpCollector(ThreadingHTTPServer):
    daemon_threads = True
    script: Scripted


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpCollector

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        if length > LIMIT and self.server.script.answer(length, -1) == "close":
            self.server.script.take(b"")
            self.close_connection = True  # no answer, body unread
            return
        verdict = self.server.script.take(self.rfile.read(length))
        self.send_response(200 if verdict is None else verdict)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def http_collector(script: Scripted) -> _HttpCollector:
    server = _HttpCollector(("127.0.0.1", 0), _Handler)
    server.script = script
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server


def test_a_failed_http_half_drops_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    """Refused with 413, its second half answered 400: the first half
    arrives once and is counted exported (before: all 10 counted as
    dropped), the drop line names the status."""
    script = Scripted(lambda size, names: 413 if size > LIMIT else 400
                      if "s5" in names else None)
    with caplog.at_level(logging.WARNING, logger="zaqar_otel"):
        result, drops = http_export(script, timeout=10)
    assert result is SpanExportResult.SUCCESS
    assert script.kept == Counter(f"s{i}" for i in range(5))
    assert (drops.exported_total, drops.total) == (5, 5)
    lines = [r.getMessage() for r in caplog.records
             if "dropping spans" in r.getMessage()]
    assert len(lines) == 1 and "HTTP 400" in lines[0], lines


def test_an_http_connection_closed_on_a_body_beyond_the_limit_is_split() -> None:
    """A collector that closes the connection, unanswered, on a body beyond
    4 MiB: the halves arrive (before: the batch was dropped)."""
    script = Scripted(lambda size, names: "close" if size > LIMIT else None)
    result, drops = http_export(script, timeout=6)
    assert result is SpanExportResult.SUCCESS
    assert script.kept == Counter(f"s{i}" for i in range(10))
    assert (drops.exported_total, drops.total) == (10, 0)


def http_export(script: Scripted, timeout: float
                ) -> tuple[SpanExportResult, DropCounter]:
    """``spans()`` exported over HTTP to a collector answering by ``script``."""
    server = http_collector(script)
    try:
        exporter = HttpExporter(
            endpoint=f"http://127.0.0.1:{server.server_address[1]}/v1/traces",
            timeout=timeout)
        counted = export_counted(exporter, spans())
        exporter.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    return counted
