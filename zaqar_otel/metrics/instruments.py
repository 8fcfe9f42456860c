"""The aggregators behind Zaqar's metrics: cheap to record, read at export.

The SDK's instruments cost about 10 µs a measurement on SDK 1.45 (each call
validates and hashes its attribute dict, builds a ``Measurement`` and walks
the views), which for the three to five measurements of a Zaqar request
would be 1-3 % of an untraced request's instructions. Here a measurement is
a dict look-up by a tuple the caller already has, a ``bisect`` and a few
additions under a lock (about 1 µs); the attribute dict of a series is made
once, when the series is first seen, by the instrument's ``attributes_of``.

What they export is what the SDK's explicit-bucket histogram and monotonic
sum export (cumulative temporality), as the SDK's own point types, so the
SDK's OTLP exporters encode them::

    duration = Histogram("http.server.request.duration", "s", "...",
                         HTTP_BOUNDARIES, lambda key: {"http.request.method": key[0]})
    duration.record(("GET",), 0.012, span_context)   # exemplar when sampled
    metric = duration.collect(time.time_ns())        # an SDK Metric, or None
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import (
    Histogram as HistogramData,
)
from opentelemetry.trace import SpanContext

#: The semantic conventions' boundaries for HTTP and messaging durations (s).
DURATION_BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
                       1.0, 2.5, 5.0, 7.5, 10.0)
#: The old HTTP conventions' boundaries for ``http.server.duration`` (ms),
#: the wsgi instrumentation's.
OLD_HTTP_BOUNDARIES = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0,
                       750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0)
#: A message's wait before delivery: Zaqar counts ages in whole seconds
#: (``age`` of its answers), so 0 is "within the second", then up to its
#: longest message TTL (14 days).
WAIT_BOUNDARIES = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                   1800.0, 3600.0, 7200.0, 21600.0, 86400.0, 259200.0, 604800.0,
                   1209600.0)

#: ``OTEL_METRICS_EXEMPLAR_FILTER`` values.
TRACE_BASED, ALWAYS_ON, ALWAYS_OFF = "trace_based", "always_on", "always_off"

AttributesOf = Callable[[Any], dict[str, Any]]


class _Series:
    """One histogram series: bucket counts, sum, min, max, exemplars."""

    __slots__ = ("attributes", "counts", "count", "sum", "min", "max",
                 "exemplars", "start")

    def __init__(self, attributes: dict[str, Any], buckets: int) -> None:
        self.attributes = attributes
        self.counts = [0] * buckets
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        # Per bucket, the last sampled measurement that fell in it, as the
        # SDK's AlignedHistogramBucketExemplarReservoir keeps one; made at
        # the first one (most series of an untraced workload have none).
        self.exemplars: list[Exemplar | None] | None = None
        self.start = time.time_ns()


class Histogram:
    """An explicit-bucket histogram, one series per key.

    :param attributes_of: the attributes of a key's series, called once per
        new key (the key must already be bounded: see ``cardinality``).
    :param exemplar_filter: ``trace_based`` keeps exemplars of measurements
        given a sampled ``span_context``; ``always_on`` of every one;
        ``always_off`` none.
    """

    def __init__(self, name: str, unit: str, description: str,
                 boundaries: Sequence[float], attributes_of: AttributesOf,
                 exemplar_filter: str = TRACE_BASED) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.boundaries = tuple(boundaries)
        self._attributes_of = attributes_of
        self._series: dict[Hashable, _Series] = {}
        self._lock = threading.Lock()
        self._exemplars = exemplar_filter != ALWAYS_OFF
        self._always = exemplar_filter == ALWAYS_ON

    def record(self, key: Hashable, value: float,
               span_context: SpanContext | None = None) -> None:
        """One measurement; ``span_context`` is the sampled span it belongs to."""
        series = self._series.get(key)
        if series is None:
            series = self._new(key)
        # Buckets are (b[i-1], b[i]]: bisect_left puts a value equal to a
        # boundary in the bucket that ends there, as OTLP defines them.
        bucket = bisect_left(self.boundaries, value)
        exemplar = None
        if self._exemplars and (span_context is not None or self._always):
            exemplar = Exemplar(
                {}, value, time.time_ns(),
                span_context.span_id if span_context is not None else None,
                span_context.trace_id if span_context is not None else None)
        with self._lock:
            series.counts[bucket] += 1
            series.count += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value
            if exemplar is not None:
                if series.exemplars is None:
                    series.exemplars = [None] * len(series.counts)
                series.exemplars[bucket] = exemplar

    def record_many(self, key: Hashable, values: Sequence[float],
                    span_context: SpanContext | None = None) -> None:
        """Several measurements of one series (the ages of a claim's messages)."""
        if span_context is not None or self._always:
            for value in values:
                self.record(key, value, span_context)
            return
        series = self._series.get(key)
        if series is None:
            series = self._new(key)
        if not values:
            return
        boundaries, counts = self.boundaries, series.counts
        low, high = min(values), max(values)
        with self._lock:  # one lock for the lot: no exemplar to make
            for value in values:
                counts[bisect_left(boundaries, value)] += 1
            series.count += len(values)
            series.sum += sum(values)
            series.min = min(series.min, low)
            series.max = max(series.max, high)

    def _new(self, key: Hashable) -> _Series:
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = _Series(self._attributes_of(key), len(self.boundaries) + 1)
                self._series[key] = series
            return series

    def reset(self) -> None:
        """Forget every series: a forked worker starts from zero.

        A new lock, not the old one taken: another thread of the parent may
        have held it at the fork, and no thread of the child would release it.
        """
        self._lock = threading.Lock()
        self._series = {}

    def collect(self, now_ns: int) -> Metric | None:
        """The cumulative points so far, as an SDK ``Metric`` (None if empty).

        Exemplars are those of this export interval: taken, then cleared.
        """
        with self._lock:
            points = []
            for series in self._series.values():
                if not series.count:
                    continue
                points.append(HistogramDataPoint(
                    attributes=series.attributes,
                    start_time_unix_nano=series.start, time_unix_nano=now_ns,
                    count=series.count, sum=series.sum,
                    bucket_counts=tuple(series.counts),
                    explicit_bounds=self.boundaries,
                    min=series.min, max=series.max,
                    exemplars=[e for e in series.exemplars or () if e is not None]))
                series.exemplars = None
        if not points:
            return None
        return Metric(self.name, self.description, self.unit, HistogramData(
            data_points=points,
            aggregation_temporality=AggregationTemporality.CUMULATIVE))

    def series_count(self) -> int:
        return len(self._series)


class Counter:
    """A monotonic sum, one series per key (see ``Histogram``)."""

    def __init__(self, name: str, unit: str, description: str,
                 attributes_of: AttributesOf) -> None:
        self.name, self.unit, self.description = name, unit, description
        self._attributes_of = attributes_of
        self._sums: dict[Hashable, list[Any]] = {}  # key -> [value, attributes, start]
        self._lock = threading.Lock()

    def add(self, key: Hashable, amount: int) -> None:
        with self._lock:
            entry = self._sums.get(key)
            if entry is None:
                self._sums[key] = [amount, None, time.time_ns()]
            else:
                entry[0] += amount

    def reset(self) -> None:
        """See ``Histogram.reset``."""
        self._lock = threading.Lock()
        self._sums = {}

    def collect(self, now_ns: int) -> Metric | None:
        with self._lock:
            entries = list(self._sums.items())
        points = []
        for key, entry in entries:
            if entry[1] is None:  # made on the export thread, not the request's
                entry[1] = self._attributes_of(key)
            points.append(NumberDataPoint(
                attributes=entry[1], start_time_unix_nano=entry[2],
                time_unix_nano=now_ns, value=entry[0]))
        if not points:
            return None
        return Metric(self.name, self.description, self.unit, Sum(
            data_points=points,
            aggregation_temporality=AggregationTemporality.CUMULATIVE,
            is_monotonic=True))

    def series_count(self) -> int:
        return len(self._sums)
