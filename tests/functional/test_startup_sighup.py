"""SIGHUP (``zaqar-otel-server``'s signal handling, cmd/server.py): queued
spans are flushed before the server ends, as on SIGTERM, and the server
ends as plain ``zaqar-server`` does. (Issue 24, item 9.)
"""

from __future__ import annotations

import signal
import time

import pytest

from harness.clients import signed_stats
from harness.tracing import OTEL_SERVER, tracing
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZAQAR_SERVER_COMMAND, ZaqarServer, redis_sql

pytestmark = pytest.mark.functional

QUEUE = "limits"


def test_sighup_flushes_queued_spans_then_ends_the_server_as_zaqars(
    redis: RedisServer, receiver: OTLPReceiver,
) -> None:
    """20 signed requests, a minute between exports: SIGHUP delivers their
    spans, then the server ends by SIGHUP, as plain zaqar-server does."""
    with ZaqarServer(redis_sql(redis.url), command=ZAQAR_SERVER_COMMAND) as plain:
        assert plain.proc is not None
        plain.proc.send_signal(signal.SIGHUP)
        assert plain.proc.wait(timeout=10) == -signal.SIGHUP
    extra = tracing(receiver, otel={"schedule_delay": "60000"})
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        assert server.request("PUT", f"/v2/queues/{QUEUE}")[0] == 201
        trace_ids = signed_stats(server, QUEUE, 20)
        time.sleep(0.2)
        assert receiver.spans() == []
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGHUP)
        code = server.proc.wait(timeout=10)
        took = time.monotonic() - started
    got = {s.trace_id for s in receiver.spans() if s.kind == "SERVER"}
    print(f"\nSIGHUP: {len(got & set(trace_ids))} of 20 signed server spans "
          f"arrived; the server ended {took:.2f} s after the signal")
    assert code == -signal.SIGHUP
    assert got >= set(trace_ids)
