"""Invariant 7: no span is dropped silently. A real ``zaqar-otel-server``
exports its spans to a collector that accepts, then refuses (503), then
hangs, with a small span queue; its metrics go to a healthy receiver. Every
span the requests made is either exported or counted in
``zaqar_otel.spans.dropped``, by why, as the metric says over the wire.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from harness.tracing import ALL_TRACING, KEY, OTEL_SERVER
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.metrics import spans as span_metrics
from zaqar_otel.propagation import codec

pytestmark = pytest.mark.functional

STATS = "/v2/queues/drops/stats"


@pytest.fixture
def metrics_receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as rx:
        yield rx


def signed() -> tuple[dict[str, str], int]:
    base_id = str(uuid.uuid4())
    return codec.encode(base_id, base_id, KEY), uuid.UUID(base_id).int


def counts(rx: OTLPReceiver) -> tuple[int, dict[str, int]]:
    """(exported, dropped by error.type): the newest points exported."""
    exported = sum(int(p.value) for p in rx.latest(span_metrics.EXPORTED))
    dropped = {p.attributes["error.type"]: int(p.value)
               for p in rx.latest(span_metrics.DROPPED)}
    return exported, dropped


def wait_for_counts(rx: OTLPReceiver, accounted: int,
                    timeout: float = 60.0) -> tuple[int, dict[str, int]]:
    """Until exported + dropped reach ``accounted`` spans; the counts then."""
    deadline = time.monotonic() + timeout
    while True:
        exported, dropped = counts(rx)
        if exported + sum(dropped.values()) >= accounted:
            return exported, dropped
        assert time.monotonic() < deadline, (
            f"{exported} exported + {dropped} dropped: not the {accounted} "
            "spans made")
        time.sleep(0.2)


def test_every_span_is_exported_or_counted_as_dropped(
    redis: RedisServer, receiver: OTLPReceiver, metrics_receiver: OTLPReceiver,
) -> None:
    extra = {
        "profiler": dict(ALL_TRACING),
        "opentelemetry": {
            "schedule_delay": "50", "timeout": "1", "shutdown_timeout": "1",
            "max_queue_size": "16", "max_export_batch_size": "8",
            "metrics": "true", "metrics_export_interval": "200",
            # A full queue's drops are counted by the fast path's processor
            # (the SDK's own logs them): whatever OTEL_ZAQAR_FAST_PATH says.
            "fast_path": "auto",
        },
    }
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.traces_url,
           "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": metrics_receiver.metrics_url}
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                     env=env) as server:
        assert server.request("PUT", "/v2/queues/drops")[0] == 201
        # The series are there before any drop, at 0.
        metrics_receiver.wait_for_points(lambda ps: any(
            p.metric == span_metrics.DROPPED for p in ps))
        exported, dropped = counts(metrics_receiver)
        assert set(dropped) == {"queue_full", "export_failed", "too_large",
                                "processor_failed"}
        assert sum(dropped.values()) == 0

        # A healthy collector: the spans of one request, counted here.
        traced = []
        for _ in range(5):
            headers, trace_id = signed()
            assert server.request("GET", STATS, headers=headers)[0] == 200
            traced.append(trace_id)
            time.sleep(0.2)  # one request's spans at a time in the queue
        receiver.wait_for(lambda s: s.trace_id in traced and s.kind == "SERVER",
                          count=5, timeout=30)
        time.sleep(0.5)
        per_trace = Counter(s.trace_id for s in receiver.spans()
                            if s.trace_id in traced)
        assert len(set(per_trace.values())) == 1, per_trace
        per_request = next(iter(per_trace.values()))
        assert per_request >= 2  # the server span and its children
        made = exported + 5 * per_request
        exported, dropped = wait_for_counts(metrics_receiver, made)
        assert (exported, sum(dropped.values())) == (made, 0)

        # A collector that refuses: every span of these requests dropped,
        # each counted once (refused by the collector, or finding the queue
        # full while the exporter retried within its timeout).
        receiver.mode = "error"
        for _ in range(5):
            headers, _ = signed()
            assert server.request("GET", STATS, headers=headers)[0] == 200
            time.sleep(0.2)
        made += 5 * per_request
        exported_now, dropped = wait_for_counts(metrics_receiver, made)
        assert exported_now == exported
        assert dropped["export_failed"] > 0, dropped
        assert sum(dropped.values()) == 5 * per_request, dropped
        dropped_before = sum(dropped.values())

        # A collector that hangs, and a queue of 16 spans: the spans that
        # found the queue full are dropped at once, the ones handed to the
        # hanging export when it gives up (timeout = 1 s); none is lost.
        receiver.mode = "hang"
        for _ in range(10):
            headers, _ = signed()
            assert server.request("GET", STATS, headers=headers)[0] == 200
        made += 10 * per_request
        time.sleep(2.5)
        receiver.mode = "ok"
        exported_now, dropped = wait_for_counts(metrics_receiver, made)
        assert dropped["queue_full"] > 0, dropped
        assert sum(dropped.values()) > dropped_before, dropped
        assert exported_now + sum(dropped.values()) == made, (exported_now, dropped)
        log = server.log_text()
    # Never silent in the log either: one line when dropping starts.
    assert "zaqar-otel: dropping spans" in log
    assert "Traceback" not in log, log[-3000:]
