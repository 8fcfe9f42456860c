"""The SDK's OTLP/gRPC span exporter, encoding with ``otlp_encoding``.

gRPC serialises a protobuf message itself, so the batch is encoded by
``SpanEncoder`` and parsed back into one (the parse is in C: about 0.3 µs
a span, a few per cent of the encoding); everything else is the SDK's::

    exporter = OTLPSpanExporter(endpoint="http://collector:4317", insecure=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as sdk
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import ReadableSpan

from zaqar_otel import sdk_layout
from zaqar_otel.export.otlp_encoding import (
    EXPORT_PAUSE,
    EXPORT_PAUSE_EVERY,
    EncodedSpan,
    SpanEncoder,
)


class OTLPSpanExporter(sdk.OTLPSpanExporter):
    #: As ``otlp_http.OTLPSpanExporter.early_encoder``.
    early_encoder: SpanEncoder | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder: SpanEncoder | None = SpanEncoder(
            pause_every=EXPORT_PAUSE_EVERY, pause=EXPORT_PAUSE)
        if not sdk_layout.grpc_translates(type(self)):
            # This SDK no longer calls _translate_data: its own encoder runs.
            self._encoder = None
        self.early_encoder = self._encoder
        if self._encoder is None:
            sdk_layout.fast_path_off("OTLP/gRPC export encodes with the SDK's "
                                     "encoder")

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
