"""The export path: exporter and span processor; spans scrubbed, drops counted.

When the collector is down or slow, spans are dropped, either when an export
fails or when the span queue is full. The SDK logs each failed batch (a
warning and an error every few seconds) and each full queue; an operator
needs one line when dropping starts and one when it stops, with the count::

    processor = span_processor(settings)       # None for exporter = none
    provider.add_span_processor(processor)
    ...
    processor.drops.total                      # spans dropped so far
    processor.drops.by_type                    # the same, by error.type

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
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status

from zaqar_otel import patching, redact, sdk_layout
from zaqar_otel.export.otlp_encoding import EncodedSpan, SpanEncoder, by_field

LOG = logging.getLogger(__name__)

# The SDK's per-batch failure lines, replaced by DropCounter's two lines.
_SDK_DROP_MESSAGES = ("Transient error", "Failed to export", "Queue full")
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
)
# The SDK's line for each attribute value cut to the length limit: one per
# value, as often as a client sends a long header. Cutting is the limit's
# documented effect (the option's help, docs/faults.md), not news.
_SDK_ATTRIBUTES_LOGGER = "opentelemetry.attributes"
_SDK_TRUNCATED = ("String attribute value exceeds max length",)


#: Why a span was dropped: the ``error.type`` of ``zaqar_otel.spans.dropped``.
#: ``queue_full`` is the OTel SDK conventions' name for a full queue.
QUEUE_FULL = "queue_full"  # the span queue, in spans or in bytes
EXPORT_FAILED = "export_failed"  # the collector did not accept it, or no answer
TOO_LARGE = "too_large"  # refused by the collector as too large, alone
PROCESSOR_FAILED = "processor_failed"  # could not be encoded or handed over
DROP_TYPES = (QUEUE_FULL, EXPORT_FAILED, TOO_LARGE, PROCESSOR_FAILED)

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


def scrub(span: ReadableSpan) -> ReadableSpan:
    """``span`` with error texts redacted (``redact.message``).

    The last line of defence for every span, ours and the instrumentors':
    an exception message may quote SQL parameters, URLs with tokens or
    credentials. Spans without error text pass unchanged, at no cost.
    """
    if by_field(type(span)) and not span._events and not getattr(
            span._status, "_description", None):
        return span  # nothing to scrub, seen without the properties' calls
    status = span.status
    description = status.description
    # An SDK span without events keeps them as an empty list or tuple: no
    # copy of it to look through (a span of another kind: its property).
    events = getattr(span, "_events", True)
    has_exception = bool(events) and any(e.name == "exception" for e in span.events)
    if not has_exception and (not description or
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


def encoded_size(span: ReadableSpan | EncodedSpan) -> int:
    """The bytes ``span`` takes in an export request: exact for a span
    encoded as it ended, else an estimate from its strings (the SDK's path)."""
    if isinstance(span, EncodedSpan):
        return len(span.field)
    size = 96 + len(span.name or "")
    for attributes in (span.attributes, *(e.attributes for e in span.events),
                       *(link.attributes for link in span.links)):
        for key, value in (attributes or {}).items():
            size += 8 + len(key) + (len(value) if isinstance(value, str | bytes)
                                    else 16 if not isinstance(value, Sequence)
                                    else sum(len(str(v)) + 4 for v in value))
    return size


def byte_bounded(spans: Sequence[Any], max_bytes: int) -> list[list[Any]]:
    """``spans`` in order, cut into runs of at most ``max_bytes`` encoded
    bytes each (a span larger than that alone in its run)."""
    runs: list[list[Any]] = []
    run: list[Any] = []
    total = 0
    for span in spans:
        size = encoded_size(span)
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

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.released is not None:
            try:
                self.released(sum(len(span.field) for span in spans
                                  if isinstance(span, EncodedSpan)))
            except Exception:  # noqa: S110 - counting only; never fail an export
                pass
        try:
            # A span encoded as it ended was scrubbed then. Requests bounded
            # in bytes: one client's oversized spans never make a batch the
            # collector refuses (invariant 7).
            runs = byte_bounded([span if type(span) is EncodedSpan else scrub(span)
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
        # dropped there, and counted here.
        take_refused = getattr(self._exporter, "take_refused", None)
        refused = take_refused() if callable(take_refused) else 0
        if refused:
            self._drops.dropped(refused, "the collector refused them as too large",
                                TOO_LARGE)
        if result is SpanExportResult.SUCCESS:
            self._drops.exported(len(spans) - refused, recovered=not refused)
        else:
            self._drops.dropped(len(spans) - refused,
                                "the collector did not accept them")
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """``BatchSpanProcessor`` whose dropped spans are counted in ``drops``.

    ``on_end`` runs on the request thread, inside ``span.end()``, and the SDK
    does not catch there: nothing it does may raise. A full queue is seen
    through the SDK's private queue when its layout is the one known
    (``counts_full_queue``); otherwise the SDK's own "Queue full" lines are
    left to say it.

    Given an exporter with an ``early_encoder`` (zaqar-otel's OTLP ones),
    ``on_end`` scrubs and encodes the span there and queues the encoded
    piece (``encodes_at_end``). The encoding then costs the request that made
    the span, about 35 k instructions a span, instead of the export thread,
    which encoded a batch of 512 in one go while requests waited for the
    GIL at each of their database calls: the export's own latency tail. The
    queue holds a few hundred bytes a span instead of the span's objects.
    """

    def __init__(self, exporter: SpanExporter, drops: DropCounter,
                 max_batch_bytes: int = 1 << 20, max_queue_bytes: int = 8 << 20,
                 **batch_args: int) -> None:
        counting = CountingExporter(exporter, drops, max_batch_bytes)
        super().__init__(counting, **batch_args)  # type: ignore[arg-type] # ints by name
        self.drops = drops
        # Encoded bytes in the queue (spans encoded as they end): bounded by
        # max_queue_bytes besides the SDK's count, so that oversized spans
        # cannot grow memory while the collector does not answer.
        self.max_queue_bytes = max_queue_bytes
        self.queued_bytes = 0
        self._bytes_lock = threading.Lock()
        counting.released = self._released
        if hasattr(os, "register_at_fork"):
            # The SDK empties the queue in a forked child: so do the bytes.
            forget = weakref.WeakMethod(self._forget_bytes)
            os.register_at_fork(after_in_child=lambda: (f := forget()) and f())
        self._max_queue = (batch_args.get("max_queue_size")
                           or sdk_layout.batch_max_queue_size(self) or 0)
        self._queue = sdk_layout.batch_queue(self)
        self.counts_full_queue = self._max_queue > 0 and self._queue is not None
        # What BatchSpanProcessor.on_end comes to, without its steps.
        self._emits = sdk_layout.batch_emit(self) is not None
        encoder = getattr(exporter, "early_encoder", None)
        self._encoder = (encoder if self._emits and isinstance(encoder, SpanEncoder)
                         else None)
        self.encodes_at_end = self._encoder is not None
        if not self.counts_full_queue:
            sdk_layout.fast_path_off("spans dropped from a full queue are "
                                     "logged by the SDK, not counted")
        self._log_failure = patching.FailureLog(
            LOG, "handing a span to the exporter failed; the span is dropped")

    def on_end(self, span: ReadableSpan) -> None:
        try:
            # An SDK-laid-out span (otlp_encoding.by_field) read by field:
            # three property calls less a span.
            context = span._context if by_field(type(span)) else span.context
            if context is None or not context.trace_flags & 1:
                return  # recorded, not sampled: the SDK's processor drops it too
            # The SDK's deque (counts_full_queue): its len() cannot fail.
            if self.counts_full_queue and len(self._queue) >= self._max_queue:  # type: ignore[arg-type]
                # The SDK's emit would drop it: not encoded, not handed over.
                self.drops.dropped(1, "the span queue is full", QUEUE_FULL)
                return
            if self._encoder is not None:
                piece: Any = self._encoder.encoded(scrub(span))  # opaque to the queue
                size = len(piece.field)
                with self._bytes_lock:
                    full = self.queued_bytes + size > self.max_queue_bytes
                    if not full:
                        self.queued_bytes += size
                if full:
                    self.drops.dropped(1, "the span queue is full (bytes)",
                                       QUEUE_FULL)
                    return
                self._batch_processor.emit(piece)
            elif self._emits:
                self._batch_processor.emit(span)
            else:
                super().on_end(span)
        except Exception:
            self._log_failure()
            try:
                self.drops.dropped(1, "the span processor failed",
                                   PROCESSOR_FAILED)
            except Exception:  # noqa: S110 - nothing more can be done here
                pass


    def _released(self, size: int) -> None:
        with self._bytes_lock:
            self.queued_bytes = max(0, self.queued_bytes - size)
            if self._queue is not None and not len(self._queue):
                self.queued_bytes = 0  # no drift: an empty queue holds nothing

    def _forget_bytes(self) -> None:
        self._bytes_lock = threading.Lock()
        self.queued_bytes = 0


class _QuietSdkDrops(logging.Filter):
    def __init__(self, messages: tuple[str, ...]) -> None:
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.messages)


def quiet_sdk_drop_lines(counts_full_queue: bool) -> None:
    """Keep the SDK's per-batch failure lines (and its "Queue full" ones,
    when ``counts_full_queue``) out of the log: ``DropCounter`` says it in
    two lines an outage."""
    quiet = _SDK_DROP_MESSAGES if counts_full_queue else tuple(
        m for m in _SDK_DROP_MESSAGES if m != "Queue full")
    for name, messages in ((*((n, quiet) for n in _SDK_LOGGERS),
                            (_SDK_ATTRIBUTES_LOGGER, _SDK_TRUNCATED))):
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _QuietSdkDrops)]:
            logger.removeFilter(old)
        logger.addFilter(_QuietSdkDrops(messages))
