"""The span export's own health, beside Zaqar's metrics: spans dropped, by why.

A span the processor could not hand to the collector is gone; the export's
log says so twice per outage, and this says how many, as counters an
operator alerts on (invariant 7: a drop is never silent)::

    zaqar_otel.spans.dropped    counter, {span}: error.type = queue_full
        (the span queue was full, in spans or in bytes: the export is
        slower than the requests make spans), export_failed (the collector
        refused the batch, or did not answer in time), too_large (refused
        alone as too large), processor_failed (could not be encoded)
    zaqar_otel.spans.exported   counter, {span}: accepted by the collector

Every error type has its series from the start, at 0, so that a rule on
``increase(zaqar_otel_spans_dropped_total[5m]) > 0`` also sees the first
drop. Counted by ``export.processor.DropCounter`` off the request path
(a request that drops a span adds one to a dict under a lock); read here on
the metrics thread::

    pipeline.watch(SpanCounts(span_processor.drops))
"""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    NumberDataPoint,
    Sum,
)

from zaqar_otel.export.processor import DropCounter

DROPPED = "zaqar_otel.spans.dropped"
EXPORTED = "zaqar_otel.spans.exported"
UNIT = "{span}"


class SpanCounts:
    """The two counters of one ``DropCounter``, as the SDK's points."""

    def __init__(self, drops: DropCounter) -> None:
        self.drops = drops

    def collect(self, now_ns: int) -> list[Metric]:
        exported, by_type, since = self.drops.counts()

        def point(value: int, attributes: dict[str, str]) -> NumberDataPoint:
            return NumberDataPoint(attributes=attributes, start_time_unix_nano=since,
                                   time_unix_nano=now_ns, value=value)

        def counter(name: str, description: str,
                    points: list[NumberDataPoint]) -> Metric:
            return Metric(name, description, UNIT, Sum(
                data_points=points,
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
                is_monotonic=True))

        return [
            counter(DROPPED, "Spans dropped before reaching the collector, by why",
                    [point(n, {"error.type": why}) for why, n in by_type.items()]),
            counter(EXPORTED, "Spans the collector accepted", [point(exported, {})]),
        ]
