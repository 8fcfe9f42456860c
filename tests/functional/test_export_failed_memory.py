"""Invariant 7's "memory stays bounded" (``export/processor.py``,
``export/otlp_http.py``): against a collector that never answers, the spans
alive in the server are the queue and at most the batch in flight; none
are left in reference cycles for the garbage collector. The long run
(100k requests, black hole and hanging collector) is
tests/stress/test_export_failed_memory_long.py; what was found is in docs/faults.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.clients import signed_stats
from harness.faults import Relay
from harness.probe import Probe
from harness.tracing import OTEL_SERVER, traced_extra
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

pytestmark = pytest.mark.functional


def test_failed_exports_leave_no_spans_behind_for_the_garbage_collector(
    tmp_path: Path, redis: RedisServer, receiver: OTLPReceiver,
) -> None:
    """Against a black hole (1 s export timeout), the spans alive in the
    server are the queue and at most the batch being exported; none are left
    for the cyclic GC to find. With the GC off in the server (as deployments
    that ``gc.freeze()`` / tune thresholds approach), anything left in a
    reference cycle accumulates: a healthy collector is the control."""
    batch = 512
    results = {}
    for name in ("healthy", "black hole"):
        probe = Probe(tmp_path / name.replace(" ", "-"), gc_off=True)
        with Relay(receiver.port, mode="forward" if name == "healthy" else
                   "blackhole") as collector:
            # A failed export's traceback released is the fast path's OTLP
            # exporter's (the SDK's own keeps its batch until a collection):
            # whatever OTEL_ZAQAR_FAST_PATH says.
            extra = traced_extra(receiver, timeout="1", shutdown_timeout="1",
                                 max_export_batch_size=str(batch), fast_path="auto")
            extra["opentelemetry"]["endpoint"] = collector.endpoint
            with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                             env=probe.env) as server:
                assert "spans take the fast (" in server.log_text()
                assert server.request("PUT", "/v2/queues/probe")[0] == 201
                signed_stats(server, "probe", 1500)
                time.sleep(4)  # a few more failed exports, no new spans
                results[name] = {**probe.read(server),
                                 "connections": collector.connections}
    for name, found in results.items():
        print(f"\n{name}: {found}")
    assert results["healthy"]["outside"] <= batch, results["healthy"]
    held = results["black hole"]["outside"]
    assert held <= batch, (
        f"{held} spans alive outside the span queue after "
        f"{results['black hole']['connections']} failed exports of {batch}")
