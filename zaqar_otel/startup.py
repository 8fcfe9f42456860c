"""The start-up hook: all of zaqar-otel's global state lives here.

``install()`` hooks into Zaqar before it builds anything: Zaqar's own
OSProfiler start-up (``zaqar.transport.middleware.profile``) is replaced by
``setup(conf)``, and the WSGI driver's middleware chain gets
``TracingMiddleware`` outermost. ``setup(conf)`` then, once per process:

* builds the TracerProvider (Resource, parent-based ``RequestSampler``,
  BatchSpanProcessor, exporter), or reuses an SDK provider that is already
  installed (``opentelemetry-instrument``);
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
untraced::

    from zaqar_otel import startup
    startup.install()          # before zaqar.bootstrap.Bootstrap(conf)
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from oslo_config import cfg

import zaqar_otel
from zaqar_otel import (
    _sdk,
    logs,
    metrics,
    patching,
    redact,
    sampling,
    settings,
    tracepoints,
)
from zaqar_otel._sdk import layout, resource
from zaqar_otel.backends import instrumentors
from zaqar_otel.entry import http_attributes, lifecycle, wsgi_middleware
from zaqar_otel.export import processor
from zaqar_otel.messaging import operations
from zaqar_otel.metrics.spans import SpanCounts
from zaqar_otel.propagation import env_guard, log_guard, propagator

LOG = logging.getLogger(__name__)

DEFAULT_PROPAGATORS = env_guard.DEFAULT


@dataclass
class _State:
    settings: settings.Settings
    provider: Any = None
    tracer: trace.Tracer | None = None
    entry: lifecycle.Entry | None = None  # once tracing is on
    metrics: metrics.Metrics | None = None  # once metrics are on
    drops: processor.DropCounter | None = None  # our span processor's counts
    # The semantic-convention modes (OTEL_SEMCONV_STABILITY_OPT_IN) the
    # instrumentations follow, read once: every name zaqar-otel gives follows.
    conventions: layout.Conventions = layout.OLD_CONVENTIONS
    owns_provider: bool = False
    # What set-up changed outside its own objects, to undo in teardown().
    undo: list[Callable[[], None]] = field(default_factory=list)


_state: _State | None = None
_lock = threading.Lock()
# What install() changed beyond patches (the log record factory).
_installed: list[Callable[[], None]] = []
# Providers set-up built, so that a set-up after teardown() builds its own
# instead of taking a shut-down one for the operator's.
_made: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


def hmac_keys() -> tuple[str, ...]:
    """Keys of the running configuration (the bridge's default keys)."""
    state = _state
    return state.settings.hmac_keys if state and state.settings.enabled else ()


def enabled() -> bool:
    """Whether ``setup`` turned tracing on in this process."""
    return bool(_state and _state.settings.enabled)


# -- setup ---------------------------------------------------------------------


def setup(conf: cfg.ConfigOpts) -> bool:
    """Configure tracing from a parsed zaqar.conf; True if tracing is on.

    Idempotent: the first call decides, later calls return its answer.
    """
    global _state
    with _lock:
        if _state is not None:
            return _state.settings.enabled
        # The OTEL_EXPORTER_OTLP_* passwords and header values, masked in
        # every line that could quote them, whatever characters they hold.
        redact.remember_environment()
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
            redact.remember(*redact.credentials(str(args.get("endpoint") or "")))
            found = args.get("headers")
            redact.remember(*(found.values() if isinstance(found, dict) else ()))
        _state = _State(loaded)
        for line in loaded.problems:
            LOG.warning("zaqar-otel: %s", line)
        if problem is None and loaded.enabled:
            problem = _unusable_endpoint(loaded)
        if problem is None and loaded.enabled:
            try:
                _start(_state, conf)
                return True
            except Exception as exc:
                problem = f"could not start it: {exc}"
            _state = _State(settings.Settings(enabled=False))
        if problem is not None:
            LOG.error("zaqar-otel: tracing is off: %s", redact.userinfo(problem))
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


def _start(state: _State, conf: cfg.ConfigOpts) -> None:
    # The SDK's exporters quote a malformed OTEL_EXPORTER_OTLP_HEADERS item.
    state.undo.append(redact.hide_logged_secrets())
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider) and current not in _made:
        LOG.info("zaqar-otel: using the TracerProvider already installed")
        state.provider = current
    else:
        state.provider, state.drops = _provider(state.settings)
        state.owns_provider = True
        _made.add(state.provider)
        # The API sets its global once per process; after a teardown() the
        # new provider is handed down explicitly (tracer, instrumentors).
        if not isinstance(current, TracerProvider):
            trace.set_tracer_provider(state.provider)
        if len(_made) == 1:
            atexit.register(shutdown)
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
    propagate.set_global_textmap(_propagator(
        os.environ.get("OTEL_PROPAGATORS") or DEFAULT_PROPAGATORS,
        state.settings.hmac_keys))
    state.undo.append(log_guard.install())
    _start_tracepoints(state, conf)
    if state.settings.trace_wsgi:
        # Operation spans take message ids from what Zaqar renders.
        operations.capture_rendered()
    state.undo.extend(instrumentors.install(
        state.settings,
        instrumentors.Tracing(state.provider, state.tracer, state.entry,
                              state.conventions)))
    _start_metrics(state)
    if not state.settings.trace_wsgi:
        LOG.warning("zaqar-otel: [profiler] trace_wsgi_transport = false: no "
                    "request is traced; set it to true")
    LOG.info("zaqar-otel: tracing on, exporter %s", state.settings.exporter)


