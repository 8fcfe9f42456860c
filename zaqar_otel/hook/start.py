"""Set-up in order: ``install``, ``setup``, ``shutdown``, ``teardown``.

Each takes the process's ``state.Hook`` (``zaqar_otel.instrument`` holds
it) and reads or changes nothing else of the process's: ``setup`` builds a
``state.Running`` and hands its parts down to what needs them.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from oslo_config import cfg

import zaqar_otel
from zaqar_otel import logs, patching, redact, settings, switches
from zaqar_otel._sdk import layout, loggers
from zaqar_otel.backends import instrumentors
from zaqar_otel.entry import lifecycle
from zaqar_otel.hook import osprofiler, prefork, propagators, sdk, zaqar
from zaqar_otel.hook.state import Hook, Running
from zaqar_otel.messaging import operations
from zaqar_otel.propagation import env_guard, log_guard

LOG = logging.getLogger(__name__)


def install(hook: Hook, setup: Callable[[cfg.ConfigOpts], object]) -> None:
    """Hook into Zaqar's start-up: Zaqar's OSProfiler set-up becomes
    ``setup(conf)``; every log record gets the trace id fields."""
    if not hook.installed:
        # Before Zaqar sets up oslo.log: every line it logs has the fields.
        hook.installed.append(logs.install())
    zaqar.install(hook, setup)


def setup(hook: Hook, conf: cfg.ConfigOpts) -> bool:
    """Configure tracing from a parsed zaqar.conf; True if tracing is on.

    Idempotent: the first call decides, later calls return its answer.
    """
    with hook.lock:
        if hook.running is not None:
            return hook.running.settings.enabled
        # The OTEL_EXPORTER_OTLP_* passwords and header values, masked in
        # every line that could quote them, whatever characters they hold.
        hook.secrets.remember_environment()
        if env_guard.problem():
            LOG.error("zaqar-otel: %s", env_guard.problem())
        # Errors are logged outside the except blocks: oslo.log would append
        # the exception (the same text again) to a line logged inside one.
        problem = None
        try:
            loaded = settings.load(conf)
        except settings.ConfigError as exc:
            loaded, problem = settings.Settings(enabled=False), str(exc)
        # zaqar.conf's endpoint password and header values, likewise.
        for args in (loaded.exporter_args,
                     loaded.metrics.exporter_args if loaded.metrics else {}):
            hook.secrets.remember(*redact.credentials(str(args.get("endpoint") or "")))
            found = args.get("headers")
            hook.secrets.remember(*(found.values() if isinstance(found, dict) else ()))
        hook.running = Running(loaded)
        for line in loaded.problems:
            LOG.warning("zaqar-otel: %s", line)
        if problem is None and loaded.enabled:
            problem = _unusable_endpoint(loaded)
        if problem is None and loaded.enabled:
            try:
                _start(hook, hook.running, conf)
                return True
            except Exception as exc:
                problem = f"could not start it: {exc}"
            hook.running = Running(settings.Settings(enabled=False))
        if problem is not None:
            LOG.error("zaqar-otel: tracing is off: %s", hook.secrets.mask(problem))
        else:
            LOG.info("zaqar-otel: [profiler] enabled = false, nothing is traced")
        return False


def _unusable_endpoint(loaded: settings.Settings) -> str | None:
    """The line naming an endpoint no URL parser takes (a raw ``[`` in a
    password of ``OTEL_EXPORTER_OTLP_ENDPOINT``: the SDK's exporter raises
    "Invalid IPv6 URL", naming nothing), else None."""
    if loaded.exporter not in ("otlp_http", "otlp_grpc"):
        return None
    found = settings.endpoint(loaded)
    try:
        urlsplit(found.url).port  # noqa: B018 - parsed for its ValueError
    except ValueError:
        return (f"{found.source} is not a valid URL (not shown: it may hold a "
                f"password; write [ ] @ / ? # % and space in a password as "
                f"%5B %5D %40 %2F %3F %23 %25 %20)")
    return None


def _start(hook: Hook, state: Running, conf: cfg.ConfigOpts) -> None:
    # The SDK's exporters quote a malformed OTEL_EXPORTER_OTLP_HEADERS item.
    state.undo.append(loggers.hide_secrets(hook.secrets))
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider) and current not in hook.made:
        LOG.info("zaqar-otel: using the TracerProvider already installed")
        state.provider = current
    else:
        state.provider, state.drops = sdk.provider(state.settings)
        state.owns_provider = True
        hook.made.add(state.provider)
        # The API sets its global once per process; after a teardown() the
        # new provider is handed down explicitly (tracer, instrumentors).
        if not isinstance(current, TracerProvider):
            trace.set_tracer_provider(state.provider)
        if len(hook.made) == 1:
            atexit.register(shutdown, hook)
    state.conventions = layout.conventions()
    LOG.info("zaqar-otel: semantic conventions %s (OTEL_SEMCONV_STABILITY_OPT_IN)",
             state.conventions.describe())
    # The scope is zaqar-otel's, so its version is ours, not Zaqar's.
    state.tracer = state.provider.get_tracer(
        "zaqar_otel", zaqar_otel.__version__,
        schema_url=state.conventions.schema_url)
    previous_textmap = propagate.get_global_textmap()
    state.undo.append(lambda: propagate.set_global_textmap(previous_textmap))
    # One entry of requests for the process: WSGI and websocket share it.
    state.entry = lifecycle.Entry(
        state.tracer, state.settings.hmac_keys[0],
        state.settings.sample_ratio, state.settings.honor_w3c_sampled)
    propagate.set_global_textmap(propagators.textmap(
        os.environ.get(env_guard.VARIABLE) or env_guard.DEFAULT,
        state.settings.hmac_keys))
    state.undo.append(log_guard.install())
    osprofiler.start(state, conf)
    if state.settings.on(switches.WSGI) or state.settings.metrics is not None:
        # Operation spans take message ids, and metrics the messages' ages,
        # from what Zaqar renders, not a second parse.
        rendered = patching.Patches()
        operations.capture_rendered(rendered)
        state.undo.append(rendered.undo)
    state.undo.extend(instrumentors.install(
        state.settings,
        instrumentors.Tracing(state.provider, state.tracer, state.entry,
                              state.conventions,
                              state.settings.redis_command_spans)))
    sdk.start_metrics(state)
    if prefork.forks_without_hooks():
        # Its workers would hang at their fork (hook/prefork.py).
        prefork.stop_threads(state)
    if not state.settings.on(switches.WSGI):
        LOG.warning("zaqar-otel: [profiler] trace_wsgi_transport = false: no "
                    "request is traced; set it to true")
    LOG.info("zaqar-otel: tracing on, exporter %s", state.settings.exporter)


def shutdown(hook: Hook, timeout: float | None = None) -> bool:
    """Flush and stop the exporter within ``timeout`` (default: the option).

    True if everything was flushed in time. Runs once; later calls are no-ops.
    """
    return sdk.flush(hook.running, timeout)


def teardown(hook: Hook, timeout: float | None = None) -> bool:
    """Undo everything ``install()`` and ``setup()`` did, in this process.

    Spans are flushed (as ``shutdown``), every patch and instrumentor is
    undone, the propagator, OSProfiler's notifier and its SQLAlchemy trace
    points are put back; a later ``install()`` and ``setup(conf)`` start
    afresh with the new configuration. True if everything was flushed.
    """
    with hook.lock:
        running, hook.running = hook.running, None
        flushed = sdk.flush(running, timeout)
        if running is not None:
            instrumentors.uninstall(running.undo)
        hook.patches.undo()
        while hook.installed:
            hook.installed.pop()()
    return flushed
