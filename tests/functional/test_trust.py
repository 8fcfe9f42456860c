"""What an untrusted client or a broken environment can do to a real Zaqar.

* An unsigned ``traceparent`` whose trace id a ratio sampler always keeps
  (low 64 bits zero) is traced at the ratio, like any other.
* A typo in ``OTEL_PROPAGATORS`` stops neither ``zaqar-otel-server``, the
  WSGI app under gunicorn, nor ``opentelemetry-instrument zaqar-server``:
  the unknown names are dropped with one ERROR line naming the variable, and
  ``zaqar-otel check`` reports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from harness.tracing import KEY, OTEL_GUNICORN, OTEL_SERVER, canary, tracing
from zaqar_otel.demo.client import profiled, zaqar_client
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.propagation import codec, idmap

pytestmark = pytest.mark.functional

RUNNER = ("{bin}/opentelemetry-instrument", "{bin}/zaqar-server",
          "--config-file", "{config}")


def test_a_client_cannot_choose_trace_ids_that_are_always_kept(
        redis: RedisServer, receiver: OTLPReceiver) -> None:
    extra = tracing(receiver, otel={"sample_ratio": "0.01",
                                    "honor_w3c_sampled": "false"})
    sent = 300
    ids = [uuid.uuid4().int & ~((1 << 64) - 1) | 1 for _ in range(sent)]
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        for trace_id in ids:
            headers = {"traceparent": f"00-{trace_id:032x}-{0x1234:016x}-01"}
            assert server.request("GET", "/v2/queues", headers=headers)[0] == 200
        canary(server, receiver, clear=False)
    traced = {s.trace_id for s in receiver.spans()} & set(ids)
    # Expected 3 of 300; a sampler applied to the caller's id keeps all 300.
    assert len(traced) < 20, f"{len(traced)} of {sent} chosen ids traced"


@pytest.mark.parametrize("command", [OTEL_SERVER, OTEL_GUNICORN, RUNNER],
                         ids=["zaqar-otel-server", "gunicorn",
                              "opentelemetry-instrument"])
@pytest.mark.parametrize("value", ["bogus", "tracecontext,nonexistent,osprofiler"])
def test_a_typo_in_otel_propagators_keeps_zaqar_serving(
        redis: RedisServer, receiver: OTLPReceiver, command: tuple[str, ...],
        value: str) -> None:
    env = {"OTEL_PROPAGATORS": value}
    if command is RUNNER:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint.rsplit("/v1/", 1)[0],
                   OTEL_BSP_SCHEDULE_DELAY="50")
    with ZaqarServer(redis_sql(redis.url), command=command, extra=tracing(receiver),
                     env=env) as server:
        # Served, and still traced from a signed header: osprofiler is kept
        # (named, or the default when no name was usable).
        canary(server, receiver)
    log = server.log_text()
    bad = value.split(",")[1] if "," in value else value
    errors = [line for line in log.splitlines()
              if "OTEL_PROPAGATORS" in line and "ERROR" in line]
    assert len(errors) == 1, log
    assert repr(bad) in errors[0]
    assert "Traceback" not in log


def test_check_reports_an_unknown_propagator(tmp_path: Path) -> None:
    conf = tmp_path / "zaqar.conf"
    conf.write_text(f"[profiler]\nenabled = true\nhmac_keys = {KEY}\n"
                    "[opentelemetry]\nexporter = none\n")
    script = Path(sys.executable).parent / "zaqar-otel"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([str(script), "check", "--config-file", str(conf)],
                          env={**env, "OTEL_PROPAGATORS": "tracecontext,bogus"},
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error:   OTEL_PROPAGATORS names 'bogus'" in done.stdout
    assert "propagators                tracecontext" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_signed_headers_still_verify_with_the_default_propagators() -> None:
    """The sanity half of the test above: a known list is left as it is."""
    from zaqar_otel.propagation import env_guard

    assert env_guard.unknown_in("tracecontext,baggage,osprofiler") == ()
    assert env_guard.unknown_in("tracecontext,bogus, none") == ("bogus",)
    assert codec.decode(*codec.encode(str(uuid.uuid4()), str(uuid.uuid4()),
                                        KEY).values(), [KEY]) is not None


PASSWORD = "endpoint-pw-f00d"


def test_endpoint_credentials_reach_no_log_line_and_no_check_output(
        redis: RedisServer, tmp_path: Path) -> None:
    from zaqar_otel.demo.processes import free_port

    closed = free_port()
    otel = {"endpoint": f"http://otel-user:{PASSWORD}@127.0.0.1:{closed}",
            "headers": "x-api-key=header-secret-beef", "schedule_delay": "50"}
    sections = {"profiler": {"enabled": "true", "hmac_keys": KEY,
                             "trace_wsgi_transport": "true"},
                "opentelemetry": otel, "DEFAULT": {"debug": "true"}}
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra=sections) as server:
        headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
        for _ in range(3):
            assert server.request("GET", "/v2/queues", headers=headers)[0] == 200
        server.wait_for_log("dropping spans", timeout=20)
    log = server.log_text()
    assert "http://***@127.0.0.1" in log
    assert PASSWORD not in log and "header-secret-beef" not in log
    conf = tmp_path / "zaqar.conf"
    conf.write_text(f"[profiler]\nenabled = true\nhmac_keys = {KEY}\n"
                    f"[opentelemetry]\nendpoint = {otel['endpoint']}\n"
                    f"headers = {otel['headers']}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([str(Path(sys.executable).parent / "zaqar-otel"), "check",
                           "--config-file", str(conf), "--timeout", "1"],
                          env=env, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "unreachable" in output, output
    assert "http://***@127.0.0.1" in output
    for secret in (PASSWORD, "header-secret-beef", KEY):
        assert secret not in output, output


def test_a_missing_optional_driver_only_disables_what_needs_it(
        redis: RedisServer, receiver: OTLPReceiver, tmp_path: Path) -> None:
    """No pymongo on a Redis deployment, links and trace_mongodb on: the
    Redis side is traced and linked; one line says what is off."""
    blocker = tmp_path / "no-pymongo" / "pymongo"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pymongo'\", name='pymongo')\n")
    extra = tracing(receiver, profiler={"trace_message_links": "true",
                                        "trace_mongodb": "true"})
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                     env={"PYTHONPATH": str(blocker.parent)}) as server:
        client = zaqar_client(server.url)
        queue = client.queue("linked", force_create=True)
        with profiled(KEY) as prof:
            queue.post([{"body": {"n": 1}, "ttl": 120}])
            producer = idmap.trace_id_from_base_id(prof.get_base_id())
        with profiled(KEY) as prof:
            assert len(list(queue.messages(echo=True))) == 1
            consumer = idmap.trace_id_from_base_id(prof.get_base_id())
        canary(server, receiver, clear=False)
    log = server.log_text()
    assert "tracing is off" not in log, log
    assert "[profiler] trace_mongodb is on, but pymongo is not installed" in log
    assert log.count("trace_mongodb is on") == 1, log
    assert log.count("no message links on mongodb stores") == 1, log
    assert "Traceback" not in log and "ModuleNotFoundError" not in log
    spans = receiver.spans()
    send = next(s for s in spans if s.trace_id == producer and s.name == "send linked")
    receive = next(s for s in spans if s.trace_id == consumer
                   and s.name == "receive linked")
    assert [(t, sp) for t, sp, _ in receive.links] == [(producer, send.span_id)]


BREAK_THE_SDK = '''
# Loaded at start-up: the SDK's span pipeline broken on purpose. Every span
# of a request, ours and the instrumentors', ends through it on the request
# thread, and the SDK does not catch there.
from opentelemetry.sdk import _shared_internal

_init = _shared_internal.BatchProcessor.__init__


def init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    del self._queue  # a layout zaqar-otel does not know


def emit(self, data):
    raise RuntimeError("the SDK's batch processor is broken")


_shared_internal.BatchProcessor.__init__ = init
_shared_internal.BatchProcessor.emit = emit
'''


@pytest.mark.parametrize("fast_path", ["auto", "off"])
def test_a_broken_sdk_never_reaches_zaqars_answers(
        fast_path: str, redis: RedisServer, receiver: OTLPReceiver,
        tmp_path: Path) -> None:
    """Spans that fail to end on the request thread: every request (errors
    included) is answered as plain Zaqar answers it, on the fast path and on
    the SDK's own."""
    hook = tmp_path / "broken-sdk"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BREAK_THE_SDK)
    extra = tracing(receiver, profiler={"trace_message_links": "true"},
                    otel={"fast_path": fast_path})
    answers = {}
    for name, env in (("traced", {"PYTHONPATH": str(hook)}), ("plain", None)):
        sections = extra if name == "traced" else {
            "profiler": {"enabled": "false"}}
        with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=sections,
                         env=env) as server:
            signed = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
            calls = [("PUT", "/v2/queues/broken", None),
                     ("POST", "/v2/queues/broken/messages",
                      {"messages": [{"body": {"n": 1}, "ttl": 60}]}),
                     ("GET", "/v2/queues/broken/messages?echo=true", None),
                     ("POST", "/v2/queues/broken/claims", {"ttl": 60, "grace": 60}),
                     ("GET", "/v2/queues/nope/messages/not-an-id", None),
                     ("POST", "/v2/queues/broken/messages", {"messages": "x"}),
                     ("DELETE", "/v2/queues/broken", None)]
            answers[name] = [
                server.request(method, path, body=body, headers=signed)[0]
                for method, path, body in calls]
            log = server.log_text() if name == "traced" else ""
        if name == "traced":
            # The fault is logged once, then swallowed.
            assert log.count("handing a span to the exporter failed") == 1, log
            if fast_path == "auto":
                assert "laid out differently" in log
            else:  # the SDK's own processor: nothing of its layout is read
                assert "spans take the stock (" in log
            import redis as redis_client

            with redis_client.Redis.from_url(redis.url) as client:
                client.flushall()
    assert answers["traced"] == answers["plain"]
    assert 500 not in answers["traced"]
