"""Endpoint passwords and header values are never printed (issue 24, item 3).

A password may hold any character: a raw ``@``, ``/``, ``?``, ``%``, space or
``[`` makes oslo.config refuse ``[opentelemetry] endpoint`` (its error quotes
the whole authority), and through ``OTEL_EXPORTER_OTLP_ENDPOINT`` it reaches
the exporter as is. Neither the real zaqar-otel-server's log (its ``tracing
is off`` line, "dropping spans", "exporting metrics ... failed") nor
``zaqar-otel check`` holds any form of it, nor of an
``OTEL_EXPORTER_OTLP_HEADERS`` value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote

import pytest

from harness.tracing import ALL_TRACING, KEY, OTEL_SERVER
from zaqar_otel.demo.processes import RedisServer, free_port, render_conf
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.propagation import codec

pytestmark = pytest.mark.functional

CHARACTERS = ["@", "/", "?", "%", " ", "[", "@/?% ["]
HEADER_SECRET = "HDR-" + uuid.uuid4().hex


def _password(character: str) -> str:
    return f"P{character}W0RD-{uuid.uuid4().hex[:8]}"


def _forms(secret: str) -> list[str]:
    """What of ``secret`` must appear nowhere: its tail (after the last
    special character, unique to this run) and its encoded forms."""
    tail = secret.rsplit(" ", 1)[-1].rsplit("[", 1)[-1]
    return [tail, quote(secret, safe=""), quote_plus(secret), unquote(secret),
            json.dumps(secret)[1:-1], repr(secret)[1:-1]]


def _leaks(text: str, *secrets: str) -> list[str]:
    return [f for s in secrets for f in _forms(s) if f in text]


def _check(tmp_path: Path, sections: dict[str, dict[str, str]],
           env: dict[str, str]) -> str:
    conf = tmp_path / f"check-{uuid.uuid4().hex[:6]}.conf"
    conf.write_text(render_conf(sections))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "zaqar-otel"), "check",
         "--config-file", str(conf), "--timeout", "1"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, **env})
    return done.stdout + done.stderr


def test_a_refused_endpoint_option_never_shows_its_password(
        tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()
    for character in CHARACTERS:
        password = _password(character)
        sections = {"profiler": {**ALL_TRACING},
                    "opentelemetry": {"endpoint":
                                      f"http://alice:{password}@127.0.0.1:{port}"}}
        out = _check(tmp_path, sections, {})
        assert "error:   [opentelemetry] endpoint: " in out, out
        assert _leaks(out, password) == [], out
    # The server: one ERROR, tracing off, Zaqar serving.
    password = _password("@/?% [")
    extra = {"profiler": {**ALL_TRACING}, "opentelemetry": {
        "endpoint": f"http://alice:{password}@127.0.0.1:{port}"}}
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        assert server.request("PUT", "/v2/queues/q")[0] == 201
        log = server.wait_for_log("tracing is off")
    assert _leaks(log, password) == [], log


def test_environment_passwords_and_headers_never_reach_a_line(
        tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()  # nothing listens: every export fails
    for character in CHARACTERS:
        password = _password(character)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT":
               f"http://alice:{password}@127.0.0.1:{port}",
               # Malformed on purpose: the SDK's parser warns, quoting it.
               "OTEL_EXPORTER_OTLP_HEADERS": f'api-key={HEADER_SECRET}";x'}
        out = _check(tmp_path, {"profiler": {**ALL_TRACING},
                                "opentelemetry": {"metrics": "true"}}, env)
        assert "from OTEL_EXPORTER_OTLP_ENDPOINT" in out, out
        assert _leaks(out, password, HEADER_SECRET) == [], out
    for character in ("@/?% ", "["):
        password = _password(character)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT":
               f"http://alice:{password}@127.0.0.1:{port}",
               "OTEL_EXPORTER_OTLP_HEADERS": f'api-key={HEADER_SECRET}";x'}
        extra = {"profiler": {**ALL_TRACING}, "opentelemetry": {
            "schedule_delay": "50", "timeout": "1", "metrics": "true",
            "metrics_export_interval": "200"}}
        with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                         env=env) as server:
            for n in range(3):
                headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
                assert server.request("PUT", f"/v2/queues/s{n}",
                                      headers=headers)[0] == 201
            if character == "[":  # the SDK refuses the URL: tracing is off
                log = server.wait_for_log(
                    "tracing is off: OTEL_EXPORTER_OTLP_ENDPOINT is not a valid URL")
            else:
                server.wait_for_log("zaqar-otel: exporting metrics to", timeout=20)
                log = server.wait_for_log("zaqar-otel: dropping spans", timeout=20)
        assert _leaks(log, password, HEADER_SECRET) == [], log
        assert "alice" not in log


@pytest.mark.parametrize("exporter", ["otlp_http", "otlp_grpc"])
def test_configured_header_values_never_reach_a_line(
        tmp_path: Path, redis: RedisServer, exporter: str) -> None:
    """``[opentelemetry] headers`` from zaqar.conf (an API key of a hosted
    collector): with the collector down, neither the server's log ("dropping
    spans", "exporting metrics ... failed", the SDK's own lines) nor
    ``zaqar-otel check`` holds the value; malformed, the option is refused
    and named, the value not shown."""
    port = free_port()  # nothing listens: every export fails
    secret = "KEY-" + uuid.uuid4().hex
    otel = {"exporter": exporter, "endpoint": f"http://127.0.0.1:{port}",
            "headers": f"api-key={secret},x-tenant=t1", "schedule_delay": "50",
            "timeout": "1", "metrics": "true", "metrics_export_interval": "200"}
    if exporter == "otlp_grpc":
        otel["insecure"] = "true"
    out = _check(tmp_path, {"profiler": {**ALL_TRACING}, "opentelemetry": otel}, {})
    assert _leaks(out, secret) == [], out
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra={"profiler": {**ALL_TRACING}, "opentelemetry": otel}
                     ) as server:
        for n in range(3):
            headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
            assert server.request("PUT", f"/v2/queues/h{n}", headers=headers)[0] == 201
        server.wait_for_log("zaqar-otel: exporting metrics to", timeout=20)
        log = server.wait_for_log("zaqar-otel: dropping spans", timeout=20)
    assert _leaks(log, secret) == [], log
    # Malformed: refused, tracing off, the option named.
    broken = {**otel, "headers": f"api-key={secret},broken"}
    out = _check(tmp_path, {"profiler": {**ALL_TRACING}, "opentelemetry": broken}, {})
    assert "[opentelemetry] headers" in out and _leaks(out, secret) == [], out
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra={"profiler": {**ALL_TRACING}, "opentelemetry": broken}
                     ) as server:
        assert server.request("PUT", "/v2/queues/h")[0] == 201
        log = server.wait_for_log("tracing is off")
    assert "[opentelemetry] headers" in log and _leaks(log, secret) == [], log
