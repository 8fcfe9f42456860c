"""A real OTLP receiver: spans and metrics are looked at where they arrive.

The receiver listens on loopback by default (HTTP/protobuf or gRPC), keeps
every request body as received and decodes the OTLP wire format into plain
:class:`ReceivedSpan` values, and metric exports (``/v1/metrics``, the gRPC
``MetricsService``) into :class:`ReceivedPoint` values. The tests check
exports with it, the demo prints them, ``zaqar-otel listen`` is one for an
operator without Jaeger.
Nothing in the SDK is mocked.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from typing_extensions import Self  # typing.Self needs 3.11

from zaqar_otel.demo.tree import render_tree

__all__ = [
    "OTLPReceiver",
    "ReceivedPoint",
    "ReceivedSpan",
    "decode_metrics_request",
    "decode_request",
]

Mode = Literal["ok", "error", "hang"]
Signal = Literal["traces", "metrics"]
_TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"]
_METRICS_SERVICE = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"]
_PATHS: dict[str, Signal] = {"/v1/traces": "traces", "/v1/metrics": "metrics"}
#: Bytes of one export request at most, as received and once inflated (gzip,
#: deflate): beyond, 413 (gRPC: RESOURCE_EXHAUSTED), as a collector answers
#: (its gRPC limit is 4 MiB). zaqar-otel's exporters send at most
#: ``max_export_batch_bytes`` (1 MiB by default) a request.
MAX_REQUEST_BYTES = 16 << 20
#: Requests decoded at once: each holds its body and its decoded spans.
_DECODING_AT_ONCE = 2
_DIGITS = frozenset("0123456789")
_EMPTY_ANSWER = {"traces": ExportTraceServiceResponse().SerializeToString(),
                 "metrics": ExportMetricsServiceResponse().SerializeToString()}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as decoded from an OTLP export request."""

    trace_id: int
    span_id: int
    parent_span_id: int | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: str
    status_message: str
    events: tuple[tuple[str, dict[str, Any]], ...]
    links: tuple[tuple[int, int, dict[str, Any]], ...]
    resource: dict[str, Any]
    scope: str
    scope_version: str = ""

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