def _start_metrics(state: _State) -> None:
    conf = state.settings
    if conf.metrics is None:
        if conf.metrics_problem:
            LOG.error("zaqar-otel: metrics are off: %s", conf.metrics_off_because)
        else:
            LOG.info("zaqar-otel: metrics are off (%s)", conf.metrics_off_because)
        return
    # The spans' Resource (the operator's provider's, under
    # opentelemetry-instrument), so metrics and traces name one process.
    found = getattr(state.provider, "resource", None)
    state.metrics = metrics.start(
        conf.metrics, found if isinstance(found, Resource)
        else resource.for_process(conf.service_name), state.conventions)
    if state.drops is not None:
        # Spans dropped and exported, beside Zaqar's metrics: an operator
        # alerts on zaqar_otel.spans.dropped (invariant 7).
        state.metrics.pipeline.watch(SpanCounts(state.drops))
    # The messages' ages come from what Zaqar renders, not a second parse.
    operations.capture_rendered()
    LOG.info("zaqar-otel: metrics on, exporter %s every %g s",
             conf.metrics.exporter, conf.metrics.export_interval_millis / 1000)


def _propagator(names: str, hmac_keys: tuple[str, ...]) -> CompositePropagator:
    # Built from entry points as opentelemetry.propagate does at import, so
    # an operator's OTEL_PROPAGATORS still wins over our default. The
    # OSProfiler propagator gets the configured keys handed down.
    chosen = []
    for name in (n.strip() for n in names.split(",")):
        if name in ("", "none"):
            continue
        found = entry_points(group=env_guard.GROUP, name=name)
        if not found:  # unknown names: dropped and reported at import
            continue
        factory = next(iter(found)).load()
        if isinstance(factory, type) and issubclass(
                factory, propagator.OSProfilerPropagator):
            chosen.append(factory(hmac_keys))
        else:
            chosen.append(factory())
    return CompositePropagator(chosen)


def _provider(conf: settings.Settings
              ) -> tuple[TracerProvider, processor.DropCounter | None]:
    # The fast path or the SDK's own ([opentelemetry] fast_path), behind
    # one seam: the same spans either way.
    path = _sdk.choose(conf)
    LOG.info("zaqar-otel: spans take the %s path", path.describe())
    return _sdk.tracer_provider(
        conf, path,
        resource=resource.for_process(conf.service_name),
        sampler=sampling.RequestSampler(conf.sample_ratio),
        id_generator=tracepoints.OSProfilerIdGenerator(),
        # Every limit given (zaqar.conf, then OTEL_*, checked by settings):
        # SpanLimits then reads no variable, and fails on none.
        span_limits=SpanLimits(**conf.span_limits))


