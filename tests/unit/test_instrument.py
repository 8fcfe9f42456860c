"""The start-up hook (``zaqar_otel.instrument``) in a fresh interpreter each
(it owns the process's state)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

PRELUDE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from oslo_config import cfg
from osprofiler import opts as osprofiler_opts
from zaqar.conf import profiler as zaqar_profiler
from opentelemetry import trace
from zaqar_otel import instrument, opts

def enabled():
    running = instrument.running()
    return bool(running and running.settings.enabled)

def hmac_keys():
    running = instrument.running()
    return running.settings.hmac_keys if enabled() else ()

def conf(**profiler):
    c = cfg.ConfigOpts()
    osprofiler_opts.set_defaults(c)
    zaqar_profiler.register_opts(c)
    opts.register_opts(c)
    c([], default_config_files=[])
    for name, value in {"enabled": True, "hmac_keys": "k1,k2",
                        "trace_wsgi_transport": True, **profiler}.items():
        c.set_override(name, value, group="profiler")
    c.set_override("exporter", "none", group="opentelemetry")
    return c
"""


def run(body: str) -> str:
    script = PRELUDE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_setup_is_idempotent() -> None:
    out = run("""
        assert instrument.setup(conf()) is True
        provider = trace.get_tracer_provider()
        # A second call, even with another configuration, changes nothing.
        assert instrument.setup(conf(enabled=False)) is True
        assert trace.get_tracer_provider() is provider
        assert hmac_keys() == ("k1", "k2")
        print("ok")
    """)
    assert out.count("zaqar-otel: tracing on") == 1 and out.rstrip().endswith("ok")


def test_an_installed_sdk_provider_is_reused() -> None:
    run("""
        from opentelemetry.sdk.trace import TracerProvider
        mine = TracerProvider()
        trace.set_tracer_provider(mine)
        assert instrument.setup(conf())
        assert trace.get_tracer_provider() is mine
    """)


def test_disabled_patches_nothing_and_ignores_signed_headers() -> None:
    run("""
        from osprofiler import notifier, profiler
        from opentelemetry import propagate
        from zaqar_otel.propagation import codec
        trace_cls = profiler.trace_cls
        before = notifier.get()
        assert instrument.setup(conf(enabled=False)) is False
        assert profiler.trace_cls is trace_cls and notifier.get() is before
        headers = codec.encode("6f1d0c9e-0000-4000-8000-000000000001",
                                "6f1d0c9e-0000-4000-8000-000000000002", "k1")
        ctx = propagate.extract(headers)
        assert not trace.get_current_span(ctx).get_span_context().is_valid
        assert hmac_keys() == ()
    """)


def test_broken_configuration_logs_one_error_and_stays_off() -> None:
    out = run("""
        assert instrument.setup(conf(hmac_keys="SECRET_KEY")) is False
        assert not enabled()
    """)
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "[profiler] hmac_keys" in errors[0], out


def test_shutdown_is_bounded_and_runs_once() -> None:
    run("""
        import time
        c = conf()
        c.set_override("exporter", "otlp_http", group="opentelemetry")
        # Nothing listens on port 9 of loopback: every export fails.
        c.set_override("endpoint", "http://127.0.0.1:9", group="opentelemetry")
        assert instrument.setup(c)
        with trace.get_tracer("t").start_as_current_span("s"):
            pass
        started = time.monotonic()
        instrument.shutdown(timeout=1.0)
        assert time.monotonic() - started < 2.0
        assert instrument.shutdown() is True  # already done: no-op
    """)


def test_a_forked_worker_gets_its_own_instance_id(monkeypatch) -> None:
    """uwsgi forks without Python's at-fork hooks: the resource notices the
    new pid itself. An operator's own service.instance.id is kept."""
    import os

    from zaqar_otel._sdk.resource import SERVICE_INSTANCE_ID, for_process

    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    resource = for_process("zaqar")
    parent_id, parent_hash = resource.attributes[SERVICE_INSTANCE_ID], hash(resource)
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)
    child_id = resource.attributes[SERVICE_INSTANCE_ID]
    assert child_id != parent_id and hash(resource) != parent_hash
    assert resource.attributes["service.name"] == "zaqar"
    assert resource.attributes[SERVICE_INSTANCE_ID] == child_id  # stable after

    monkeypatch.setattr(os, "getpid", lambda: pid)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=mine")
    from opentelemetry.sdk.resources import Resource

    operator = for_process("zaqar")
    operator_id = operator.attributes[SERVICE_INSTANCE_ID]
    monkeypatch.setattr(os, "getpid", lambda: pid + 2)
    assert operator.attributes[SERVICE_INSTANCE_ID] == operator_id
    assert isinstance(operator, Resource)


