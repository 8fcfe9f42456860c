"""The fast path's batch processor: each span scrubbed and encoded as it ends.

``CountingBatchSpanProcessor`` is the SDK's ``BatchSpanProcessor`` with
zaqar-otel's ``CountingExporter`` around its exporter, and an ``on_end`` of
its own: a span is checked against the queue's length (the SDK's private
deque, ``layout.batch_queue``: a drop it would make is counted), scrubbed,
encoded by the exporter's ``early_encoder`` and handed to the SDK's batch
processor (``layout.batch_emit``) as an ``EncodedSpan``. Where the SDK is
laid out otherwise, the SDK's own ``on_end``::

    processor = CountingBatchSpanProcessor(exporter, DropCounter(where))
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from zaqar_otel import patching
from zaqar_otel._sdk import layout
from zaqar_otel._sdk.fast.otlp_encoding import SpanEncoder, by_field
from zaqar_otel.export import processor as export
from zaqar_otel.export.processor import (
    PROCESSOR_FAILED,
    QUEUE_FULL,
    CountingExporter,
    DropCounter,
)

LOG = logging.getLogger(__name__)


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
    the span, about 29 k instructions a span of the bench's request, instead
    of the export thread, which encoded a batch of 512 in one go while
    requests waited for the GIL at each of their database calls: the
    export's own latency tail. The queue holds a few hundred bytes a span
    instead of the span's objects.
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
                           or layout.batch_max_queue_size(self) or 0)
        self._queue = layout.batch_queue(self)
        self.counts_full_queue = self._max_queue > 0 and self._queue is not None
        # What BatchSpanProcessor.on_end comes to, without its steps.
        self._emits = layout.batch_emit(self) is not None
        encoder = getattr(exporter, "early_encoder", None)
        self._encoder = (encoder if self._emits and isinstance(encoder, SpanEncoder)
                         else None)
        self.encodes_at_end = self._encoder is not None
        if not self.counts_full_queue:
            layout.fast_path_off("spans dropped from a full queue are "
                                     "logged by the SDK, not counted")
        self._log_failure = patching.FailureLog(
            LOG, "handing a span to the exporter failed; the span is dropped")

    def on_end(self, span: ReadableSpan) -> None:
        try:
            # An SDK-laid-out span (otlp_encoding.by_field) read by field:
            # three property calls less a span.
            fields = by_field(type(span))
            context = span._context if fields else span.context
            if context is None:
                return
            # By field: trace_flags is the SpanContext tuple's fourth item.
            if not (context[3] if fields else context.trace_flags) & 1:
                return  # recorded, not sampled: the SDK's processor drops it too
            # The SDK's deque (counts_full_queue): its len() cannot fail.
            if self.counts_full_queue and len(self._queue) >= self._max_queue:  # type: ignore[arg-type]
                # The SDK's emit would drop it: not encoded, not handed over.
                self.drops.dropped(1, "the span queue is full", QUEUE_FULL)
                return
            encoder = self._encoder
            if encoder is not None:
                piece: Any  # opaque to the queue
                events = span._events if fields else None  # type: ignore[attr-defined]
                if fields and not getattr(span._status, "_description", None) and (  # type: ignore[attr-defined]
                        not events or not export.has_exception(events)):
                    piece = encoder.encoded_by_field(span)  # nothing to scrub
                else:
                    piece = encoder.encoded(export.scrub(span))
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