def _start_tracepoints(state: _State, conf: cfg.ConfigOpts) -> None:
    from osprofiler import notifier, profiler
    from osprofiler import sqlalchemy as osprofiler_sqlalchemy

    # Its statement/params trace points would duplicate the sqlalchemy
    # instrumentor's spans and carry bound values.
    osprofiler_sqlalchemy.disable()
    state.undo.append(osprofiler_sqlalchemy.enable)
    patching.patch(profiler, "trace_cls", _trace_cls_without_args)
    forward = _osprofiler_driver(state.settings.connection_string, conf)
    skip = () if state.settings.trace_pooling else ("pooling_",)
    assert state.tracer is not None  # made by _start first
    previous_notifier = notifier.get()
    state.undo.append(lambda: notifier.set(previous_notifier))
    notifier.set(tracepoints.Notifier(state.tracer, forward=forward,
                                      skip_prefixes=skip))
    if forward is None:
        # No other driver needs osprofiler's payloads: Zaqar's trace_cls
        # methods make their spans directly (the notifier still takes any
        # trace point that comes through osprofiler's own start/stop).
        points = tracepoints.TracePoints(state.tracer, skip_prefixes=skip)
        patching.patch(profiler, "trace", tracepoints.direct_trace(points))
        state.undo.append(points.close)


