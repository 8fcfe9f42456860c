"""The SDK's objects set-up builds, and their flush at exit.

``provider`` builds the TracerProvider (Resource, the parent-based
``sampling.request_sampler``, OSProfiler's ids, the span limits, the span
processor and exporter); ``start_metrics`` starts Zaqar's metrics
(``zaqar_otel.metrics``) on the spans' Resource; ``flush`` flushes and
stops both within ``shutdown_timeout``.
"""

from __future__ import annotations

import logging
import threading
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider

from zaqar_otel import _sdk, metrics, sampling, settings, tracepoints
from zaqar_otel._sdk import resource
from zaqar_otel.export import processor
from zaqar_otel.hook.state import Running
from zaqar_otel.metrics.spans import SpanCounts

LOG = logging.getLogger(__name__)


def provider(conf: settings.Settings
             ) -> tuple[TracerProvider, processor.DropCounter | None]:
    # The fast path or the SDK's own ([opentelemetry] fast_path), behind
    # one seam: the same spans either way.
    path = _sdk.choose(conf)
    LOG.info("zaqar-otel: spans take the %s path", path.describe())
    return _sdk.tracer_provider(
        conf, path,
        resource=resource.for_process(conf.service_name),
        sampler=sampling.request_sampler(conf.sample_ratio),
        id_generator=tracepoints.OSProfilerIdGenerator(),
        # Every limit given (zaqar.conf, then OTEL_*, checked by settings):
        # SpanLimits then reads no variable, and fails on none.
        span_limits=SpanLimits(**conf.span_limits))


def start_metrics(state: Running) -> None:
    conf = state.settings
    if conf.metrics is None:
        if conf.metrics_problem:
            LOG.error("zaqar-otel: metrics are off: %s", conf.metrics_off_because)
        else:
            LOG.info("zaqar-otel: metrics are off (%s)", conf.metrics_off_because)
        return
    # The spans' Resource (the operator's provider's, under
    # opentelemetry-instrument), so metrics and traces name one process.
    found = getattr(state.provider, "resource", None)
    state.metrics = metrics.start(
        conf.metrics, found if isinstance(found, Resource)
        else resource.for_process(conf.service_name), state.conventions)
    if state.drops is not None:
        # Spans dropped and exported, beside Zaqar's metrics: an operator
        # alerts on zaqar_otel.spans.dropped (invariant 7).
        state.metrics.pipeline.watch(SpanCounts(state.drops))
    LOG.info("zaqar-otel: metrics on, exporter %s every %g s",
             conf.metrics.exporter, conf.metrics.export_interval_millis / 1000)


def flush(state: Running | None, timeout: float | None) -> bool:
    if state is None:
        return True
    limit = state.settings.shutdown_timeout if timeout is None else timeout
    started = time.monotonic()
    measured = state.metrics
    if measured is not None and not measured.pipeline.shutdown(limit):
        LOG.warning("zaqar-otel: the last metrics export did not end within "
                    "shutdown_timeout (%.1f s)", limit)
    if not state.owns_provider or state.provider is None:
        return True
    closing, state.provider = state.provider, None
    limit = max(0.0, limit - (time.monotonic() - started))
    # The SDK's shutdown waits for the exporter's own timeout and retries;
    # run it aside and stop waiting at our limit.
    worker = threading.Thread(target=closing.shutdown,
                              name="zaqar-otel-shutdown",
                              daemon=True)
    try:
        worker.start()
    except RuntimeError:
        # Python 3.12.0-3.12.2 start no thread from atexit (CPython
        # gh-113964): flush on this thread, within the same limit.
        if closing.force_flush(int(limit * 1000)):
            return True
        LOG.warning("zaqar-otel: spans not exported within shutdown_timeout "
                    "(%.1f s) were dropped", limit)
        return False
    worker.join(limit)
    if worker.is_alive():
        LOG.warning("zaqar-otel: spans not exported within shutdown_timeout "
                    "(%.1f s) were dropped", limit)
        return False
    return True
