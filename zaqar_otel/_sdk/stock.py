"""The stock path: the SDK's own objects, public API only.

The SDK's ``TracerProvider`` and ``BatchSpanProcessor``, and its OTLP
exporters wrapped in ``export.processor.CountingExporter`` (error texts
redacted, requests bounded in bytes, exported and dropped spans counted);
the processor guarded so that its failures never reach a request, and its
queue bounded in bytes as well as spans (``GuardedSpanProcessor``, through
the processor's and the exporter's public calls only). Also the exporters
both paths share: the metric exporter, and the arguments zaqar.conf's
options come to for the SDK's exporters::

    provider, drops = tracer_provider(settings, resource=..., sampler=...)
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from zaqar_otel import patching, redact
from zaqar_otel import settings as settings_module
from zaqar_otel._sdk import loggers
from zaqar_otel.export.processor import (
    PROCESSOR_FAILED,
    QUEUE_FULL,
    CountingExporter,
    DropCounter,
    encoded_size,
)

LOG = logging.getLogger(__name__)

#: The SDK BatchSpanProcessor's default queue length (OTEL_BSP_MAX_QUEUE_SIZE).
_SDK_MAX_QUEUE_SIZE = 2048


class GuardedSpanProcessor(SpanProcessor):
    """A span processor whose failures never reach the request: ``on_start``
    and ``on_end`` run on the request thread, inside ``start_span`` and
    ``span.end()``, where the SDK does not catch. A failure is logged once
    and the span counted as dropped (invariant 6).

    Given ``max_queue_bytes`` (and the ``max_queue_size`` the batch
    processor was given), the spans handed to a batch processor and not yet
    taken by its exporter (``counting``'s ``taken`` calls) are bounded in
    bytes (``encoded_size``, an estimate of the span's) as well as spans: a
    span beyond either is dropped here and counted, so the SDK's own queue,
    which holds no more than was handed over, is never full and the memory
    it holds stays within the bound against a collector that never
    answers."""

    def __init__(self, processor: SpanProcessor, drops: DropCounter,
                 counting: CountingExporter | None = None,
                 max_queue_size: int = 0, max_queue_bytes: int = 0) -> None:
        self.processor = processor
        self.drops = drops
        self._log_failure = patching.FailureLog(
            LOG, "handing a span to the exporter failed; the span is dropped")
        self.max_queue_size = max_queue_size if counting is not None else 0
        self.max_queue_bytes = max_queue_bytes
        self.queued = 0
        self.queued_bytes = 0
        # Each queued span's estimate, by id (a span in the queue is alive):
        # estimated once, on the request thread, not again when taken.
        self._sizes: dict[int, int] = {}
        self._lock = threading.Lock()
        if self.max_queue_size:
            counting.taken = self._taken  # type: ignore[union-attr]
            if hasattr(os, "register_at_fork"):
                # The SDK empties its queue in a forked child: so do the counts.
                forget = weakref.WeakMethod(self._forget)
                os.register_at_fork(after_in_child=lambda: (f := forget()) and f())

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            self.processor.on_start(span, parent_context=parent_context)
        except Exception:
            self._log_failure()

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if self.max_queue_size and not self._admit(span):
                return
            self.processor.on_end(span)
        except Exception:
            self._log_failure()
            try:
                self.drops.dropped(1, "the span processor failed", PROCESSOR_FAILED)
            except Exception:  # noqa: S110 - nothing more can be done here
                pass

    def _admit(self, span: ReadableSpan) -> bool:
        """Whether ``span`` fits the bounds (counted then); a span the batch
        processor drops itself (not sampled) is not counted."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return True
        size = encoded_size(span)
        with self._lock:
            full = ("" if self.queued < self.max_queue_size else "full")
            if not full and self.max_queue_bytes and (
                    self.queued_bytes + size > self.max_queue_bytes):
                full = "full (bytes)"
            if not full:
                self.queued += 1
                self.queued_bytes += size
                self._sizes[id(span)] = size
        if full:
            self.drops.dropped(1, f"the span queue is {full}", QUEUE_FULL)
            return False
        return True

    def _taken(self, spans: Sequence[ReadableSpan]) -> None:
        """``spans`` left the queue: the exporter has them."""
        with self._lock:
            sizes = self._sizes
            size = sum(sizes.pop(id(span), 0) for span in spans)
            self.queued = max(0, self.queued - len(spans))
            self.queued_bytes = max(0, self.queued_bytes - size)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self.queued = self.queued_bytes = 0
        self._sizes = {}

    def shutdown(self) -> None:
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis)


def otlp_args(exporter: str, args: Mapping[str, object]) -> dict[str, Any]:
    """The SDK OTLP exporter's keyword arguments for ``args`` (settings'
    ``exporter_args``): compression as its type, a certificate file as
    gRPC's channel credentials."""
    made: dict[str, Any] = dict(args)
    if exporter == "otlp_http" and "compression" in made:
        from opentelemetry.exporter.otlp.proto.http import Compression

        made["compression"] = Compression(made["compression"])
    elif exporter == "otlp_grpc":
        import grpc

        if "compression" in made:
            made["compression"] = {"gzip": grpc.Compression.Gzip}.get(
                str(made["compression"]), grpc.Compression.NoCompression)
        if "certificate_file" in made:
            # The gRPC exporter takes channel credentials, not a file name
            # (given one, it raised TypeError and tracing did not start).
            pem = Path(str(made.pop("certificate_file"))).read_bytes()
            made["credentials"] = grpc.ssl_channel_credentials(pem)
    return made


def sdk_span_exporter_classes() -> tuple[Callable[..., SpanExporter],
                                         Callable[..., SpanExporter]]:
    """The SDK's OTLP/HTTP and OTLP/gRPC span exporters."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter, GrpcExporter


def span_exporter(conf: settings_module.Settings,
                  classes: Callable[[], tuple[Callable[..., SpanExporter],
                                              Callable[..., SpanExporter]]]
                  = sdk_span_exporter_classes) -> SpanExporter | None:
    """The exporter ``[opentelemetry] exporter`` names (OTLP: one of
    ``classes()``, HTTP's and gRPC's), or None for ``none``."""
    if conf.exporter in ("otlp_http", "otlp_grpc"):
        http, grpc = classes()
        made = http if conf.exporter == "otlp_http" else grpc
        return made(**otlp_args(conf.exporter, conf.exporter_args))
    if conf.exporter == "console":
        return ConsoleSpanExporter()
    return None


def destination(conf: settings_module.Settings) -> str:
    """Where spans go, for log lines: the endpoint as the SDK's exporters
    resolve it (its user:password masked), or the exporter's name."""
    if conf.exporter in ("otlp_http", "otlp_grpc"):
        return redact.userinfo(settings_module.endpoint(conf).url)
    return conf.exporter


def tracer_provider(conf: settings_module.Settings, **provider_args: Any
                    ) -> tuple[TracerProvider, DropCounter | None]:
    """The SDK's TracerProvider and BatchSpanProcessor, exporting through
    ``CountingExporter``; the counts (None for ``exporter = none``)."""
    # shutdown_on_exit=False: the SDK's own atexit hook waits for the
    # exporter's full timeout when the collector is down; ours is bounded.
    provider = TracerProvider(shutdown_on_exit=False, **provider_args)
    exporter = span_exporter(conf)
    if exporter is None:
        return provider, None
    drops = DropCounter(destination(conf))
    counting = CountingExporter(exporter, drops, conf.max_export_batch_bytes)
    # The queue's length given, so that the guard's bound is the SDK's.
    batch_args = {"max_queue_size": _SDK_MAX_QUEUE_SIZE, **conf.batch_args}
    provider.add_span_processor(GuardedSpanProcessor(
        BatchSpanProcessor(counting, **batch_args),  # type: ignore[arg-type] # ints
        drops, counting, max_queue_size=batch_args["max_queue_size"],
        max_queue_bytes=conf.max_queue_bytes))
    loggers.quiet_drop_lines(counts_full_queue=True)  # the guard counts them
    return provider, drops


def metric_exporter(conf: settings_module.MetricsSettings) -> MetricExporter | None:
    """The SDK's metric exporter ``conf`` names, or None for ``none``."""
    if conf.exporter == "otlp_http":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )

        return OTLPMetricExporter(  # type: ignore[call-overload, no-any-return]
            **otlp_args(conf.exporter, conf.exporter_args))
    if conf.exporter == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        return GrpcExporter(**otlp_args(conf.exporter, conf.exporter_args))
    if conf.exporter == "console":
        return ConsoleMetricExporter()
    return None
