"""The SDK's OTLP/gRPC span exporter, encoding with ``otlp_encoding``.

gRPC serialises a protobuf message itself, so the batch is encoded by
``SpanEncoder`` and parsed back into one (the parse is in C: about 0.3 µs
a span, a few per cent of the encoding); everything else is the SDK's,
but for one thing: a request the collector refuses as too large
(``RESOURCE_EXHAUSTED`` without a retry delay: beyond its receive limit, 4 MiB
by default; or a reset stream, ``INTERNAL``, ``CANCELLED``, ``UNAVAILABLE``...,
of a request beyond 4 MiB, which some servers answer instead) is split in
two and each half sent again, down to single spans, which are then dropped
and counted (``take_refused``), where the SDK would retry the whole request
until its timeout and drop it. The halves' failures stay here
(``_SplittingStub``): counted (``take_lost``), never retried whole by the SDK::

    exporter = OTLPSpanExporter(endpoint="http://collector:4317", insecure=True)
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as sdk
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan

from zaqar_otel._sdk import layout
from zaqar_otel._sdk.fast.otlp_encoding import (
    EXPORT_PAUSE,
    EXPORT_PAUSE_EVERY,
    EncodedSpan,
    SpanEncoder,
)
from zaqar_otel.export.processor import SPLIT_LINE

LOG = logging.getLogger(__name__)

_RETRY_INFO = "google.rpc.retryinfo-bin"

#: gRPC's default receive limit, and so the usual collector's: a request
#: larger than this that fails with a reset stream may have been refused
#: for its size, whatever code the client saw (a server may reset the
#: stream instead of answering RESOURCE_EXHAUSTED).
RECEIVE_LIMIT = 4 << 20
_RESET = frozenset({
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})
#: The codes the SDK's exporter retries (a half is retried likewise).
_RETRYABLE = frozenset({
    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS})
_TRIES = 6  # as the SDK's _MAX_RETRYS


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    try:
        code = error.code()  # type: ignore[attr-defined]
    except Exception:
        return None
    return code if isinstance(code, grpc.StatusCode) else None


def _retry_delay(error: grpc.RpcError) -> float | None:
    """The delay a collector that sheds load asks for, in seconds."""
    try:
        raw = dict(error.trailing_metadata() or ()).get(_RETRY_INFO)  # type: ignore[attr-defined]
        if raw is None:
            return None
        from google.rpc.error_details_pb2 import RetryInfo

        info = RetryInfo.FromString(raw)
        return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    except Exception:
        return None


def _too_large(error: grpc.RpcError) -> bool:
    """A refusal of the request's size: RESOURCE_EXHAUSTED with no retry
    delay (a collector that sheds load says when to come back)."""
    try:
        return (_code(error) is grpc.StatusCode.RESOURCE_EXHAUSTED
                and _RETRY_INFO not in dict(error.trailing_metadata() or ()))  # type: ignore[attr-defined]
    except Exception:
        return False


def _maybe_too_large(error: grpc.RpcError, size: int) -> bool:
    """``_too_large``, or a stream reset of a request beyond gRPC's default
    receive limit (``RECEIVE_LIMIT``)."""
    return _too_large(error) or (size > RECEIVE_LIMIT and _code(error) in _RESET
                                 and _retry_delay(error) is None)


def describe(error: BaseException) -> str:
    """``gRPC UNAVAILABLE``: what a drop line says of a failed request."""
    code = _code(error) if isinstance(error, grpc.RpcError) else None
    return f"gRPC {code.name}" if code is not None else type(error).__name__


def _halves(request: ExportTraceServiceRequest) -> list[ExportTraceServiceRequest]:
    """``request``'s spans in two requests, each with its resource and scope."""
    spans = [(r, s, span) for r, resource_spans in enumerate(request.resource_spans)
             for s, scope_spans in enumerate(resource_spans.scope_spans)
             for span in scope_spans.spans]
    half = len(spans) // 2
    out = []
    for picked in (spans[:half], spans[half:]):
        part = ExportTraceServiceRequest()
        last: tuple[int, int] | None = None
        resource_spans: Any = None
        scope_spans: Any = None
        for r, s, span in picked:
            if last is None or last[0] != r:
                source = request.resource_spans[r]
                resource_spans = part.resource_spans.add()
                resource_spans.resource.CopyFrom(source.resource)
                resource_spans.schema_url = source.schema_url
            if last != (r, s):
                source_scope = request.resource_spans[r].scope_spans[s]
                scope_spans = resource_spans.scope_spans.add()
                scope_spans.scope.CopyFrom(source_scope.scope)
                scope_spans.schema_url = source_scope.schema_url
            scope_spans.spans.append(span)
            last = (r, s)
        out.append(part)
    return out


