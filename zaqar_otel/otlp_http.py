"""The SDK's OTLP/HTTP span exporter, encoding with ``otlp_encoding``.

Everything but the encoding is the SDK's: endpoint, TLS, headers,
compression, retries, timeout, size limit and the exporter's own metrics.
Only ``export`` is replaced, with the SDK's ``export`` (1.45) step for step
and ``SpanEncoder.encode`` where it calls ``encode_spans``::

    exporter = OTLPSpanExporter(endpoint="http://collector:4318/v1/traces")
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any, TypeVar

from opentelemetry.exporter.otlp.proto.http import _common
from opentelemetry.exporter.otlp.proto.http import trace_exporter as sdk
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from zaqar_otel.otlp_encoding import SpanEncoder

LOG = logging.getLogger(__name__)


E = TypeVar("E", bound="BaseException | None")


def without_tracebacks(error: E) -> E:
    """``error`` with the frames of its traceback chain released."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            try:
                traceback.clear_frames(current.__traceback__)
            except RuntimeError:  # a frame still running: leave it
                pass
            current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return error


class OTLPSpanExporter(sdk.OTLPSpanExporter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:  # the SDK logs it
            return super().export(spans)
        with self._metrics.export_operation(len(spans)) as result:
            try:
                body = self._encoder.encode(spans)
            except Exception as error:
                LOG.error("zaqar-otel: failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _common._is_request_too_large(body, self._max_request_size):
                LOG.warning("zaqar-otel: dropping span batch: serialized size %d "
                            "bytes exceeds max_request_size %d bytes",
                            len(body), self._max_request_size)
                result.error = _common.RequestPayloadTooLargeError(
                    f"Serialized span request size {len(body)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes.")
                return SpanExportResult.FAILURE
            sent = self._client.export(body)
            del body
            if not sent.success:
                # The error's traceback reaches, through its frames, this
                # frame and the SDK's batch: a reference cycle per failed
                # export, holding a whole batch until a full GC collection
                # (+27 MiB by 100k requests against a collector that never
                # answers). Its frames are not needed: only the error is.
                result.error = without_tracebacks(sent.error)
                if sent.status_code is not None:
                    result.error_attrs = {
                        HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