def test_teardown_undoes_everything_and_a_new_setup_takes_the_new_conf() -> None:
    out = run("""
        import redis
        from osprofiler import notifier, profiler
        from opentelemetry import propagate
        from zaqar.transport.middleware import profile
        from zaqar_otel.propagation import codec

        from zaqar.notification.notifier import NotifierDriver
        from zaqar.transport.websocket.protocol import MessagingProtocol

        originals = (profiler.trace_cls, notifier.get(), propagate.get_global_textmap(),
                     redis.Redis.execute_command, profile.setup,
                     NotifierDriver._execute, MessagingProtocol.onMessage)
        def now():
            return (profiler.trace_cls, notifier.get(), propagate.get_global_textmap(),
                    redis.Redis.execute_command, profile.setup,
                    NotifierDriver._execute, MessagingProtocol.onMessage)

        instrument.install()
        assert instrument.setup(conf(trace_redis=True,
                                     trace_websocket_transport=True)) is True
        changed = now()
        assert all(a is not b for a, b in zip(changed, originals)), changed
        first = trace.get_tracer_provider()

        assert instrument.teardown() is True
        assert now() == originals, now()
        assert not enabled()
        assert instrument.running() is None

        # Afresh, with another configuration: Redis now untraced, a new provider.
        instrument.install()
        assert instrument.setup(conf(trace_redis=False, hmac_keys="k3",
                                     trace_websocket_transport=False)) is True
        assert hmac_keys() == ("k3",)
        assert redis.Redis.execute_command is originals[3]
        assert MessagingProtocol.onMessage is originals[6]  # websocket off
        assert profiler.trace_cls is not originals[0]
        # A signed header under the new key verifies, one under the old does not.
        signed = lambda key: codec.encode("6f1d0c9e-0000-4000-8000-000000000001",
                                          "6f1d0c9e-0000-4000-8000-000000000002", key)
        valid = lambda c: trace.get_current_span(c).get_span_context().is_valid
        assert valid(propagate.extract(signed("k3")))
        assert not valid(propagate.extract(signed("k1")))
        assert instrument.running().provider is not first
        instrument.teardown()
        assert now() == originals
        print("ok")
    """)
    assert out.count("zaqar-otel: tracing on") == 2 and out.rstrip().endswith("ok")


def test_metrics_start_with_setup_and_teardown_undoes_them_and_the_log_fields() -> None:
    out = run("""
        import threading
        before = logging.getLogRecordFactory()
        instrument.install()
        assert logging.getLogRecordFactory() is not before
        c = conf(trace_wsgi_transport=False)
        c.set_override("metrics", True, group="opentelemetry")
        c.set_override("metrics_export_interval", 100, group="opentelemetry")
        c.set_override("exporter", "console", group="opentelemetry")
        assert instrument.setup(c)
        assert instrument.running().metrics is not None
        assert any(t.name == "zaqar-otel-metrics" for t in threading.enumerate())
        assert instrument.teardown() is True
        assert logging.getLogRecordFactory() is before
        assert not any(t.name == "zaqar-otel-metrics" for t in threading.enumerate())
        print("ok")
    """)
    assert "zaqar-otel: metrics on, exporter console every 0.1 s" in out, out


def test_a_metrics_problem_is_one_error_and_tracing_stays_on() -> None:
    out = run("""
        import os
        os.environ["OTEL_METRICS_EXPORTER"] = "prometheus"
        assert instrument.setup(conf()) is True
        assert instrument.running().metrics is None
    """)
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "OTEL_METRICS_EXPORTER='prometheus'" in errors[0], out


@pytest.fixture
def environ_kept() -> Iterator[None]:
    """os.environ as before the test: the distro's _configure sets defaults
    in it (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT), which every later test's
    TracerProvider would read (a 500 KB attribute then cut to 8192)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.usefixtures("environ_kept")
def test_the_distro_gives_every_provider_the_length_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under opentelemetry-instrument a provider another configurator builds
    reads OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: the distro defaults it to
    zaqar-otel's limit, and keeps the operator's."""
    from opentelemetry.sdk.trace import SpanLimits

    from zaqar_otel.distro import ZaqarOtelDistro

    monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext")
    # _configure sets it: restored (removed) after the test.
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    ZaqarOtelDistro()._configure()
    assert SpanLimits().max_span_attribute_length == 8192
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "300")
    ZaqarOtelDistro()._configure()
    assert SpanLimits().max_span_attribute_length == 300


@pytest.mark.usefixtures("environ_kept")
def test_distro_keeps_its_instrumentors_from_the_runners_dependency_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """opentelemetry-instrument skips the names in
    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS before checking dependencies: the
    distro adds the ones zaqar-otel installs itself, keeping the operator's."""
    from zaqar_otel.distro import ZaqarOtelDistro

    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext")
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "flask, redis ,")
    ZaqarOtelDistro()._configure()
    assert os.environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] == (
        "flask,redis,pymongo,requests,sqlalchemy")
    ZaqarOtelDistro()._configure()  # idempotent
    assert os.environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] == (
        "flask,redis,pymongo,requests,sqlalchemy")