@dataclass(frozen=True)
class ReceivedPoint:
    """One metric data point as decoded from an OTLP metrics export.

    ``kind`` is ``sum``, ``gauge`` or ``histogram``; a sum or gauge has
    ``value``, a histogram ``count``, ``sum``, ``bucket_counts`` and
    ``explicit_bounds``. ``exemplars`` are ``(trace_id, span_id, value)``.
    """

    metric: str
    unit: str
    kind: str
    attributes: dict[str, Any]
    start_ns: int
    time_ns: int
    resource: dict[str, Any]
    scope: str
    value: float = 0.0
    count: int = 0
    sum: float = 0.0
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()
    monotonic: bool = False
    cumulative: bool = False
    exemplars: tuple[tuple[int, int, float], ...] = ()

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of a histogram point, linear within a bucket
        (what Prometheus' histogram_quantile does); the top bucket's lower
        bound when it falls there."""
        if not self.count:
            return 0.0
        rank, seen = q * self.count, 0
        for i, n in enumerate(self.bucket_counts):
            if n and seen + n >= rank:
                if i >= len(self.explicit_bounds):
                    return self.explicit_bounds[-1] if self.explicit_bounds else 0.0
                low = self.explicit_bounds[i - 1] if i else min(
                    0.0, self.explicit_bounds[0])
                high = self.explicit_bounds[i]
                return low + (high - low) * (rank - seen) / n
            seen += n
        return self.explicit_bounds[-1] if self.explicit_bounds else 0.0


# -- wire decoding ----------------------------------------------------------


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    if which == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    return None if which is None else getattr(v, which)


def _attrs(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _id(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _span(s: Span, resource: dict[str, Any], scope: str,
          scope_version: str = "") -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=_id(s.trace_id),
        span_id=_id(s.span_id),
        parent_span_id=_id(s.parent_span_id) if s.parent_span_id else None,
        name=s.name,
        kind=Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
        start_ns=s.start_time_unix_nano,
        end_ns=s.end_time_unix_nano,
        attributes=_attrs(s.attributes),
        status_code=Status.StatusCode.Name(s.status.code).removeprefix("STATUS_CODE_"),
        status_message=s.status.message,
        events=tuple((e.name, _attrs(e.attributes)) for e in s.events),
        links=tuple(
            (_id(lk.trace_id), _id(lk.span_id), _attrs(lk.attributes)) for lk in s.links
        ),
        resource=resource,
        scope=scope,
        scope_version=scope_version,
    )


def decode_request(body: bytes) -> list[ReceivedSpan]:
    """Decode a serialized ``ExportTraceServiceRequest`` into spans."""
    req = ExportTraceServiceRequest.FromString(body)
    return [
        _span(s, _attrs(rs.resource.attributes), ss.scope.name, ss.scope.version)
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def _number(point: Any) -> float:
    return float(point.as_double if point.WhichOneof("value") == "as_double"
                 else point.as_int)


def _exemplars(point: Any) -> tuple[tuple[int, int, float], ...]:
    return tuple((_id(e.trace_id), _id(e.span_id), _number(e))
                 for e in point.exemplars)


def _points(metric: metrics_pb2.Metric, resource: dict[str, Any],
            scope: str) -> list[ReceivedPoint]:
    cumulative = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    which = metric.WhichOneof("data")
    common: dict[str, Any] = {"metric": metric.name, "unit": metric.unit,
                              "resource": resource, "scope": scope}
    if which in ("sum", "gauge"):
        data = getattr(metric, which)
        return [ReceivedPoint(
            kind=which, attributes=_attrs(p.attributes),
            start_ns=p.start_time_unix_nano, time_ns=p.time_unix_nano,
            value=_number(p), exemplars=_exemplars(p),
            monotonic=which == "sum" and data.is_monotonic,
            cumulative=which == "sum" and data.aggregation_temporality == cumulative,
            **common) for p in data.data_points]
    if which == "histogram":
        data = metric.histogram
        return [ReceivedPoint(
            kind="histogram", attributes=_attrs(p.attributes),
            start_ns=p.start_time_unix_nano, time_ns=p.time_unix_nano,
            count=p.count, sum=p.sum, bucket_counts=tuple(p.bucket_counts),
            explicit_bounds=tuple(p.explicit_bounds), exemplars=_exemplars(p),
            cumulative=data.aggregation_temporality == cumulative,
            **common) for p in data.data_points]
    return []  # exponential histograms and summaries: not sent by zaqar-otel


def decode_metrics_request(body: bytes) -> list[ReceivedPoint]:
    """Decode a serialized ``ExportMetricsServiceRequest`` into points."""
    req = ExportMetricsServiceRequest.FromString(body)
    return [
        point
        for rm in req.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in _points(metric, _attrs(rm.resource.attributes), sm.scope.name)
    ]


# -- receiver ---------------------------------------------------------------


class OTLPReceiver:
    """OTLP/HTTP (protobuf) or OTLP/gRPC trace receiver, on 127.0.0.1 unless
    ``host`` says otherwise, on ``port`` (0: a free one, see ``.port``).

    ``raw`` holds every request body (decompressed), whatever the mode, so
    tests can scan all exported bytes; ``spans()`` holds only spans from
    requests that were answered with success, so exporter retries after an
    ``"error"`` answer do not show up twice. ``requests`` counts the export
    requests that reached the decoder, in any mode.

    ``on_spans`` is called with the spans of each accepted request, on the
    thread that served it, after they are recorded. With ``keep=False``
    nothing is recorded (neither ``raw`` nor ``spans()``): a long-running
    listener hands each request to ``on_spans`` and forgets it.

    Metric exports (``/v1/metrics``, gRPC ``MetricsService``) are decoded
    into ``points()``, answered by the same ``mode``; ``metric_requests``
    counts them (``requests`` counts trace exports only). ``latest(name)``
    gives the newest point of each series, which for cumulative metrics is
    the total so far.
    """

    def __init__(
        self,
        protocol: Literal["http", "grpc"] = "http",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_spans: Callable[[list[ReceivedSpan]], None] | None = None,
        keep: bool = True,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"unknown protocol {protocol!r}")
        self.protocol = protocol
        #: Bytes of a request, received and inflated, at most (see
        #: ``MAX_REQUEST_BYTES``); ``refused`` counts the requests refused.
        self.max_request_bytes = max_request_bytes
        self.refused = 0
        self._decoding = threading.BoundedSemaphore(_DECODING_AT_ONCE)
        self._reading = threading.BoundedSemaphore(_DECODING_AT_ONCE)
        self.host = host
        self.raw: list[bytes] = []
        self.requests = 0
        self.port = port
        self._on_spans = on_spans
        self._keep = keep
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedPoint] = []
        self.metric_requests = 0
        self._mode: Mode = "ok"
        self._stopping = False
        # One condition guards all state; it also wakes hung requests and
        # ``wait_for`` callers.
        self._cond = threading.Condition()
        self._http: _HTTPServer | None = None
        self._grpc: grpc.Server | None = None

    # state ------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        if value not in ("ok", "error", "hang"):
            raise ValueError(f"unknown mode {value!r}")
        with self._cond:
            self._mode = value
            self._cond.notify_all()

    @property
    def endpoint(self) -> str:
        """Base URL: OTLP/HTTP base endpoint or OTLP/gRPC target."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def traces_url(self) -> str:
        return f"{self.endpoint}/v1/traces"

    @property
    def metrics_url(self) -> str:
        return f"{self.endpoint}/v1/metrics"

    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._spans)

    def points(self, metric: str | None = None) -> list[ReceivedPoint]:
        """Every metric point received (of ``metric``, if given), in order."""
        with self._cond:
            return [p for p in self._points if metric is None or p.metric == metric]

    def latest(self, metric: str) -> list[ReceivedPoint]:
        """The newest point of each series of ``metric`` (series: the
        exporting process and the point's attributes)."""
        newest: dict[Any, ReceivedPoint] = {}
        for p in self.points(metric):
            key = (p.resource.get("service.instance.id"),
                   tuple(sorted(p.attributes.items())))
            if key not in newest or p.time_ns >= newest[key].time_ns:
                newest[key] = p
        return list(newest.values())

    def wait_for_points(
        self,
        predicate: Callable[[list[ReceivedPoint]], bool],
        timeout: float = 10.0,
    ) -> list[ReceivedPoint]:
        """Wait until ``predicate(points())`` holds; returns the points."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                points = list(self._points)
                if predicate(points):
                    return points
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        names = sorted({p.metric for p in points})
        raise AssertionError(
            f"metric points did not arrive within {timeout}s: {len(points)} "
            f"points in {self.metric_requests} requests, of {names}")

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()
            self._points.clear()
            self.raw.clear()
            self.requests = 0
            self.metric_requests = 0

    def wait_for(
        self,
        predicate: Callable[[ReceivedSpan], bool] | None = None,
        count: int | None = None,
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Wait until ``count`` (default 1) spans matching ``predicate`` arrived.

        Returns every matching span received so far.
        """
        want = 1 if count is None else count
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [s for s in self._spans if predicate is None or predicate(s)]
                left = deadline - time.monotonic()
                if len(got) >= want or left <= 0:
                    break
                self._cond.wait(left)
            if len(got) >= want:
                return got
            everything = list(self._spans)
        what = "spans" if predicate is None else "spans matching the predicate"
        raise AssertionError(
            f"expected {want} {what} within {timeout}s, got {len(got)} "
            f"({len(everything)} received in {self.requests} requests, "
            f"mode={self._mode}):\n{render_tree(everything) or '  (none)'}"
        )

    def _handle(
        self,
        body: bytes,
        alive: Callable[[], bool] = lambda: True,
        expired: Callable[[], bool] = lambda: False,
        signal: Signal = "traces",
    ) -> bool | None:
        """Record one export request: True = accept, False = reject, None =
        give no answer (receiver stopped, or the client gave up in "hang").

        ``alive`` says the client still waits; ``expired`` that its deadline
        passed, which gRPC knows before the cancellation reaches the server.
        """
        with self._decoding:
            return self._handle_one(body, alive, expired, signal)

    def _handle_one(self, body: bytes, alive: Callable[[], bool],
                    expired: Callable[[], bool], signal: Signal) -> bool | None:
        if signal == "metrics":
            return self._handle_metrics(body, alive, expired)
        with self._cond:
            self.requests += 1
            if self._keep:
                self.raw.append(body)
            answer = self._answer(alive, expired)
        if answer is not True:
            return answer
        spans = decode_request(body)  # outside the lock: may raise on bad input
        with self._cond:
            if self._keep:
                self._spans.extend(spans)
            self._cond.notify_all()
        if self._on_spans is not None:
            self._on_spans(spans)
        return True

    def _answer(self, alive: Callable[[], bool],
                expired: Callable[[], bool]) -> bool | None:
        """What the mode answers an export (under ``_cond``): see ``_handle``."""
        while self._mode == "hang" and not self._stopping and alive():
            # Timed wait: ``alive`` can only be polled, not waited on.
            self._cond.wait(0.05)
        # The data of a client that gave up while we hung is dropped: its
        # exporter has already reported it as failed.
        if self._stopping or self._mode == "hang" or not alive() or expired():
            return None
        return self._mode != "error"

    def _handle_metrics(self, body: bytes, alive: Callable[[], bool],
                        expired: Callable[[], bool]) -> bool | None:
        with self._cond:
            self.metric_requests += 1
            answer = self._answer(alive, expired)
        if answer is not True:
            return answer
        points = decode_metrics_request(body)  # may raise on bad input
        with self._cond:
            if self._keep:
                self._points.extend(points)
            self._cond.notify_all()
        return True

    # lifecycle --------------------------------------------------------------

    def start(self) -> Self:
        self._stopping = False
        if self.protocol == "http":
            self._http = _HTTPServer(self)
            self.port = self._http.server_address[1]
            threading.Thread(
                target=self._http.serve_forever,
                kwargs={"poll_interval": 0.05},  # keeps stop() fast
                name=f"otlp-http-{self.port}",
                daemon=True,
            ).start()
        else:
            # gRPC refuses a larger message (inflated size) itself, with
            # RESOURCE_EXHAUSTED, before the handler sees it.
            self._grpc = grpc.server(
                futures.ThreadPoolExecutor(max_workers=16),
                options=[("grpc.max_receive_message_length", self.max_request_bytes)])
            handler = grpc.unary_unary_rpc_method_handler(
                self._grpc_export,
                # No request deserializer: the servicer gets the raw bytes as
                # they came off the wire, like the HTTP path.
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            )
            metrics_handler = grpc.unary_unary_rpc_method_handler(
                self._grpc_export_metrics,
                response_serializer=ExportMetricsServiceResponse.SerializeToString,
            )
            self._grpc.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        _TRACE_SERVICE.full_name, {"Export": handler}
                    ),
                    grpc.method_handlers_generic_handler(
                        _METRICS_SERVICE.full_name, {"Export": metrics_handler}
                    ),
                )
            )
            self.port = self._grpc.add_insecure_port(
                f"[{self.host}]:{self.port}" if ":" in self.host
                else f"{self.host}:{self.port}"
            )
            self._grpc.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port; releases hung requests first."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=0).wait(5)
            self._grpc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _grpc_export(
        self, body: bytes, context: grpc.ServicerContext
    ) -> ExportTraceServiceResponse:
        self._grpc_answer(body, context, "traces")
        return ExportTraceServiceResponse()

    def _grpc_export_metrics(
        self, body: bytes, context: grpc.ServicerContext
    ) -> ExportMetricsServiceResponse:
        self._grpc_answer(body, context, "metrics")
        return ExportMetricsServiceResponse()

    def _grpc_answer(self, body: bytes, context: grpc.ServicerContext,
                     signal: Signal) -> None:
        def expired() -> bool:
            left = context.time_remaining()
            return left is not None and left <= 0

        try:
            ok = self._handle(body, context.is_active, expired, signal)
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if ok is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver stopped")
        if not ok:
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver in error mode")


