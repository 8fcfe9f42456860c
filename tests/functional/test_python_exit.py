"""Spans still queued when a traced process exits normally (``atexit``).

``make breadth`` runs this on every Python the package declares. A process
that ends by returning or ``sys.exit`` (a gunicorn worker's graceful stop,
a WSGI container unloading the app, a script using the propagator) runs
``instrument.shutdown`` from ``atexit``, which flushes within
``shutdown_timeout`` by waiting for the SDK's shutdown on a thread of its
own. Early Python 3.12 releases let no thread start once the interpreter is
finalizing, not even from ``atexit`` (CPython gh-113964; the OTel SDK's own
report, opentelemetry-python#4752, names 3.12.0 to 3.12.2): ``Thread.start``
raises "can't create new thread at interpreter shutdown", the hook's
traceback is printed and the queued spans are lost. Measured here: 3.10.13,
3.11.7 and 3.13.0 flush, 3.12.1 does not. The fix belongs to
``hook.sdk.flush`` (on that RuntimeError, flush inline with
``provider.force_flush(timeout)``, bounded by the same limit); until then
the test is an expected failure there, strict, so that the fix shows.
(``zaqar-otel-server`` flushes in its SIGTERM handler, not at exit, and is
not affected.)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

import pytest

from zaqar_otel.demo.receiver import OTLPReceiver

pytestmark = pytest.mark.functional

CHILD = """
import sys
from oslo_config import cfg
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from osprofiler import opts as osprofiler_opts
from zaqar.conf import profiler as zaqar_profiler
from zaqar_otel import instrument, opts

conf = cfg.ConfigOpts()
osprofiler_opts.set_defaults(conf)
zaqar_profiler.register_opts(conf)
opts.register_opts(conf)
conf([], default_config_files=[])
for name, value in {"enabled": True, "hmac_keys": "exit-key",
                    "trace_wsgi_transport": True}.items():
    conf.set_override(name, value, group="profiler")
conf.set_override("endpoint", sys.argv[1], group="opentelemetry")
conf.set_override("schedule_delay", 60000, group="opentelemetry")  # queued at exit
assert instrument.setup(conf)
caller = SpanContext(0x5EED, 0xCA11, is_remote=True, trace_flags=TraceFlags(1))
with trace.get_tracer("exit").start_as_current_span(
        "queued-at-exit", context=trace.set_span_in_context(NonRecordingSpan(caller))):
    pass
"""


def test_a_normal_exit_flushes_the_spans_still_queued() -> None:
    with OTLPReceiver() as receiver:
        done = subprocess.run([sys.executable, "-c", CHILD, receiver.endpoint],
                              capture_output=True, text=True, timeout=60,
                              cwd=tempfile.gettempdir())
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        receiver.wait_for(lambda s: s.name == "queued-at-exit", timeout=10)
