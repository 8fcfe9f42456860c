"""The one seam between zaqar-otel and the OpenTelemetry SDK's objects.

zaqar-otel's own code (propagation, sampling, the entry, messaging, trace
points, the meaning of its metrics) makes spans through the API and gets
its SDK objects here, from one small interface::

    path = _sdk.choose(settings)          # Path(fast=True, why="...")
    provider, drops = _sdk.tracer_provider(settings, path, resource=...,
                                           sampler=..., id_generator=...)
    exporter = _sdk.metric_exporter(settings.metrics)

Behind it, two paths make the same spans:

* ``stock``: the SDK's own ``TracerProvider``, ``BatchSpanProcessor`` and
  OTLP exporters, with zaqar-otel's redaction and drop counts as a wrapper
  around the exporter (``export.processor.CountingExporter``);
* ``fast``: what exists only to save CPU: a leaner span
  (``fast.recorder``), spans encoded to OTLP as they end
  (``fast.processor``, ``fast.otlp_encoding``) and the SDK's exporters
  sending those bytes (``fast.otlp_http``, ``fast.otlp_grpc``), written
  against the SDK's private layout of the releases it was tested with.

``[opentelemetry] fast_path`` (``OTEL_ZAQAR_FAST_PATH``) chooses: ``off``
is the stock path; ``auto`` the fast one only on a tested SDK release whose
spans, made both ways at start-up, match (``fast.check``). Every read of a
private of the SDK, the API or the instrumentations lives in this folder,
each read in ``layout.py`` with its check and its fallback (the fast
path's, and what zaqar-otel's own code needs: the semantic-convention
modes, the instrumentation-suppression key, a composite propagator's
parts, whether a MeterProvider was set), ``resource.py`` (the
Resource's attributes, replaced in a forked worker) and
``sqlalchemy_hooks.py`` (the SQLAlchemy instrumentation's hooks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from zaqar_otel import settings as settings_module
from zaqar_otel._sdk import fast, layout, stock
from zaqar_otel.export.processor import DropCounter

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Path:
    """The path spans take in this process, and why."""

    fast: bool
    why: str

    def describe(self) -> str:
        """``fast (...)`` or ``stock (...)``: for a log line and ``check``."""
        return f"{'fast' if self.fast else 'stock'} ({self.why})"


def choose(conf: settings_module.Settings) -> Path:
    """The path ``conf.fast_path`` comes to on this SDK."""
    if conf.fast_path == "off":
        return Path(False, f"{conf.fast_path_source} = off"
                    if conf.fast_path_source.startswith("[")
                    else f"{conf.fast_path_source}=off")
    usable, why = fast.check()
    return Path(usable, why)


def tracer_provider(conf: settings_module.Settings, path: Path,
                    **provider_args: Any) -> tuple[TracerProvider, DropCounter | None]:
    """The TracerProvider of ``path`` (``provider_args``: the SDK's, as
    ``resource``, ``sampler``, ``id_generator``, ``span_limits``) with the
    span processor for ``conf``'s exporter, and that processor's drop
    counts (None for ``exporter = none``)."""
    build = fast.tracer_provider if path.fast else stock.tracer_provider
    return build(conf, **provider_args)


def stop_export_threads(provider: TracerProvider, timeout: float = 1.0) -> bool:
    """Stop the export thread of each batch processor of ``provider`` (either
    path's), which starts another in a forked process at its first span
    there. False where one could not be stopped (the SDK's layout differs,
    or it was exporting for longer than ``timeout`` s): it runs on."""
    processors = layout.span_processors(provider)
    if processors is None:
        return False
    stopped = True
    for processor in processors:
        guarded = isinstance(processor, stock.GuardedSpanProcessor)
        batch = processor.processor if guarded else processor
        if isinstance(batch, BatchSpanProcessor):
            stopped = layout.stop_batch_thread(batch, timeout) and stopped
    return stopped


def metric_exporter(conf: settings_module.MetricsSettings) -> MetricExporter | None:
    """The SDK's metric exporter ``conf`` names, or None for ``none``."""
    return stock.metric_exporter(conf)


__all__ = ["Path", "choose", "metric_exporter", "tracer_provider"]
