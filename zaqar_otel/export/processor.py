"""What zaqar-otel does to every exported span, whichever path made it:
error texts scrubbed, requests bounded in bytes, drops counted.

When the collector is down or slow, spans are dropped, either when an export
fails or when the span queue is full. The SDK logs each failed batch (a
warning and an error every few seconds) and each full queue; an operator
needs one line when dropping starts and one when it stops, with the count.
``CountingExporter`` wraps the exporter of either path's batch processor
(``zaqar_otel._sdk``), with the SDK's public interfaces only::

    drops = DropCounter("http://collector:4318/v1/traces")
    processor = BatchSpanProcessor(CountingExporter(exporter, drops))
    ...
    drops.total                                # spans dropped so far
    drops.by_type                              # the same, by error.type

With ``[opentelemetry] metrics`` on, the metrics pipeline exports every
counter of the process (``drop_counters()``) as ``zaqar_otel.spans.dropped``
and ``zaqar_otel.spans.exported`` (``zaqar_otel.metrics.pipeline``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from zaqar_otel import redact

LOG = logging.getLogger(__name__)

#: Why a span was dropped: the ``error.type`` of ``zaqar_otel.spans.dropped``.
#: ``queue_full`` is the OTel SDK conventions' name for a full queue.
QUEUE_FULL = "queue_full"  # the span queue, in spans or in bytes
EXPORT_FAILED = "export_failed"  # the collector did not accept it, or no answer
TOO_LARGE = "too_large"  # refused by the collector as too large, alone
PROCESSOR_FAILED = "processor_failed"  # could not be encoded or handed over
DROP_TYPES = (QUEUE_FULL, EXPORT_FAILED, TOO_LARGE, PROCESSOR_FAILED)

#: Said once by an exporter, the first time it splits a refused request.
SPLIT_LINE = ("zaqar-otel: the collector refused an export request of %d bytes "
              "(%s), taken as too large: such requests are sent again in halves "
              "(set [opentelemetry] max_export_batch_bytes below its limit)")

_counters: weakref.WeakSet[DropCounter] = weakref.WeakSet()


def drop_counters() -> list[DropCounter]:
    """Every live ``DropCounter`` of this process (one per span processor)."""
    return list(_counters)


class DropCounter:
    """Counts dropped spans, by why, and exported ones; logs when dropping
    starts and when it stops. Counts start again in a forked worker, whose
    queue starts empty."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._reset()
        _counters.add(self)
        if hasattr(os, "register_at_fork"):
            reset = weakref.WeakMethod(self._reset)
            os.register_at_fork(after_in_child=lambda: (f := reset()) and f())

    def _reset(self) -> None:
        self.total = 0
        self.by_type = dict.fromkeys(DROP_TYPES, 0)
        self.exported_total = 0
        self.since_ns = time.time_ns()  # the start of the counts
        self._since_ok = 0
        self._lock = threading.Lock()

    def dropped(self, count: int, why: str, error_type: str = EXPORT_FAILED) -> None:
        with self._lock:
            first = self._since_ok == 0
            self._since_ok += count
            self.total += count
            self.by_type[error_type] = self.by_type.get(error_type, 0) + count
        if first:
            LOG.warning("zaqar-otel: dropping spans (%s, exporting to %s); "
                        "requests are not affected; one line follows when "
                        "export works again", why, self.destination)

    def exported(self, count: int = 0, recovered: bool = True) -> None:
        """``count`` spans exported; ``recovered``: an export without any
        drop, which ends an outage (one line saying so)."""
        with self._lock:
            self.exported_total += count
            if not recovered:
                return
            dropped, self._since_ok = self._since_ok, 0
        if dropped:
            LOG.warning("zaqar-otel: exporting to %s works again; %d spans "
                        "were dropped meanwhile", self.destination, dropped)

    def counts(self) -> tuple[int, dict[str, int], int]:
        """(exported, dropped by error type, since when in ns): one reading."""
        with self._lock:
            return self.exported_total, dict(self.by_type), self.since_ns


def _scrubbed_event(event: Event) -> Event:
    if event.name != "exception" or not event.attributes:
        return event
    attributes = dict(event.attributes)
    if "exception.message" in attributes:
        attributes["exception.message"] = redact.message(
            attributes["exception.message"])
    if "exception.stacktrace" in attributes:
        attributes["exception.stacktrace"] = redact.stacktrace(
            str(attributes["exception.stacktrace"]))
    return Event(event.name, attributes, event.timestamp)


def has_exception(events: Iterable[Event]) -> bool:
    """Whether ``events`` hold an exception's, the only event ``scrub``
    changes (a loop: no generator on the request thread)."""
    for event in events:
        if event.name == "exception":
            return True
    return False


def scrub(span: ReadableSpan) -> ReadableSpan:
    """``span`` with error texts redacted (``redact.message``).

    The last line of defence for every span, ours and the instrumentors':
    an exception message may quote SQL parameters, URLs with tokens or
    credentials. Spans without error text pass unchanged, at no cost.
    """
    status = span.status
    description = status.description
    if not has_exception(span.events) and (not description or
                              redact.message(description) == description):
        return span
    if description:
        status = Status(status.status_code, redact.message(description))
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent,
        resource=span.resource, attributes=span.attributes,
        events=tuple(_scrubbed_event(e) for e in span.events), links=span.links,
        kind=span.kind, status=status, start_time=span.start_time,
        end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)