def test_configured_endpoint_passwords_and_header_values_are_masked() -> None:
    """What the SDK's exporters log (an endpoint URL, an error quoting a
    header) passes through the same masking as zaqar-otel's own lines."""
    out = run("""
        import os
        os.environ["OTEL_EXPORTER_OTLP_HEADERS"] = "x-env-key=ENVSECRET9"
        c = conf()
        c.set_override("exporter", "otlp_http", group="opentelemetry")
        c.set_override("endpoint", "http://alice:pa%40ss%2Fw0rd@127.0.0.1:9",
                       group="opentelemetry")
        c.set_override("headers", "api-key=CONFSECRET7", group="opentelemetry")
        assert instrument.setup(c)
        for name in ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.util.re"):
            logging.getLogger(name).warning(
                "quoting %s and %s and %s", "CONFSECRET7", "ENVSECRET9",
                "http://alice:pa@ss/w0rd@127.0.0.1:9/v1/traces")
        instrument.teardown()
    """)
    assert "quoting" in out
    for secret in ("CONFSECRET7", "ENVSECRET9", "pa@ss", "pa%40ss", "w0rd", "alice"):
        assert secret not in out, out


# uwsgi's master as uwsgi.opt shows it: flags True, an ini file's values bytes.
UWSGI_MASTER = """
import types
uwsgi = types.ModuleType("uwsgi")
uwsgi.opt = {opt!r}
uwsgi.worker_id = lambda: 0
sys.modules["uwsgi"] = uwsgi
"""


@pytest.mark.parametrize("opt,forks_without_hooks", [
    ({"master": True, "processes": b"4"}, True),
    ({"master": b"true", "lazy-apps": b"false"}, True),
    ({"master": True, "lazy-apps": True}, False),
    ({"master": b"true", "lazy": b"1"}, False),
    ({"master": True, "py-call-uwsgi-fork-hooks": True}, False),
    ({"processes": b"4"}, False),
], ids=["default", "ini-lazy-apps-false", "lazy-apps", "lazy", "fork-hooks",
        "no-master"])
def test_a_uwsgi_master_forking_without_hooks_is_recognised(
        monkeypatch: pytest.MonkeyPatch, opt: dict[str, object],
        forks_without_hooks: bool) -> None:
    import types

    from zaqar_otel.hook import prefork

    assert prefork.forks_without_hooks() is False  # not under uwsgi
    uwsgi = types.ModuleType("uwsgi")
    uwsgi.opt = opt  # type: ignore[attr-defined]
    uwsgi.worker_id = lambda: 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uwsgi", uwsgi)
    assert prefork.forks_without_hooks() is forks_without_hooks
    uwsgi.worker_id = lambda: 1  # type: ignore[attr-defined] # a (lazy) worker
    assert prefork.forks_without_hooks() is False


@pytest.mark.parametrize("fast_path", ["auto", "off"])
def test_a_uwsgi_master_runs_no_thread_and_its_forked_worker_exports(
        fast_path: str) -> None:
    """In uwsgi's master (app loaded there, workers forked without Python's
    at-fork hooks and without the GIL), a thread of the master holding the
    GIL at a fork leaves the worker hung for ever on it: set-up leaves no
    thread running there. A worker forked as uwsgi forks (libc's fork
    through ctypes, which lets go of the GIL and runs no hook) starts its
    own export thread and delivers its span."""
    from zaqar_otel.demo.receiver import OTLPReceiver

    with OTLPReceiver() as receiver:
        out = run(UWSGI_MASTER.format(opt={"master": True, "processes": b"4"})
                  + textwrap.dedent(f"""
            import ctypes, os, threading, time
            c = conf()
            c.set_override("exporter", "otlp_http", group="opentelemetry")
            c.set_override("endpoint", {receiver.endpoint!r}, group="opentelemetry")
            c.set_override("fast_path", {fast_path!r}, group="opentelemetry")
            c.set_override("schedule_delay", 50, group="opentelemetry")
            c.set_override("sample_ratio", 1.0, group="opentelemetry")
            c.set_override("metrics", True, group="opentelemetry")
            c.set_override("metrics_export_interval", 100, group="opentelemetry")
            assert instrument.setup(c)
            running = [t.name for t in threading.enumerate()
                       if t is not threading.main_thread()]
            assert not running, running
            pid = ctypes.CDLL(None).fork()  # as uwsgi forks a worker
            if pid == 0:
                with trace.get_tracer("t").start_as_current_span("worker"):
                    pass
                os._exit(0 if instrument.shutdown(timeout=10.0) else 3)
            for _ in range(600):  # bounded: a hung worker fails, not hangs
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, 9)
                done, status = os.waitpid(pid, 0)
            print("worker exit", os.waitstatus_to_exitcode(status))
            instrument.shutdown(timeout=1.0)
        """))
        spans = receiver.wait_for(count=1, timeout=10)
    assert "worker exit 0" in out, out
    assert "its export threads are stopped" in out, out
    assert [s.name for s in spans] == ["worker"]