class _TooLarge(Exception):
    pass


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` inflated, at most ``limit`` bytes of it: a small request
    that inflates to gigabytes is refused (``_TooLarge``) at the limit,
    not held. Raises zlib.error or EOFError when it is not whole."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    chunks: list[bytes] = []
    total = 0
    rest = body
    while True:  # gzip allows several members one after another
        inflater = zlib.decompressobj(wbits)
        chunk = inflater.decompress(rest, limit + 1 - total)
        total += len(chunk)
        if total > limit or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise EOFError("the compressed body ends early")
        chunks.append(chunk)
        rest = inflater.unused_data
        if not rest or encoding != "gzip":
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: OTLPReceiver) -> None:
        self.receiver = receiver
        # Keep-alive connections outlive shutdown(); they are tracked so that
        # server_close() can cut them and no handler thread lingers.
        self._conns: set[Any] = set()
        self._conns_lock = threading.Lock()
        if ":" in receiver.host:
            self.address_family = socket.AF_INET6
        super().__init__((receiver.host, receiver.port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-reply is expected in fault tests, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        with self._conns_lock:
            conns, self._conns = self._conns, set()
        for sock in conns:
            try:
                sock.shutdown(2)  # SHUT_RDWR wakes the blocked reader
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session uses
    server: _HTTPServer
    timeout = 30  # drop idle keep-alive connections eventually

    def do_POST(self) -> None:
        signal = _PATHS.get(self.path.split("?")[0])
        if signal is None:
            return self._reply(404)
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        length = (self.headers.get("Content-Length") or "").strip()
        receiver = self.server.receiver
        limit = receiver.max_request_bytes
        if not length:
            return self._refuse(411)
        if not _DIGITS.issuperset(length):  # negative, or not a number
            return self._refuse(400)
        if len(length) > 20 or int(length) > limit:
            receiver.refused += 1
            return self._refuse(413)  # not read: no memory for it
        encoding = self.headers.get("Content-Encoding", "identity").lower()
        # Bodies read and inflated a few at a time: each may be the limit.
        with receiver._reading:
            body = self.rfile.read(int(length))
            if ctype != "application/x-protobuf":
                return self._reply(415)
            try:
                if encoding in ("gzip", "deflate"):
                    body = _inflate(body, encoding, limit)
                elif encoding != "identity":
                    return self._reply(415)
            except _TooLarge:
                receiver.refused += 1
                return self._reply(413)
            except (OSError, EOFError, zlib.error):
                return self._reply(400)
        try:
            ok = self.server.receiver._handle(body, self._client_alive,
                                              signal=signal)
        except DecodeError:
            return self._reply(400)
        if ok is None:
            self.close_connection = True
            return None
        if not ok:
            return self._reply(503)
        return self._reply(200, _EMPTY_ANSWER[signal])

    def _refuse(self, code: int) -> None:
        """Answer ``code`` without reading the body; the connection closes
        (what follows on it would be that body)."""
        self.close_connection = True
        self._reply(code)

    def _client_alive(self) -> bool:
        # A client that timed out closes its socket: readable with EOF.
        if not select.select([self.connection], [], [], 0)[0]:
            return True
        try:
            return self.connection.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def _reply(self, code: int, body: bytes = b"") -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output and the listener's trees clean