def _span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for resource in request.resource_spans
               for scope in resource.scope_spans)


class _SplittingStub:
    """The SDK's TraceService stub; a request refused as too large is sent
    again in halves (see the module).

    A failure of the whole request goes to the SDK's exporter as before (its
    retries, its log line): nothing of it was delivered. Once split, some
    halves may be delivered: a failure of a half is never handed back to
    the SDK, whose retry would send the whole request again (the delivered
    halves twice) or drop it whole (the halves not yet sent). Each half is
    retried here as the SDK would retry a request; the halves share one
    timeout; a half still failing, or not sent when that has passed, is
    counted as lost (``take_lost``)."""

    def __init__(self, stub: Any, exporter: OTLPSpanExporter) -> None:
        self._stub = stub
        self._exporter = exporter

    def Export(self, request: ExportTraceServiceRequest, *args: Any,  # noqa: N802 - gRPC's name
               **kwargs: Any) -> Any:
        try:
            return self._stub.Export(request, *args, **kwargs)
        except grpc.RpcError as error:
            count = _span_count(request)
            size = request.ByteSize()
            if not (_too_large(error) or (count > 1 and _maybe_too_large(error, size))):
                self._exporter.failed_with(error)
                raise  # nothing delivered: the SDK retries or drops it whole
            why = describe(error)
        # Outside the except: a log handler may add the exception being handled.
        self._exporter.refusal_seen(size, why)
        if count <= 1:
            self._exporter._refused += count
            return ExportTraceServiceResponse()
        # The halves share one timeout, the SDK's, from now: a collector
        # that hangs holds the export about twice the timeout, not once a half.
        timeout = getattr(self._exporter, "_timeout", None)
        if not (isinstance(timeout, int | float) and timeout > 0):
            timeout = kwargs.get("timeout") or 10.0
        self._send_halves(request, time.monotonic() + timeout, args, kwargs)
        return ExportTraceServiceResponse()

    def _send_halves(self, request: ExportTraceServiceRequest, deadline: float,
                     args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """``request``'s halves, in order, each split again while refused."""
        waiting = _halves(request)[::-1]  # a stack: the first half on top
        while waiting:
            part = waiting.pop()
            error = self._send(part, deadline, args, kwargs)
            if error is None:
                continue
            count = _span_count(part)
            if isinstance(error, grpc.RpcError) and _too_large(error) and count <= 1:
                self._exporter._refused += count
            elif (isinstance(error, grpc.RpcError) and count > 1
                    and _maybe_too_large(error, part.ByteSize())):
                waiting.extend(_halves(part)[::-1])
            else:
                self._exporter.lost(count, error)

    def _send(self, part: ExportTraceServiceRequest, deadline: float,
              args: tuple[Any, ...], kwargs: dict[str, Any]
              ) -> grpc.RpcError | TimeoutError | None:
        """``part`` sent, retried as the SDK retries, until ``deadline``:
        None once delivered, else the last error (TimeoutError: the
        deadline passed before it could be sent)."""
        last: grpc.RpcError | TimeoutError = TimeoutError()
        for attempt in range(_TRIES):
            left = deadline - time.monotonic()
            if left <= 0:
                return last
            try:
                self._stub.Export(part, *args, **{**kwargs, "timeout": left})
                return None
            except grpc.RpcError as error:
                last = error
                if _too_large(error) or _maybe_too_large(error, part.ByteSize()):
                    return error
                if _code(error) not in _RETRYABLE:
                    return error
            delay = _retry_delay(last) if isinstance(last, grpc.RpcError) else None
            if delay is None:
                delay = 2 ** attempt * random.uniform(0.8, 1.2)  # noqa: S311 - jitter
            if (attempt + 1 == _TRIES or delay >= deadline - time.monotonic()
                    or self._exporter.stopping(delay)):
                return last
        return last

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)


