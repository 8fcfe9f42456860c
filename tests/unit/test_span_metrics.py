"""Spans dropped and exported, by why, as the metrics pipeline exports them
(``zaqar_otel.metrics.spans``): read back through the SDK's OTLP encoder and
the demo receiver's decoder, as a collector sees them."""

from __future__ import annotations

import os

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tests.unit.test_export import Collector, _spans
from zaqar_otel._sdk.fast.processor import CountingBatchSpanProcessor
from zaqar_otel.demo.receiver import ReceivedPoint, decode_metrics_request
from zaqar_otel.export import processor
from zaqar_otel.export.processor import DropCounter
from zaqar_otel.metrics import spans as span_metrics
from zaqar_otel.metrics.cardinality import Destinations
from zaqar_otel.metrics.pipeline import Pipeline
from zaqar_otel.metrics.recorder import Recorder


def on_the_wire(drops: DropCounter) -> list[ReceivedPoint]:
    flow = Pipeline(Recorder(Destinations()), None, Resource({"service.name": "z"}),
                    1000)
    flow.watch(span_metrics.SpanCounts(drops))
    data = flow.collect()  # nothing recorded: the span counts alone
    assert data is not None
    return decode_metrics_request(encode_metrics(data).SerializeToString())


def by_type(points: list[ReceivedPoint]) -> dict[str, int]:
    return {p.attributes["error.type"]: int(p.value) for p in points
            if p.metric == span_metrics.DROPPED}


def test_every_error_type_has_a_series_at_zero_from_the_start() -> None:
    points = on_the_wire(DropCounter("test"))
    assert by_type(points) == dict.fromkeys(processor.DROP_TYPES, 0)
    (exported,) = [p for p in points if p.metric == span_metrics.EXPORTED]
    assert exported.value == 0
    for p in points:
        assert p.kind == "sum" and p.monotonic and p.cumulative
        assert p.unit == "{span}" and p.scope == "zaqar_otel"


def test_drops_are_counted_by_why_and_exports_by_span() -> None:
    collector = Collector()
    collector.accept = True
    collector.release.clear()  # the exporter hangs: the queue fills up
    drops = DropCounter("test")
    batch = CountingBatchSpanProcessor(collector, drops, max_queue_size=4,
                                       max_export_batch_size=1,
                                       schedule_delay_millis=1)
    provider = TracerProvider()
    provider.add_span_processor(batch)
    _spans(provider, 1)  # taken by the worker, which then hangs
    assert collector.exporting.wait(5)
    _spans(provider, 10)  # 4 fit in the queue
    collector.release.set()
    batch.force_flush()
    collector.accept = False  # and now the collector refuses
    _spans(provider, 3)
    batch.force_flush()
    points = on_the_wire(drops)
    assert by_type(points) == {"queue_full": 6, "export_failed": 3, "too_large": 0,
                               "processor_failed": 0}
    (exported,) = [p for p in points if p.metric == span_metrics.EXPORTED]
    assert exported.value == 5  # the one that hung, then the 4 queued
    assert drops.total == 9
    provider.shutdown()


def test_a_forked_worker_counts_from_zero() -> None:
    drops = DropCounter("test")
    drops.dropped(3, "the span queue is full", processor.QUEUE_FULL)
    drops.exported(2)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: what it would export
        exported, dropped, _ = drops.counts()
        os.write(write, f"{exported} {sum(dropped.values())}".encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"0 0"
    os.close(read)
    assert drops.counts()[:2] == (2, {**dict.fromkeys(processor.DROP_TYPES, 0),
                                      "queue_full": 3})
