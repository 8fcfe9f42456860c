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
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
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
from zaqar_otel.export.processor import SPLIT_LINE

LOG = logging.getLogger(__name__)

#: As ``otlp_grpc.RECEIVE_LIMIT``: a request larger than this that the
#: collector answered by closing the connection may have been refused for
#: its size.
RECEIVE_LIMIT = 4 << 20


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
        self._lost: list[tuple[int, str]] = []
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

    def take_lost(self) -> list[tuple[int, str]]:
        """Spans of a split request whose half failed otherwise, since last
        asked, with why (``HTTP 503``): the rest was delivered, and
        ``export`` says SUCCESS (the span processor counts them as dropped)."""
        lost, self._lost = self._lost, []
        return lost

    def take_failure(self) -> str | None:
        """Why the last export that failed whole failed (``HTTP 503``)."""
        failure, self._failure = self._failure, None
        return failure

    _refused = 0
    _failure: str | None = None
    _split_logged = False

    def _export_split(self, parts: Any, spans: Sequence[ReadableSpan | EncodedSpan]
                      ) -> SpanExportResult:
        """Export ``spans``; a request refused as too large (HTTP 413, beyond
        the SDK's max_request_size, or a connection reset while sending a
        body beyond gRPC's default receive limit, 4 MiB, which a collector
        may answer by closing) is split in two and each half sent again,
        down to single spans, which are then dropped (counted in
        ``take_refused``; not a failure of the export: retrying cannot
        help).

        Once split, some halves may be delivered: a half that fails
        otherwise is counted in ``take_lost`` and the export says SUCCESS
        (a FAILURE would count the delivered halves as dropped). The halves
        share one timeout, the SDK's, from the split on: a half not sent
        when it has passed is lost, so that a collector that hangs holds the
        export about twice the timeout, not once a half."""
        outcome = self._export_once(parts, spans)
        if outcome.error is None:
            return SpanExportResult.SUCCESS
        if not outcome.too_large or (len(spans) == 1 and not outcome.refused):
            self._failure = outcome.error  # nothing delivered: a failure
            return SpanExportResult.FAILURE
        if not self._split_logged:
            self._split_logged = True
            LOG.warning(SPLIT_LINE, outcome.size, outcome.error)
        if len(spans) == 1:
            self._refused += 1
            return SpanExportResult.SUCCESS
        # The SDK client's timeout (its own deadline, for each request).
        timeout = getattr(parts.client, "_timeout", None)
        deadline = time.monotonic() + (timeout if isinstance(timeout, int | float)
                                       and timeout > 0 else 10.0)
        waiting = [spans[len(spans) // 2:], spans[:len(spans) // 2]]  # a stack
        while waiting:
            part = waiting.pop()
            if time.monotonic() >= deadline:
                self._lost.append((len(part), "its timeout passed before they "
                                   "were sent"))
                continue
            outcome = self._export_once(parts, part)
            if outcome.error is None:
                continue
            if outcome.too_large and len(part) == 1 and outcome.refused:
                self._refused += 1
            elif outcome.too_large and len(part) > 1:
                half = len(part) // 2
                waiting += [part[half:], part[:half]]
            else:
                self._lost.append((len(part), outcome.error))
        return SpanExportResult.SUCCESS

    def _export_once(self, parts: Any, spans: Sequence[ReadableSpan | EncodedSpan]
                     ) -> _Outcome:
        """One request, through the SDK's client (its retries, its timeout)."""
        with parts.metrics.export_operation(len(spans)) as result:
            try:
                body = self._encoder.encode(spans)
            except Exception as error:
                LOG.error("zaqar-otel: failed to encode span batch: %s", error)
                result.error = error
                return _Outcome(f"encoding raised {type(error).__name__}")
            size = len(body)
            limit = parts.max_request_size
            if parts.too_large(body, limit):
                result.error = parts.too_large_error(
                    f"Serialized span request size {size} bytes exceeds "
                    f"max_request_size {limit} bytes.")
                return _Outcome("beyond max_request_size", size, True, True)
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
                    return _Outcome(f"HTTP {sent.status_code}", size,
                                    sent.status_code == 413, sent.status_code == 413)
                # No answer: a collector may close the connection on a body
                # beyond its limit before the client reads its 413.
                why = (type(sent.error).__name__ if sent.error is not None
                       else "no answer")
                return _Outcome(why, size, size > RECEIVE_LIMIT, False)
        return _Outcome(None, size)


@dataclass(frozen=True)
class _Outcome:
    """One request's: why it failed (None: delivered), its size, whether it
    may have been refused for its size (``too_large``), and whether that is
    certain (``refused``: 413, or beyond max_request_size)."""

    error: str | None
    size: int = 0
    too_large: bool = False
    refused: bool = False