class OTLPSpanExporter(sdk.OTLPSpanExporter):
    #: As ``otlp_http.OTLPSpanExporter.early_encoder``.
    early_encoder: SpanEncoder | None
    _refused = 0

    _failure: str | None = None
    _split_logged = False
    _lost: list[tuple[int, str]]

    def take_refused(self) -> int:
        """As ``otlp_http.OTLPSpanExporter.take_refused``."""
        refused, self._refused = self._refused, 0
        return refused

    def take_lost(self) -> list[tuple[int, str]]:
        """As ``otlp_http.OTLPSpanExporter.take_lost``."""
        lost, self._lost = self._lost, []
        return lost

    def take_failure(self) -> str | None:
        """As ``otlp_http.OTLPSpanExporter.take_failure``."""
        failure, self._failure = self._failure, None
        return failure

    def failed_with(self, error: BaseException) -> None:
        self._failure = describe(error)

    def lost(self, count: int, error: BaseException) -> None:
        self._lost.append((count, describe(error)
                           if not isinstance(error, TimeoutError)
                           else "its timeout passed before they were sent"))

    def refusal_seen(self, size: int, why: str) -> None:
        """One line, the first time a request is split (see otlp_http's)."""
        if not self._split_logged:
            self._split_logged = True
            LOG.warning(SPLIT_LINE, size, why)

    def stopping(self, delay: float) -> bool:
        """Wait ``delay`` seconds before a retry; True if shut down meanwhile."""
        return self._stopped.wait(delay)

    def _initialize_channel_and_stub(self, *args: Any, **kwargs: Any) -> Any:
        # The SDK's (re)connection, then its stub wrapped; called by the
        # SDK's __init__ and again after UNAVAILABLE. An SDK that makes its
        # stub elsewhere (layout.grpc_stub_made_here) never calls this:
        # its own retries then, said once at __init__.
        made = super()._initialize_channel_and_stub(  # type: ignore[misc]
            *args, **kwargs)
        client = getattr(self, "_client", None)
        if client is not None and not isinstance(client, _SplittingStub):
            self._client = _SplittingStub(client, self)  # type: ignore[assignment]
        return made

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lost = []
        self._stopped = threading.Event()
        super().__init__(*args, **kwargs)
        self._encoder: SpanEncoder | None = SpanEncoder(
            pause_every=EXPORT_PAUSE_EVERY, pause=EXPORT_PAUSE)
        if not layout.grpc_translates(type(self)):
            # This SDK no longer calls _translate_data: its own encoder runs.
            self._encoder = None
        self.early_encoder = self._encoder
        if self._encoder is None:
            layout.fast_path_off("OTLP/gRPC export encodes with the SDK's "
                                     "encoder")
        if not isinstance(getattr(self, "_client", None), _SplittingStub):
            layout.fast_path_off("a request the collector refuses as too "
                                     "large is retried by the SDK, not split")

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        self._stopped.set()  # a half waiting to be retried gives up
        super().shutdown(*args, **kwargs)

    def _translate_data(
            self, data: Sequence[ReadableSpan | EncodedSpan], *args: Any,
            **kwargs: Any) -> ExportTraceServiceRequest:
        if self._encoder is None:
            return encode_spans(data)  # type: ignore[arg-type] # spans then
        # An argument a later SDK may pass means something not known here:
        # its own encoder then, unless the spans were encoded as they ended.
        if (args or kwargs) and not any(type(s) is EncodedSpan for s in data):
            return encode_spans(data)  # type: ignore[arg-type]
        return ExportTraceServiceRequest.FromString(self._encoder.encode(data))
