"""Jaeger v2 on its embedded Badger store keeps the traces across a restart.

Jaeger runs the shipped ``collector/jaeger/config-badger.yaml`` (its data
directory and addresses through the ``JAEGER_*`` variables it reads), behind
the shipped single collector (``config/otel-collector.yaml``, decision_wait
2 s), with zaqar-otel-server and a client service sending real requests
(harness/scale_out.py). Jaeger is restarted (SIGTERM, then started on
the same directory) while requests keep coming: every trace it held before
is still there, whole, and the traces decided while it was down arrive once
it is back (the collector's queue and retry).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from harness.backends import BadgerJaeger, Collector
from harness.scale_out import (
    ClientService,
    Sent,
    Tier,
    expected_kept,
    is_whole,
    plan,
    run_traffic,
    warm_up,
    zaqar_pair,
)
from zaqar_otel.demo.processes import RedisServer

pytestmark = [pytest.mark.functional, pytest.mark.backends]


def _held(jaeger: BadgerJaeger, sent: list[Sent]) -> dict[str, int]:
    """trace id -> span count of the traces Jaeger holds whole."""
    found: dict[str, int] = {}
    for s in sent:
        trace: dict[str, Any] | None = jaeger.trace(s.trace_id)
        if trace is not None:
            assert is_whole(trace), s
            found[s.trace_id] = len(trace["spans"])
    return found


def test_traces_outlive_a_restart_of_jaeger_on_badger() -> None:
    with BadgerJaeger() as jaeger, \
            Collector(jaeger.otlp_grpc, decision_wait="2s") as collector, \
            RedisServer() as redis, \
            zaqar_pair(redis, [collector], processes=1) as zaqars:
        tier = Tier(jaeger, [collector], [])
        warm_up(zaqars)
        client = ClientService([collector])
        try:
            before = run_traffic(client, zaqars, plan(60, requested=0.3, slow=0),
                                 threads=4)
            client.providers[0].force_flush()
            tier.wait_quiet()
            kept_before = _held(jaeger, before)
            assert len(kept_before) >= 18  # the signed ones at least
            old_pid = jaeger.pid

            # Restart Jaeger while requests keep coming.
            during: list[Sent] = []
            worker = threading.Thread(target=lambda: during.extend(run_traffic(
                client, zaqars, plan(40, requested=0.5, slow=0, seed=2),
                threads=2, during=lambda i: time.sleep(0.1))))
            worker.start()
            time.sleep(1)
            jaeger.stop()
            time.sleep(2)
            jaeger.start()
            worker.join(120)
            assert not worker.is_alive()
        finally:
            client.shutdown()
        assert jaeger.pid != old_pid
        tier.wait_quiet()

        # Every trace held before the restart: still there, whole, the same.
        assert _held(jaeger, before) == kept_before
        # The traces decided meanwhile arrive (the collector's exporter
        # retries every few seconds while Jaeger is down).
        due = [s for s in during if expected_kept(s)]
        assert due
        for s in due:
            assert is_whole(jaeger.wait_trace(s.trace_id, timeout=60))
        counts = tier.counts().sampler
        assert counts["send_failed"] == 0 and counts["enqueue_failed"] == 0
