"""The export side of Zaqar's metrics: an SDK metric exporter on a timer.

Every ``export_interval_millis`` (``[opentelemetry] metrics_export_interval``,
``OTEL_METRIC_EXPORT_INTERVAL``, 60 s), a thread of its own collects the
recorder's cumulative points (and each watched source's: the span export's
counts, ``spans.SpanCounts``) into the SDK's ``MetricsData`` (the process's
Resource, scope ``zaqar_otel``) and hands them to the SDK's exporter for the
``[opentelemetry]`` exporter: OTLP/HTTP (to ``/v1/metrics``), OTLP/gRPC (the
MetricsService) or the console. A request never waits for it. A failed
export is logged once when failing starts and once when it stops; the
points are not lost (cumulative: the next export carries them). A worker
forked after set-up starts its own thread when it first records::

    pipeline = Pipeline(recorder, _sdk.metric_exporter(settings.metrics),
                        resource, 60000)
    pipeline.start()
    ...
    pipeline.shutdown(timeout=5.0)         # a last export, bounded
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import zaqar_otel
from zaqar_otel import redact
from zaqar_otel._sdk import layout
from zaqar_otel.metrics.recorder import Recorder

LOG = logging.getLogger(__name__)

SCOPE = InstrumentationScope("zaqar_otel", zaqar_otel.__version__)


class Source(Protocol):
    """Metrics read at each export besides the recorder's (``spans.SpanCounts``)."""

    def collect(self, now_ns: int) -> list[Metric]: ...


class _Outage:
    """One line when exports start failing, one when they work again."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.failing = False
        self.failures = 0

    def result(self, ok: bool, why: str = "") -> None:
        if ok and self.failing:
            LOG.warning("zaqar-otel: exporting metrics to %s works again after "
                        "%d failed exports", self.destination, self.failures)
            self.failing, self.failures = False, 0
        elif not ok:
            if not self.failing:
                LOG.warning("zaqar-otel: exporting metrics to %s failed (%s); "
                            "they are kept and sent with the next export; one "
                            "line follows when it works again",
                            self.destination, why)
            self.failing = True
            self.failures += 1


class Pipeline:
    """Exports ``recorder``'s metrics every ``interval_millis`` on a thread."""

    def __init__(self, recorder: Recorder, metric_exporter: MetricExporter | None,
                 resource: Resource, interval_millis: int) -> None:
        self.recorder = recorder
        self.exporter = metric_exporter
        self.resource = resource
        self.interval = interval_millis / 1000
        destination = (layout.exporter_endpoint(metric_exporter)
                       if metric_exporter is not None else None)
        self._outage = _Outage(redact.userinfo(
            destination or type(metric_exporter).__name__))
        self._export_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shut = False
        self._sources: list[Source] = []
        recorder.after_fork(self._restart)

    def watch(self, source: Source) -> None:
        """Export ``source``'s metrics too, at every export."""
        self._sources.append(source)

    def start(self) -> None:
        if self.exporter is None or self._shut:
            return  # exporter = none: measured, never sent
        self._thread = threading.Thread(target=self._run, args=(self._stop,),
                                        name="zaqar-otel-metrics", daemon=True)
        self._thread.start()

    def stop_thread(self, timeout: float = 1.0) -> bool:
        """Stop the timer's thread, not the pipeline: a forked worker starts
        its own at its first request (``Recorder.after_fork``); here
        ``export`` and ``shutdown`` still export. False if an export under
        way outlasted ``timeout`` s (the thread ends after it)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._stop.set()
        thread.join(timeout)
        self._stop = threading.Event()
        return not thread.is_alive()

    def _restart(self) -> None:
        # In a forked worker: the parent's thread did not come along.
        self._stop = threading.Event()
        self._export_lock = threading.Lock()
        self.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.export()

    def collect(self) -> MetricsData | None:
        """What the next export sends (None when nothing was measured)."""
        now = time.time_ns()
        metrics = self.recorder.collect(now)
        for source in self._sources:
            metrics.extend(source.collect(now))
        if not metrics:
            return None
        return MetricsData([ResourceMetrics(
            self.resource, [ScopeMetrics(SCOPE, metrics, "")], "")])

    def export(self) -> bool:
        """Collect and export now; True if the exporter accepted it."""
        if self.exporter is None:
            return True
        with self._export_lock:
            data = self.collect()
            if data is None:
                return True
            try:
                ok = self.exporter.export(data) is MetricExportResult.SUCCESS
                why = "the collector did not accept them"
            except Exception as exc:
                ok, why = False, f"export raised {type(exc).__name__}"
            self._outage.result(ok, why)
            return ok

    def shutdown(self, timeout: float) -> bool:
        """Stop the timer, export what is left, close; within ``timeout`` s."""
        if self._shut:
            return True
        self._shut = True
        self._stop.set()
        if self.exporter is None:
            return True

        def last() -> None:
            self.export()
            assert self.exporter is not None
            self.exporter.shutdown()

        # The exporter's own timeout and retries may outlast ours: run aside.
        worker = threading.Thread(target=last, name="zaqar-otel-metrics-shutdown",
                                  daemon=True)
        worker.start()
        worker.join(timeout)
        return not worker.is_alive()
