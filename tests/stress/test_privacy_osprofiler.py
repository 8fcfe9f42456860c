"""For the record: the privacy session against osprofiler's own OTLP driver.

The session of ``tests/functional/test_redact_client_data.py`` (every v2
request type, each place a client can put data holding a marker) against plain
``zaqar-server`` with ``[profiler] connection_string = otlp://...``, the
anchor zaqar-otel replaces. Prints how many markers reach the exported
bytes, by kind, without asserting: osprofiler exports call args.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from harness.leaks import leaked
from harness.tracing import KEY, osprofiler_driver
from tests.functional.test_redact_client_data import (
    SIGNED_URL_SECRET,
    PrivateSession,
    flush,
    privacy_config,
    signed_headers,
)
from zaqar_otel.demo.processes import RedisServer, free_port
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZAQAR_SERVER_COMMAND, ZaqarServer, redis_sql

# osprofiler's OTLP driver reads only the connection string; its batch
# processor takes the OTEL_BSP_* variables.
OSPROFILER_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_BSP_MAX_QUEUE_SIZE": "65536"}


def test_record_what_osprofilers_otlp_driver_leaks(
    redis: RedisServer, receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {**osprofiler_driver(receiver.port, trace_requests="true"),
             **privacy_config()}
    with ZaqarServer(redis_sql(redis.url), command=ZAQAR_SERVER_COMMAND,
                     extra=extra, env=OSPROFILER_ENV) as server:
        session = PrivateSession(server.request, signed_headers(), server.log_tail)
        session.run(webhook_port=free_port())
        time.sleep(0.5)
        flush(server, receiver, timeout=30)
    secrets = session.markers | {KEY, SIGNED_URL_SECRET}
    found = leaked(receiver.raw, secrets)
    kinds = {**session.kinds, KEY: "HMAC key", SIGNED_URL_SECRET: "signed-URL secret"}
    sent, out = Counter(kinds[s] for s in secrets), Counter(kinds[s] for s in found)
    with capsys.disabled():
        print(f"\nosprofiler OTLP driver: {len(found)} of {len(secrets)} "
              f"secrets exported, {len(receiver.spans())} spans, "
              f"{sum(len(r) for r in receiver.raw)} bytes")
        for kind in sorted(sent):
            print(f"  {kind:<26} {out[kind]:>3} of {sent[kind]:>3} exported")
    assert receiver.spans(), "osprofiler's driver exported nothing"