def _trace_cls_without_args(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def trace_cls(name: str, *args: Any, **kwargs: Any) -> Any:
        # Call args are never exported (invariant 4); hiding them here also
        # spares osprofiler rendering them for every call.
        kwargs["hide_args"] = True
        kwargs["hide_result"] = True
        return original(name, *args, **kwargs)

    return trace_cls


def _osprofiler_driver(
    connection_string: str, conf: cfg.ConfigOpts
) -> Callable[[dict[str, Any]], None] | None:
    """osprofiler's own driver for a non-OTLP connection_string, else None."""
    scheme = connection_string.partition("://")[0]
    # messaging:// is the stock default, unusable without oslo.messaging
    # context; otlp:// is osprofiler's OTLP driver, which we replace.
    if scheme in ("", "messaging", "otlp"):
        return None
    from osprofiler import notifier

    return notifier.create(connection_string, context=None, project="Zaqar",
                           service="Zaqar-server", host=socket.gethostname(),
                           conf=conf)


# -- shutdown ------------------------------------------------------------------


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop the exporter within ``timeout`` (default: the option).

    True if everything was flushed in time. Runs once; later calls are no-ops.
    """
    return _flush(_state, timeout)


def _flush(state: _State | None, timeout: float | None) -> bool:
    if state is None:
        return True
    limit = state.settings.shutdown_timeout if timeout is None else timeout
    started = time.monotonic()
    measured = state.metrics
    if measured is not None and not measured.pipeline.shutdown(limit):
        LOG.warning("zaqar-otel: the last metrics export did not end within "
                    "shutdown_timeout (%.1f s)", limit)
    if not state.owns_provider or state.provider is None:
        return True
    provider, state.provider = state.provider, None
    limit = max(0.0, limit - (time.monotonic() - started))
    # The SDK's shutdown waits for the exporter's own timeout and retries;
    # run it aside and stop waiting at our limit.
    worker = threading.Thread(target=provider.shutdown, name="zaqar-otel-shutdown",
                              daemon=True)
    try:
        worker.start()
    except RuntimeError:
        # Python 3.12.0-3.12.2 start no thread from atexit (CPython
        # gh-113964): flush on this thread, within the same limit.
        if provider.force_flush(int(limit * 1000)):
            return True
        LOG.warning("zaqar-otel: spans not exported within shutdown_timeout "
                    "(%.1f s) were dropped", limit)
        return False
    worker.join(limit)
    if worker.is_alive():
        LOG.warning("zaqar-otel: spans not exported within shutdown_timeout "
                    "(%.1f s) were dropped", limit)
        return False
    return True


# -- hooking into Zaqar --------------------------------------------------------


def _profile_setup(original: Callable[..., Any]) -> Callable[..., Any]:
    def profile_setup(conf: cfg.ConfigOpts, binary: str, host: str) -> None:
        # Instead of osprofiler's init_from_conf: no tracing unless enabled,
        # and no error for the stock messaging:// connection string.
        setup(conf)

    return profile_setup


def _install_wsgi_tracer(original: Callable[..., Any]) -> Callable[..., Any]:
    def install_wsgi_tracer(app: Any, conf: cfg.ConfigOpts) -> Any:
        return app  # TracingMiddleware, outermost, replaces osprofiler's

    return install_wsgi_tracer


def _init_middleware(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def init_middleware(driver: Any) -> None:
        falcon_app = driver.app
        state = _state
        tracer, entry = (state.tracer, state.entry) if state else (None, None)
        traced = bool(state and state.settings.trace_wsgi and tracer and entry)
        recorder = state.metrics.recorder if state and state.metrics else None
        if traced or recorder is not None:
            falcon_app.add_middleware(operations.MessagingSpans(
                tracer if traced else None, metrics=recorder))
        original(driver)
        if not traced and recorder is None:
            return
        # Metrics alone (trace_wsgi_transport = false): measured, not traced.
        conventions = state.conventions if state else layout.OLD_CONVENTIONS
        driver.app = wsgi_middleware.TracingMiddleware(
            driver.app, entry if traced else None,
            wsgi_middleware.falcon_route_of(falcon_app), metrics=recorder,
            http=http_attributes.HttpAttributes(conventions) if traced else None)

    return init_middleware


def _load_storage_driver(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def load_storage_driver(conf: cfg.ConfigOpts, cache: Any, storage_type: Any = None,
                            control_mode: bool = False,
                            control_driver: Any = None) -> Any:
        # Zaqar 23 returns None (and the server dies) when profiling is on
        # but trace_message_store / trace_management_store is off: load the
        # driver untraced in that case, as Zaqar means to.
        traced = (conf.profiler.trace_management_store if control_mode
                  else conf.profiler.trace_message_store)
        if not conf.profiler.enabled or traced:
            return original(conf, cache, storage_type, control_mode, control_driver)
        return _load_untraced(conf, cache, storage_type, control_mode, control_driver)

    return load_storage_driver


def _load_untraced(conf: cfg.ConfigOpts, cache: Any, storage_type: Any,
                   control_mode: bool, control_driver: Any) -> Any:
    import stevedore
    from zaqar.common import errors

    mode = "control" if control_mode else "data"
    storage_type = storage_type or (conf["drivers"].management_store if control_mode
                                    else conf["drivers"].message_store)
    args = (conf, cache) if control_driver is None else (conf, cache, control_driver)
    try:
        return stevedore.DriverManager(
            namespace=f"zaqar.{mode}.storage", name=storage_type,
            invoke_on_load=True, invoke_args=args).driver
    except Exception as exc:
        LOG.exception('Failed to load "zaqar.%s.storage" driver for "%s"',
                      mode, storage_type)
        raise errors.InvalidDriver(exc) from exc


def install() -> None:
    """Hook into Zaqar's start-up; call before Zaqar's Bootstrap is built."""
    from zaqar.storage import utils as storage_utils
    from zaqar.transport.middleware import profile
    from zaqar.transport.wsgi import driver

    if not _installed:
        # Before Zaqar sets up oslo.log: every line it logs has the fields.
        _installed.append(logs.install())
    patching.patch(profile, "setup", _profile_setup)
    patching.patch(profile, "install_wsgi_tracer", _install_wsgi_tracer)
    patching.patch(driver.Driver, "_init_middleware", _init_middleware)
    patching.patch(storage_utils, "load_storage_driver", _load_storage_driver)


def uninstall() -> None:
    """Undo ``install()`` and ``setup()`` completely (see ``teardown``)."""
    teardown()


def teardown(timeout: float | None = None) -> bool:
    """Undo everything ``install()`` and ``setup()`` did, in this process.

    Spans are flushed (as ``shutdown``), every patch and instrumentor is
    undone, the propagator, OSProfiler's notifier and its SQLAlchemy trace
    points are put back; a later ``install()`` and ``setup(conf)`` start
    afresh with the new configuration. True if everything was flushed.
    """
    global _state
    with _lock:
        state, _state = _state, None
        flushed = _flush(state, timeout)
        if state is not None:
            instrumentors.uninstall(state.undo)
        patching.unpatch_all()
        while _installed:
            _installed.pop()()
    return flushed
