"""The SDK's OTLP/gRPC span exporter, encoding with ``otlp_encoding``.

gRPC serialises a protobuf message itself, so the batch is encoded by
``SpanEncoder`` and parsed back into one (the parse is in C: about 0.3 µs
a span, a few per cent of the encoding); everything else is the SDK's,
but for one thing: a request the collector refuses as too large
(``RESOURCE_EXHAUSTED`` without a retry delay: beyond its receive limit, 4 MiB
by default) is split in two and each half sent again, down to single spans,
which are then dropped and counted (``take_refused``), where the SDK would
retry the whole request until its timeout and drop it::

    exporter = OTLPSpanExporter(endpoint="http://collector:4317", insecure=True)
"""

from __future__ import annotations

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

_RETRY_INFO = "google.rpc.retryinfo-bin"


def _too_large(error: grpc.RpcError) -> bool:
    """A refusal of the request's size: RESOURCE_EXHAUSTED with no retry
    delay (a collector that sheds load says when to come back)."""
    try:
        return (error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
                and _RETRY_INFO not in dict(error.trailing_metadata() or ()))  # type: ignore[attr-defined]
    except Exception:
        return False


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
    again in halves (see the module)."""

    def __init__(self, stub: Any, exporter: OTLPSpanExporter) -> None:
        self._stub = stub
        self._exporter = exporter

    def Export(self, request: ExportTraceServiceRequest, *args: Any,  # noqa: N802 - gRPC's name
               **kwargs: Any) -> Any:
        try:
            return self._stub.Export(request, *args, **kwargs)
        except grpc.RpcError as error:
            if not _too_large(error):
                raise
            if _span_count(request) <= 1:
                self._exporter._refused += _span_count(request)
                return ExportTraceServiceResponse()
        for part in _halves(request):
            self.Export(part, *args, **kwargs)
        return ExportTraceServiceResponse()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)


class OTLPSpanExporter(sdk.OTLPSpanExporter):
    #: As ``otlp_http.OTLPSpanExporter.early_encoder``.
    early_encoder: SpanEncoder | None
    _refused = 0

    def take_refused(self) -> int:
        """As ``otlp_http.OTLPSpanExporter.take_refused``."""
        refused, self._refused = self._refused, 0
        return refused

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
