"""The stock path: the SDK's own objects, public API only.

The SDK's ``TracerProvider`` and ``BatchSpanProcessor``, and its OTLP
exporters wrapped in ``export.processor.CountingExporter`` (error texts
redacted, requests bounded in bytes, exported and dropped spans counted);
the processor guarded so that its failures never reach a request
(``GuardedSpanProcessor``).
What the SDK logs about a full queue is left to it (only the fast path's
processor counts those). Also the exporters both paths share: the metric
exporter, and the arguments zaqar.conf's options come to for the SDK's
exporters::

    provider, drops = tracer_provider(settings, resource=..., sampler=...)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
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
from zaqar_otel.export.processor import (
    PROCESSOR_FAILED,
    CountingExporter,
    DropCounter,
    quiet_sdk_drop_lines,
)

LOG = logging.getLogger(__name__)


class GuardedSpanProcessor(SpanProcessor):
    """A span processor whose failures never reach the request: ``on_start``
    and ``on_end`` run on the request thread, inside ``start_span`` and
    ``span.end()``, where the SDK does not catch. A failure is logged once
    and the span counted as dropped (invariant 6)."""

    def __init__(self, processor: SpanProcessor, drops: DropCounter) -> None:
        self.processor = processor
        self.drops = drops
        self._log_failure = patching.FailureLog(
            LOG, "handing a span to the exporter failed; the span is dropped")

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            self.processor.on_start(span, parent_context=parent_context)
        except Exception:
            self._log_failure()

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self.processor.on_end(span)
        except Exception:
            self._log_failure()
            try:
                self.drops.dropped(1, "the span processor failed", PROCESSOR_FAILED)
            except Exception:  # noqa: S110 - nothing more can be done here
                pass

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
    provider.add_span_processor(GuardedSpanProcessor(BatchSpanProcessor(
        CountingExporter(exporter, drops, conf.max_export_batch_bytes),
        **conf.batch_args), drops))  # type: ignore[arg-type] # ints by name
    quiet_sdk_drop_lines(counts_full_queue=False)
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
