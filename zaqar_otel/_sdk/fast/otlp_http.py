"""The SDK's OTLP/HTTP span exporter, encoding with ``otlp_encoding``.

Everything but the encoding (and, for a plain ``http://`` collector, the
transport: ``http_transport``) is the SDK's: endpoint, TLS, headers,
compression, retries, timeout, size limit and the exporter's own metrics.
Only ``export`` is replaced, with the SDK's ``export`` (1.45) step for step
and ``SpanEncoder.encode`` where it calls ``encode_spans``. On an SDK laid
out differently (``_sdk.layout``), the SDK's own ``export`` runs::

    exporter = OTLPSpanExporter(endpoint="http://collector:4318/v1/traces")
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any, TypeVar

from opentelemetry.exporter.otlp.proto.http import trace_exporter as sdk
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from zaqar_otel._sdk import layout
from zaqar_otel._sdk.fast import http_transport
from zaqar_otel._sdk.fast.otlp_encoding import (
    EXPORT_PAUSE,
    EXPORT_PAUSE_EVERY,
    EncodedSpan,
    SpanEncoder,
)

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


def read_environment_once(session: Any, url: str) -> None:
    """What ``requests`` reads from the environment for every request of a
    session (``trust_env``: proxies for ``url``, a CA bundle named by
    ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``, netrc credentials), read
    now, once, and set on the session itself: about a third of an export's
    cost otherwise. A change of those variables or of ~/.netrc after the
    exporter is made is not seen."""
    if not session.trust_env:
        return
    import requests.utils

    settings = session.merge_environment_settings(url, {}, None, None, None)
    auth = None if session.auth else requests.utils.get_netrc_auth(url)
    session.proxies = dict(settings["proxies"])
    session.verify = settings["verify"]
    if auth:
        session.auth = auth
    session.trust_env = False


class OTLPSpanExporter(sdk.OTLPSpanExporter):
    #: The encoder a span processor may encode spans with as they end
    #: (``SpanEncoder.encoded``), handing ``export`` the pieces; None: spans.
    early_encoder: SpanEncoder | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder(pause_every=EXPORT_PAUSE_EVERY, pause=EXPORT_PAUSE)
        self._parts = layout.http_parts(self)
        self.early_encoder = self._encoder
        if self._parts is None:
            self.early_encoder = None  # the SDK's export takes spans only
            layout.fast_path_off("OTLP/HTTP export encodes with the SDK's "
                                     "encoder")
        session = layout.http_session(self)
        if session is None:
            return
        # A plain http:// collector: a kept-alive connection in place of the
        # SDK's own session (http_transport); else the session (the SDK's,
        # or one given: "session" is its eighth parameter), its environment
        # read once.
        given = kwargs.get("session") is not None or len(args) >= 8
        connection = None if given else http_transport.for_endpoint(self._endpoint)
        if connection is None or not layout.replace_http_transport(self, connection):
            read_environment_once(session, self._endpoint)

    def export(self, spans: Sequence[ReadableSpan | EncodedSpan]  # type: ignore[override]
               ) -> SpanExportResult:
        parts = self._parts
        if parts is None or self._shutdown:  # the SDK logs a shut-down export
            return super().export(spans)  # type: ignore[arg-type] # spans then
        return self._export_split(parts, spans)

    def take_refused(self) -> int:
        """Spans the collector refused as too large, alone, since last asked:
        not delivered, though ``export`` says SUCCESS when nothing else failed
        (the span processor counts them as dropped)."""
        refused, self._refused = self._refused, 0
        return refused

    _refused = 0

    def _export_split(self, parts: Any, spans: Sequence[ReadableSpan | EncodedSpan]
                      ) -> SpanExportResult:
        """Export ``spans``; a request refused as too large (HTTP 413, or
        beyond the SDK's max_request_size) is split in two and each half
        sent again, down to single spans, which are then dropped (counted in
        ``take_refused``; not a failure of the export: retrying cannot help)."""
        result, too_large = self._export_once(parts, spans)
        if not too_large:
            return result
        if len(spans) == 1:
            self._refused += 1
            return SpanExportResult.SUCCESS
        half = len(spans) // 2
        first = self._export_split(parts, spans[:half])
        second = self._export_split(parts, spans[half:])
        return (SpanExportResult.SUCCESS if first is second is SpanExportResult.SUCCESS
                else SpanExportResult.FAILURE)

    def _export_once(self, parts: Any, spans: Sequence[ReadableSpan | EncodedSpan]
                     ) -> tuple[SpanExportResult, bool]:
        """One request: its result, and whether it was refused as too large."""
        with parts.metrics.export_operation(len(spans)) as result:
            try:
                body = self._encoder.encode(spans)
            except Exception as error:
                LOG.error("zaqar-otel: failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE, False
            limit = parts.max_request_size
            if parts.too_large(body, limit):
                result.error = parts.too_large_error(
                    f"Serialized span request size {len(body)} bytes exceeds "
                    f"max_request_size {limit} bytes.")
                return SpanExportResult.FAILURE, True
            sent = parts.client.export(body)
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
                return SpanExportResult.FAILURE, sent.status_code == 413
        return SpanExportResult.SUCCESS, False
