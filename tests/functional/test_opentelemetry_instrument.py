"""``opentelemetry-instrument zaqar-server``: the standard OTel runner.

The same checks as for ``zaqar-otel-server``, with the exporter set through
``OTEL_*`` variables only, as an SRE running the standard runner would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.tracing import (
    KEY,
    REDIS_SCOPE,
    SQLALCHEMY_SCOPE,
    ProfiledSession,
    assert_well_formed,
)
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

pytestmark = pytest.mark.functional

RUNNER = ("{bin}/opentelemetry-instrument", "{bin}/zaqar-server",
          "--config-file", "{config}")
PROFILER = {
    "enabled": "true",
    "hmac_keys": KEY,
    "trace_wsgi_transport": "true",
    "trace_message_store": "true",
    "trace_management_store": "true",
    "trace_sqlalchemy": "true",
    # trace_redis stays off: the runner must not switch its instrumentor on.
}


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver(protocol="grpc") as rx:
        yield rx


def test_runner_gives_the_same_trace_with_otel_variables(
    receiver: OTLPReceiver,
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_SERVICE_NAME": "zaqar-eu-west",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    with RedisServer() as redis:
        with ZaqarServer(redis_sql(redis.url), command=RUNNER, env=env,
                         extra={"profiler": PROFILER}) as server:
            session = ProfiledSession(server, receiver, "instrumented")
            log = server.log_text()
    assert_well_formed(session, "redis_message_controller")
    assert session.children_of("sqlalchemy_", SQLALCHEMY_SCOPE)
    assert not [s for s in session.spans if s.scope == REDIS_SCOPE], (
        "trace_redis is off, yet the runner instrumented redis")
    resource = session.spans[0].resource
    assert resource["service.name"] == "zaqar-eu-west"
    assert resource["deployment.environment.name"] == "test"
    assert resource["service.version"] not in ("", "unknown")
    assert "zaqar-otel: tracing on, exporter otlp_grpc" in log
    assert "Traceback" not in log
    # The runner's dependency check skips no instrumentor zaqar-otel manages
    # (sqlalchemy 0.66 declares < 2.1, yet SQL spans are there).
    assert "nothing can be instrumented" not in log


def test_runner_survives_a_bad_span_attribute_count_limit(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``opentelemetry.sdk.trace`` raises at import on a bad
    ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT``; without ``OTEL_PROPAGATORS`` the
    .pth installs no finder, yet the runner loads zaqar-otel's distro (so
    ``zaqar_otel`` and its guard) before the SDK: Zaqar serves, traced,
    with one line naming the variable and the default used (issue 24)."""
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "-5",
    }
    with RedisServer() as redis:
        with ZaqarServer(redis_sql(redis.url), command=RUNNER, env=env,
                         extra={"profiler": PROFILER}) as server:
            session = ProfiledSession(server, receiver, "count-limit")
            log = server.log_text()
    assert_well_formed(session, "redis_message_controller")
    lines = [line for line in log.splitlines()
             if "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" in line]
    assert len(lines) == 1 and "default" in lines[0], lines
    assert "zaqar-otel: tracing on, exporter otlp_grpc" in log
    assert "Traceback" not in log