class Encoded:
    """A span encoded as it ended, which an exporter takes in place of the
    span (the fast path's ``EncodedSpan``): ``field`` holds its bytes, and
    it was scrubbed before it was encoded."""

    __slots__ = ()
    field: bytes


def encoded_size(span: ReadableSpan | Encoded) -> int:
    """The bytes ``span`` takes in an export request: exact for a span
    encoded as it ended, else an estimate from its strings (the SDK's path)."""
    if isinstance(span, Encoded):
        return len(span.field)
    # Exact types, not isinstance (an ABC's check is a few µs a span): the
    # stock path estimates each span on the request thread.
    size = 96 + len(span.name or "")
    for attributes in (span.attributes, *(e.attributes for e in span.events),
                       *(link.attributes for link in span.links)):
        value: Any
        for key, value in (attributes or {}).items():
            kind = type(value)
            size += 8 + len(key) + (len(value) if kind is str or kind is bytes
                                    else sum(len(str(v)) + 4 for v in value)
                                    if kind is tuple or kind is list else 16)
    return size


def byte_bounded(spans: Sequence[Any], max_bytes: int) -> list[list[Any]]:
    """``spans`` in order, cut into runs of at most ``max_bytes`` encoded
    bytes each (a span larger than that alone in its run)."""
    runs: list[list[Any]] = []
    run: list[Any] = []
    total = 0
    for span in spans:
        size = len(span.field) if isinstance(span, Encoded) else encoded_size(span)
        if run and total + size > max_bytes:
            runs.append(run)
            run, total = [], 0
        run.append(span)
        total += size
    if run:
        runs.append(run)
    return runs


class CountingExporter(SpanExporter):
    """An exporter wrapped: spans scrubbed of error texts (``scrub``),
    requests bounded in bytes (``byte_bounded``), exported and dropped
    spans counted in ``drops``. Every span processor's exporter is one,
    the SDK's ``BatchSpanProcessor``'s included (``zaqar_otel._sdk``)."""

    def __init__(self, exporter: SpanExporter, drops: DropCounter,
                 max_bytes: int = 1 << 20) -> None:
        self._exporter = exporter
        self._drops = drops
        self._max_bytes = max_bytes
        #: Called with the encoded bytes of each batch as it leaves the queue.
        self.released: Any = None
        #: Called with each batch as it leaves the queue (the stock path's
        #: bound on its queue, ``stock.GuardedSpanProcessor``).
        self.taken: Any = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.released is not None:
            try:
                self.released(sum(len(span.field) for span in spans
                                  if isinstance(span, Encoded)))
            except Exception:  # noqa: S110 - counting only; never fail an export
                pass
        if self.taken is not None:
            try:
                self.taken(spans)
            except Exception:  # noqa: S110 - counting only; never fail an export
                pass
        try:
            # A span encoded as it ended was scrubbed then. Requests bounded
            # in bytes: one client's oversized spans never make a batch the
            # collector refuses (invariant 7).
            runs = byte_bounded([span if isinstance(span, Encoded) else scrub(span)
                                 for span in spans], self._max_bytes)
        except Exception as exc:
            self._drops.dropped(len(spans), f"export raised {type(exc).__name__}",
                                PROCESSOR_FAILED)
            return SpanExportResult.FAILURE
        for done, run in enumerate(runs):
            if self._export(run) is not SpanExportResult.SUCCESS:
                # The rest would wait as long (a collector that hangs): the
                # batch is dropped, as the SDK drops a batch that failed.
                rest = sum(len(r) for r in runs[done + 1:])
                if rest:
                    self._drops.dropped(rest, "the collector did not accept them")
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _export(self, spans: Sequence[Any]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception as exc:
            self._drops.dropped(len(spans), f"export raised {type(exc).__name__}")
            return SpanExportResult.FAILURE
        # zaqar-otel's exporters split a request the collector refuses as
        # too large and send the halves again; a single span it refuses is
        # dropped there, and counted here, as are the spans of a half that
        # failed otherwise (the rest of the request was delivered: the
        # export says SUCCESS). On a failure of the whole request, they say
        # why (a gRPC status code, an HTTP status).
        refused = _take(self._exporter, "take_refused", 0)
        lost = _take(self._exporter, "take_lost", [])
        failure = _take(self._exporter, "take_failure", None)
        if refused:
            self._drops.dropped(refused, "the collector refused them as too large",
                                TOO_LARGE)
        for count, why in lost:
            self._drops.dropped(count, f"the collector did not accept them ({why})")
        missing = refused + sum(count for count, _ in lost)
        if result is SpanExportResult.SUCCESS:
            self._drops.exported(len(spans) - missing, recovered=not missing)
        else:
            why = f" ({failure})" if failure else ""
            self._drops.dropped(len(spans) - missing,
                                f"the collector did not accept them{why}")
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def _take(exporter: SpanExporter, name: str, default: Any) -> Any:
    """``exporter.<name>()`` (zaqar-otel's exporters' counts), else ``default``."""
    take = getattr(exporter, name, None)
    if not callable(take):
        return default
    try:
        return take()
    except Exception:
        return default
