"""The start-up hook: zaqar-otel in Zaqar's process.

``install()`` hooks into Zaqar before it builds anything: Zaqar's own
OSProfiler start-up (``zaqar.transport.middleware.profile``) is replaced by
``setup(conf)``, and the WSGI driver's middleware chain gets
``TracingMiddleware`` outermost. ``setup(conf)`` then, once per process:

* builds the TracerProvider (Resource, parent-based
  ``sampling.request_sampler``, BatchSpanProcessor, exporter), or reuses an
  SDK provider that is already installed (``opentelemetry-instrument``);
* sets the global propagator (``OTEL_PROPAGATORS``, else tracecontext,
  osprofiler), and makes what the API's propagators log about a request's
  headers inert (``propagation.log_guard``);
* turns OSProfiler trace points into OTel spans (``tracepoints.Notifier``;
  Zaqar's ``trace_cls`` methods directly, ``tracepoints.TracePoints``, unless
  another osprofiler driver needs the payloads), never with call args;
* installs the instrumentors the ``[profiler] trace_*`` options enable;
* with ``[opentelemetry] metrics``, starts Zaqar's metrics
  (``zaqar_otel.metrics``): every request is measured, traced or not.

``install()`` also gives every log record the ``otel_trace_id`` and
``otel_span_id`` fields (``zaqar_otel.logs``), so that Zaqar's log format
strings can name them whatever the configuration.

With ``[profiler] enabled = false`` it does none of this: nothing is patched
beyond the two start-up functions, signed headers are ignored. A broken
configuration is logged as one error naming the option, and Zaqar serves
untraced. The internals are in ``zaqar_otel.hook``; the process's state has
one owner (``hook.state.Hook``), held here.

Usage
-----

::

    from zaqar_otel import instrument

    instrument.install()       # before zaqar.bootstrap.Bootstrap(conf)
    # Zaqar's start-up calls instrument.setup(conf) itself
    ...
    instrument.shutdown()      # flush within [opentelemetry] shutdown_timeout
    instrument.teardown()      # or undo all of it (tests, the distro)

``zaqar-otel-server``, ``zaqar_otel.wsgi:application`` and the
``opentelemetry-instrument`` distro call ``install()`` for you.

API
---

* ``install()``: hook into Zaqar's start-up (idempotent).
* ``setup(conf)``: configure from a parsed zaqar.conf; True if tracing is
  on. The first call decides, later calls return its answer.
* ``shutdown(timeout=None)``: flush and stop the exporters within
  ``timeout`` (default: ``shutdown_timeout``); True if all was flushed.
* ``teardown(timeout=None)``: ``shutdown``, then undo everything
  ``install`` and ``setup`` did; a later ``install`` and ``setup`` start
  afresh.
* ``running()``: what the set-up in force built (``hook.state.Running``:
  its settings, provider, metrics), None before ``setup`` and after
  ``teardown``.
"""

from __future__ import annotations

from oslo_config import cfg

from zaqar_otel.hook import start, state

# The process's state, its one owner: empty until install() or setup().
_HOOK = state.Hook()


def install() -> None:
    """Hook into Zaqar's start-up; call before Zaqar's Bootstrap is built."""
    start.install(_HOOK, setup)


def setup(conf: cfg.ConfigOpts) -> bool:
    """Configure tracing from a parsed zaqar.conf; True if tracing is on.

    Idempotent: the first call decides, later calls return its answer.
    """
    return start.setup(_HOOK, conf)


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop the exporter within ``timeout`` (default: the option).

    True if everything was flushed in time. Runs once; later calls are no-ops.
    """
    return start.shutdown(_HOOK, timeout)


def teardown(timeout: float | None = None) -> bool:
    """Undo everything ``install()`` and ``setup()`` did, in this process.

    Spans are flushed (as ``shutdown``), every patch and instrumentor is
    undone, the propagator, OSProfiler's notifier and its SQLAlchemy trace
    points are put back; a later ``install()`` and ``setup(conf)`` start
    afresh with the new configuration. True if everything was flushed.
    """
    return start.teardown(_HOOK, timeout)


def running() -> state.Running | None:
    """What the set-up in force built; None before ``setup`` and after
    ``teardown``."""
    return _HOOK.running


__all__ = ["install", "running", "setup", "shutdown", "teardown"]
