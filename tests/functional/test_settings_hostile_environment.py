"""A hostile environment (``settings.py``, ``propagation/number_guard.py``,
``export/resource.py``, ``cmd/check.py``): bad ``OTEL_*`` numbers
(``OTEL_EXPORTER_OTLP_TIMEOUT=0`` once stopped every export) and an
``OTEL_SERVICE_NAME`` that is not UTF-8, each one line naming it, the
default used, the spans exported. (Issue 24, items 7 and 8.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.clients import signed, signed_stats
from harness.tracing import OTEL_SERVER, arrived, tracing
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

pytestmark = pytest.mark.functional

QUEUE = "limits"
STATS = f"/v2/queues/{QUEUE}/stats"
ZAQAR_OTEL = str(Path(sys.executable).parent / "zaqar-otel")


def test_a_zero_export_timeout_is_one_line_and_the_default(
    redis: RedisServer, receiver: OTLPReceiver,
) -> None:
    """OTEL_EXPORTER_OTLP_TIMEOUT=0 (and -5 for the span limits' variable)
    once stopped every export: now each is one line naming it, the default
    is used, and the signed spans arrive."""
    env = {"OTEL_EXPORTER_OTLP_TIMEOUT": "0",
           "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "-5",
           "OTEL_BSP_MAX_QUEUE_SIZE": "lots"}
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra=tracing(receiver), env=env) as server:
        assert server.request("PUT", f"/v2/queues/{QUEUE}")[0] == 201
        trace_ids = signed_stats(server, QUEUE, 3)
        got = arrived(receiver, trace_ids, timeout=15)
        log = server.log_text()
    print(f"\n{len(got)} of 3 signed server spans arrived")
    assert {s.trace_id for s in got} == set(trace_ids)
    for variable in env:
        lines = [line for line in log.splitlines() if variable in line]
        assert len(lines) == 1, (variable, lines)
        assert "default" in lines[0]
    assert "Traceback" not in log


def test_check_reports_a_bad_otel_number(tmp_path: Path) -> None:
    conf = tmp_path / "zaqar.conf"
    conf.write_text("[profiler]\nenabled = true\nhmac_keys = a-key-of-ours\n"
                    "trace_wsgi_transport = true\n[opentelemetry]\nexporter = none\n")
    env = {**os.environ, "OTEL_EXPORTER_OTLP_TIMEOUT": "-5", "HOME": str(tmp_path)}
    done = subprocess.run([ZAQAR_OTEL, "check", "--config-file", str(conf)],
                          capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    out = done.stdout + done.stderr
    print(out)
    assert "OTEL_EXPORTER_OTLP_TIMEOUT" in out
    assert "No problems found" not in out
    assert "Traceback" not in out


def test_a_service_name_that_is_not_utf8_is_one_name_for_spans_and_metrics(
    redis: RedisServer, receiver: OTLPReceiver,
) -> None:
    """OTEL_SERVICE_NAME=zaqar-eu\\xff (a byte os.environ surrogate-escapes):
    one line, spans and metrics named alike, no traceback at export."""
    env = {"OTEL_SERVICE_NAME": os.fsdecode(b"zaqar-eu\xff")}
    extra = tracing(receiver, otel={"metrics": "true",
                                    "metrics_export_interval": "300"})
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                     env=env) as server:
        assert server.request("PUT", f"/v2/queues/{QUEUE}")[0] == 201
        headers, trace_id = signed()
        assert server.request("GET", STATS, headers=headers)[0] == 200
        span = arrived(receiver, [trace_id], timeout=15)[0]
        points = receiver.wait_for_points(lambda p: len(p) > 0, timeout=15)
        time.sleep(1)  # a few more metric exports
        log = server.log_text()
    names = {span.resource.get("service.name")} | {
        p.resource.get("service.name") for p in points}
    print(f"\nservice.name of spans and metrics: {names}")
    assert names == {"zaqar-eu\ufffd"}
    assert len([line for line in log.splitlines()
                if "OTEL_SERVICE_NAME" in line]) == 1
    assert "Traceback" not in log
