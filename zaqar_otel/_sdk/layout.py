"""Everything zaqar-otel reads of the OTel SDK's private layout, in one place
(with ``resource.py``'s Resource): only the seam, ``zaqar_otel._sdk``, holds
these, and zaqar-otel's own code calls the functions here, never a private.

Each look-up checks the layout it expects (the one of SDK 1.45) and returns
None when it differs, so that every caller can fall back to the SDK's public
path instead of failing or silently dropping spans:

* ``BatchSpanProcessor``'s queue (``_batch_processor._queue``), to count
  spans dropped from a full queue; without it the SDK logs those itself;
  and its ``_batch_processor.emit``, what its ``on_end`` comes to for a
  sampled span (seen on a probe); without it, its ``on_end``;
* the batch processor's export thread (``_worker_thread``,
  ``_worker_awaken``, ``_shutdown``) and the provider's processors
  (``_active_span_processor._span_processors``), to stop that thread in a
  uwsgi master that forks without Python's at-fork hooks (``hook.prefork``);
  without them the thread runs on there, and a warning says what to set;
* the OTLP/HTTP exporter's parts (``_metrics``, ``_client``,
  ``_max_request_size``, ``_shutdown`` and ``_common``'s size check), for
  the exporter that encodes with ``otlp_encoding``; without them it exports
  through the SDK's own ``export`` and encoder; and its ``requests``
  session (``_client._transport._session``), whose environment settings
  are read once; without it requests reads them at every export;
* the OTLP/gRPC exporter's ``_translate_data`` hook, likewise;
* an exporter's ``_endpoint``, only to name the destination in log lines;
* the semantic-convention modes the contrib instrumentations follow
  (``_semconv._OpenTelemetrySemanticConventionStability``, from
  ``OTEL_SEMCONV_STABILITY_OPT_IN``) and their schema URL (``_get_schema_url``),
  read once at set-up into ``Conventions``; without them the old (default)
  names, which is what instrumentations without that module give;
* ``Resource._attributes``, which a forked worker's Resource replaces to take
  an instance id of its own; without it the worker keeps its parent's;
* ``CompositePropagator._propagators``, to see that no propagator of a
  request's would find anything in it; without it every request is
  extracted;
* the SDK ``Span``'s and ``Tracer``'s fields and the ``ParentBased``
  sampler's delegates, for ``zaqar_otel._sdk.fast.recorder``'s leaner spans; without
  them every tracer is the SDK's own;
* the metrics API's stand-in provider (``_ProxyMeterProvider``), to see that
  no MeterProvider was set, so the SQLAlchemy instrumentation's connection
  counters record nothing; without it they keep their listeners.
* the API's current-context variable (``ContextVarsRuntimeContext``'s
  ``_current_context``) and the context key of the current span
  (``trace.propagation._SPAN_KEY``), for ``fast.recorder``'s tracer to read a
  parent span in one step; without them, ``get_current_span``;
* ``SpanContext``'s tuple layout (trace id, span id, is_remote, flags, trace
  state, is_valid), for ``fast.recorder`` to read a parent's fields in one
  unpacking and build a span's context as one tuple (checked against the
  API's own on probes); without it, ``SpanContext(...)`` and its properties.

Usage::

    parts = layout.http_parts(exporter)
    if parts is None:
        return super().export(spans)      # the SDK's own encoder
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)

#: The SDK release whose layout these look-ups were written against.
KNOWN_LAYOUT = "1.45"


def batch_queue(processor: Any) -> Sized | None:
    """The span queue of a ``BatchSpanProcessor``, or None."""
    queue = getattr(getattr(processor, "_batch_processor", None), "_queue", None)
    return queue if isinstance(queue, Sized) else None


def batch_emit(processor: Any) -> Callable[[Any], None] | None:
    """What ``BatchSpanProcessor.on_end`` hands a sampled span to (its batch
    processor's ``emit``), or None: then its own ``on_end``. Seen by what
    the SDK's ``on_end`` does (``_on_end_emits``), not by its text."""
    emit = getattr(getattr(processor, "_batch_processor", None), "emit", None)
    if not callable(emit) or not _on_end_emits():
        return None
    return emit  # type: ignore[no-any-return]


@functools.cache
def _on_end_emits() -> bool:
    """Whether the SDK's ``BatchSpanProcessor.on_end``, on a probe, hands a
    sampled span to its batch processor's ``emit`` exactly once, as it is,
    and an unsampled one to nothing (checked once)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    # Every argument given: the SDK then reads no OTEL_BSP_* variable, so an
    # invalid one is reported once, by settings, not again by this probe.
    probe = BatchSpanProcessor(Nowhere(), max_queue_size=4,
                               schedule_delay_millis=3_600_000,
                               max_export_batch_size=4,
                               export_timeout_millis=1_000)
    try:
        handed: list[Any] = []
        batch = getattr(probe, "_batch_processor", None)
        if batch is None:
            return False
        batch.emit = handed.append  # this probe's only
        spans = [ReadableSpan("probe", trace.SpanContext(
            1, 2, False, trace.TraceFlags(flags))) for flags in (1, 0)]
        for span in spans:
            BatchSpanProcessor.on_end(probe, span)
        return len(handed) == 1 and handed[0] is spans[0]
    except Exception:
        return False
    finally:
        probe.shutdown()


def span_processors(provider: Any) -> tuple[Any, ...] | None:
    """The span processors added to ``provider``, or None."""
    found = getattr(getattr(provider, "_active_span_processor", None),
                    "_span_processors", None)
    return found if isinstance(found, tuple) else None


def stop_batch_thread(processor: Any, timeout: float) -> bool:
    """Stop the export thread of a ``BatchSpanProcessor`` without shutting
    the processor down: a span it takes in another process (a forked
    worker) starts a thread there, as the SDK's pid check in ``emit`` does;
    in this one, spans wait in the queue until a flush. False where the
    layout differs or the thread did not end within ``timeout`` s (it then
    runs on)."""
    batch: Any = getattr(processor, "_batch_processor", None)
    thread = getattr(batch, "_worker_thread", None)
    awaken = getattr(batch, "_worker_awaken", None)
    if (not isinstance(thread, threading.Thread) or not isinstance(
            awaken, threading.Event) or getattr(batch, "_shutdown", None) is not False
            or not isinstance(getattr(batch, "_pid", None), int)
            or not callable(getattr(batch, "_at_fork_reinit", None))):
        return False
    if not thread.is_alive():
        return True
    # The worker's loop ends on _shutdown (a last export of what is queued);
    # emit() and force_flush() read _shutdown too: set back at once.
    batch._shutdown = True
    try:
        awaken.set()
        thread.join(timeout)
    finally:
        batch._shutdown = False
    awaken.clear()
    return not thread.is_alive()


def batch_max_queue_size(processor: Any) -> int | None:
    """The queue's capacity the SDK chose (default or ``OTEL_BSP_*``)."""
    size = getattr(getattr(processor, "_batch_processor", None),
                   "_max_queue_size", None)
    return size if isinstance(size, int) and size > 0 else None


def exporter_endpoint(exporter: Any) -> str | None:
    """The URL an SDK OTLP exporter sends to, for log lines."""
    endpoint = getattr(exporter, "_endpoint", None)
    return endpoint if isinstance(endpoint, str) and endpoint else None


@dataclass(frozen=True)
class HttpParts:
    """What ``otlp_http.OTLPSpanExporter.export`` uses of the SDK's exporter."""

    metrics: Any  # has export_operation(count) -> context manager
    client: Any  # has export(body) -> result with success, error, status_code
    max_request_size: int
    too_large: Callable[[bytes, int], bool]
    too_large_error: type[Exception]


def http_parts(exporter: Any) -> HttpParts | None:
    """The SDK OTLP/HTTP exporter's private parts, or None if laid out
    otherwise."""
    try:
        from opentelemetry.exporter.otlp.proto.http import _common

        metrics, client = exporter._metrics, exporter._client
        max_size = exporter._max_request_size
        if not isinstance(exporter._shutdown, bool):
            return None
        parts = HttpParts(metrics, client, max_size, _common._is_request_too_large,
                          _common.RequestPayloadTooLargeError)
    except (AttributeError, ImportError):
        return None
    if not (callable(getattr(metrics, "export_operation", None))
            and callable(getattr(client, "export", None))
            and isinstance(max_size, int)
            and callable(parts.too_large)
            and isinstance(parts.too_large_error, type)):
        return None
    return parts


def http_session(exporter: Any) -> Any | None:
    """The ``requests.Session`` an SDK OTLP/HTTP exporter posts with, or None."""
    session = getattr(getattr(getattr(exporter, "_client", None), "_transport", None),
                      "_session", None)
    try:
        import requests
    except ImportError:
        return None
    return session if isinstance(session, requests.Session) else None


def replace_http_transport(exporter: Any, transport: Any) -> bool:
    """Post the SDK OTLP/HTTP exporter's requests through ``transport``
    (closing the session's); False, and nothing changed, if its client has
    no transport of the SDK's interface."""
    try:
        from opentelemetry.exporter.http.transport._base import BaseHTTPTransport
    except ImportError:
        return False
    client: Any = getattr(exporter, "_client", None)
    if not isinstance(getattr(client, "_transport", None), BaseHTTPTransport):
        return False
    old, client._transport = client._transport, transport
    old.close()
    return True


def grpc_translates(exporter_class: type) -> bool:
    """Whether the SDK's OTLP/gRPC exporter encodes through ``_translate_data``."""
    return any(callable(vars(base).get("_translate_data"))
               for base in exporter_class.__mro__[1:])


def grpc_stub_made_here(exporter_class: type) -> bool:
    """Whether the SDK's OTLP/gRPC exporter makes its stub, kept in
    ``_client``, in ``_initialize_channel_and_stub`` (where
    ``otlp_grpc.OTLPSpanExporter`` wraps it to split a request refused as
    too large)."""
    return any(callable(vars(base).get("_initialize_channel_and_stub"))
               for base in exporter_class.__mro__[1:])


@dataclass(frozen=True)
class Conventions:
    """Which semantic-convention names the contrib instrumentations give, for
    HTTP and for databases (``OTEL_SEMCONV_STABILITY_OPT_IN``: ``http``,
    ``http/dup``, ``database``, ``database/dup``), as read once at set-up
    by ``conventions()`` and handed down to what names attributes.

    ``http_mode`` / ``database_mode`` are the instrumentations' own mode
    objects (``_semconv._StabilityMode``), for their attribute helpers; None
    on a layout without them (then their default names).
    """

    http_old: bool = True  # http.method, http.status_code, net.peer.name...
    http_new: bool = False  # http.request.method, url.path, server.address...
    database_old: bool = True  # db.system, db.statement, db.name
    database_new: bool = False  # db.system.name, db.query.text, db.namespace
    http_mode: Any = None
    database_mode: Any = None
    #: The schema URL of the HTTP conventions followed (the wsgi and requests
    #: instrumentations' scope's), None when unknown.
    schema_url: str | None = None

    def describe(self) -> str:
        """``http: stable, database: default`` (one word a signal)."""
        def word(old: bool, new: bool) -> str:
            return "dup" if old and new else "stable" if new else "default"

        return (f"http: {word(self.http_old, self.http_new)}, "
                f"database: {word(self.database_old, self.database_new)}")


#: Each signal's old names (no opt-in): also what a layout without the
#: contrib's ``_semconv`` gives.
OLD_CONVENTIONS = Conventions()
#: The stable names of both signals (``http,database``).
STABLE_CONVENTIONS = Conventions(http_old=False, http_new=True,
                                 database_old=False, database_new=True)


def conventions() -> Conventions:
    """The modes the contrib instrumentations of this process follow, read
    through their own ``_semconv`` helpers (which read
    ``OTEL_SEMCONV_STABILITY_OPT_IN`` once per process); on another layout
    ``OLD_CONVENTIONS``, the names instrumentations without it give."""
    try:
        from opentelemetry.instrumentation._semconv import (
            _get_schema_url,
            _OpenTelemetrySemanticConventionStability,
            _OpenTelemetryStabilitySignalType,
            _report_new,
            _report_old,
        )

        stability = _OpenTelemetrySemanticConventionStability
        stability._initialize()
        mode_of = stability._get_opentelemetry_stability_opt_in_mode
        http = mode_of(_OpenTelemetryStabilitySignalType.HTTP)
        database = mode_of(_OpenTelemetryStabilitySignalType.DATABASE)
        found = Conventions(
            http_old=bool(_report_old(http)), http_new=bool(_report_new(http)),
            database_old=bool(_report_old(database)),
            database_new=bool(_report_new(database)),
            http_mode=http, database_mode=database,
            schema_url=str(_get_schema_url(http)))
    except (ImportError, AttributeError, TypeError, ValueError):
        return OLD_CONVENTIONS
    if not (found.http_old or found.http_new) or not (
            found.database_old or found.database_new):
        return OLD_CONVENTIONS  # a mode reporting nothing: not the known layout
    return found


def stable_conventions() -> Conventions:
    """``STABLE_CONVENTIONS`` with the instrumentations' mode objects (for
    callers built without set-up: what the server span gave before the
    modes were followed), or without them on another layout."""
    try:
        from opentelemetry.instrumentation._semconv import (
            _get_schema_url,
            _StabilityMode,
        )

        return Conventions(http_old=False, http_new=True, database_old=False,
                           database_new=True, http_mode=_StabilityMode.HTTP,
                           database_mode=_StabilityMode.DATABASE,
                           schema_url=str(_get_schema_url(_StabilityMode.HTTP)))
    except (ImportError, AttributeError):
        return STABLE_CONVENTIONS


def resource_attributes_replaceable(resource: Any) -> bool:
    """Whether a Resource keeps its attributes where a subclass can swap them."""
    return isinstance(getattr(resource, "_attributes", None), Mapping)


def release(version: str) -> tuple[int, ...]:
    """A distribution's release as its first two numbers: ``0.66b1`` ->
    ``(0, 66)`` (-1 where a part has no digits), what a tested-release list
    names (the SDK's for the fast path, the SQLAlchemy instrumentation's)."""
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits) if digits else -1)
    return tuple(parts)


def fast_path_off(what: str) -> None:
    """One line: this SDK differs, the SDK's own path is used for ``what``."""
    from opentelemetry.sdk.version import __version__ as sdk_version

    LOG.warning("zaqar-otel: the OpenTelemetry SDK %s is laid out differently "
                "from %s: %s; spans still flow through the SDK's own code",
                sdk_version, KNOWN_LAYOUT, what)


#: The fields of an SDK span and tracer that ``zaqar_otel._sdk.fast.recorder`` sets
#: and reads, exactly (a field more or less: the SDK's own tracers).
SPAN_FIELDS = frozenset((
    "_attributes", "_context", "_end_time", "_events", "_instrumentation_info",
    "_instrumentation_scope", "_kind", "_limits", "_links", "_lock", "_name",
    "_parent", "_record_end_metrics", "_record_exception", "_resource",
    "_sampler", "_set_status_on_exception", "_span_processor", "_start_time",
    "_status", "_trace_config"))
TRACER_FIELDS = frozenset((
    "_instrumentation_scope", "_span_limits", "_tracer_config", "_tracer_metrics",
    "id_generator", "instrumentation_info", "resource", "sampler",
    "span_processor"))
_SPAN_METHODS = ("_add_event", "_add_link", "_new_links", "_readable_span",
                 "_is_enabled")
_span_layout: list[bool] = []


def span_layout_known() -> bool:
    """Whether a span and a tracer of this SDK have exactly the fields
    ``zaqar_otel._sdk.fast.recorder`` was written for (checked once, on a probe)."""
    if not _span_layout:
        try:
            from opentelemetry.sdk import trace as sdk_trace
            from opentelemetry.sdk.trace import sampling

            probe = sdk_trace.TracerProvider(sampler=sampling.ALWAYS_ON,
                                             shutdown_on_exit=False)
            tracer = probe.get_tracer("zaqar_otel._sdk.layout")
            span = tracer.start_span("probe")
            known = (type(tracer) is sdk_trace.Tracer
                     and isinstance(span, sdk_trace.Span)
                     and set(vars(span)) == SPAN_FIELDS
                     and set(vars(tracer)) == TRACER_FIELDS
                     and all(callable(getattr(span, m, None)) or
                             callable(getattr(tracer, m, None))
                             for m in _SPAN_METHODS))
        except Exception:
            known = False
        _span_layout.append(known)
        if not known:
            fast_path_off("spans are recorded by the SDK's own Span")
    return _span_layout[0]


def quiet_tracer_metrics() -> type | None:
    """The class of a tracer's span metrics when they are off (the SDK's
    ``NoOpTracerMetrics``, whose ``start_span`` records nothing and hands
    back the SDK's function that does nothing), or None when this SDK has
    none such: then its ``start_span`` is called for every span."""
    try:
        from opentelemetry.sdk.trace import _tracer_metrics
        from opentelemetry.sdk.trace.sampling import Decision

        cls = _tracer_metrics.NoOpTracerMetrics
        end = cls().start_span(None, Decision.RECORD_AND_SAMPLE)
        if end is _tracer_metrics.noop and end() is None and isinstance(cls, type):
            return cls
    except (AttributeError, ImportError, TypeError):
        pass
    return None


def quiet_processor(cls: type) -> bool:
    """Whether a span processor of ``cls`` does nothing when a span starts
    and when it is ending: its ``on_start`` and ``_on_ending`` are the SDK's
    ``SpanProcessor``'s or ``BatchSpanProcessor``'s, which are empty in the
    releases the fast path runs on (``fast.check`` gates on them). Known by
    which functions they are, not by their text."""
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return (getattr(cls, "on_start", None) in (SpanProcessor.on_start,
                                                BatchSpanProcessor.on_start)
            and getattr(cls, "_on_ending", None) in (
                SpanProcessor._on_ending, BatchSpanProcessor._on_ending))


def follows_parent(sampler: Any) -> bool:
    """Whether ``sampler`` is the SDK's ``ParentBased`` with its default
    delegates: a child of a valid parent takes the parent's sampled flag
    and trace state, nothing else."""
    try:
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

        return (type(sampler) is ParentBased
                and sampler._remote_parent_sampled is ALWAYS_ON
                and sampler._local_parent_sampled is ALWAYS_ON
                and sampler._remote_parent_not_sampled is ALWAYS_OFF
                and sampler._local_parent_not_sampled is ALWAYS_OFF)
    except (AttributeError, ImportError):
        return False


def global_meter_provider_set() -> bool:
    """Whether the process has set a global MeterProvider (if not, the API's
    proxy stands in, recording nothing until one is set); True when this
    API is laid out so that it cannot tell."""
    try:
        from opentelemetry.metrics import get_meter_provider
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:
        return True
    return not isinstance(get_meter_provider(), _ProxyMeterProvider)


def composite_parts(textmap: Any) -> tuple[Any, ...] | None:
    """The propagators of a ``CompositePropagator``, in order, or None."""
    from opentelemetry.propagators.composite import CompositePropagator

    parts = getattr(textmap, "_propagators", None)
    if type(textmap) is not CompositePropagator or not isinstance(parts, (list, tuple)):
        return None
    return tuple(parts)


def current_context_slot() -> tuple[ContextVar[Any], str] | None:
    """``(the ContextVar holding the current Context, the current span's key
    in it)``: what ``trace.get_current_span()`` comes to, or None when the
    API keeps its context otherwise (another runtime context, another key)."""
    try:
        from opentelemetry import context as context_api
        from opentelemetry import trace
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
        from opentelemetry.trace.propagation import _SPAN_KEY

        runtime = context_api._RUNTIME_CONTEXT
        variable = getattr(runtime, "_current_context", None)
        if type(runtime) is not ContextVarsRuntimeContext or not isinstance(
                variable, ContextVar):
            return None
        probe = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        if dict(trace.set_span_in_context(probe, context_api.Context())) != {
                _SPAN_KEY: probe}:
            return None
        return variable, _SPAN_KEY
    except (AttributeError, ImportError):
        return None


def current_span_reader() -> Callable[[], Any]:
    """``trace.get_current_span`` without a context, in one step where the
    API is laid out for it (``current_context_slot``): read on every Redis
    command, traced or not."""
    from opentelemetry import trace

    slot = current_context_slot()
    if slot is None:
        return trace.get_current_span
    variable, span_key = slot
    invalid = trace.INVALID_SPAN
    span_abc = trace.Span
    # Classes found to be spans: the ABC's isinstance is a Python call of its
    # own. A class stays a span (registering only adds); a few a process.
    span_classes = {type(invalid)}

    def current_span() -> Any:
        span = variable.get().get(span_key, invalid)
        cls = type(span)
        if cls in span_classes:
            return span
        if isinstance(span, span_abc):
            if len(span_classes) < 64:
                span_classes.add(cls)
            return span
        return invalid

    return current_span


@functools.cache
def current_span_switch() -> tuple[Callable[[Any], Any], Callable[[Any], None]]:
    """``(enter, leave)``: ``enter(span)`` is ``context.attach(
    trace.set_span_in_context(span))`` and ``leave(token)`` is
    ``context.detach(token)``, each in one step where the API is laid out
    for it (``current_context_slot``, checked on a probe), else those calls.
    A token ``leave`` cannot reset goes to the API's ``detach``, which logs
    it as it always does. Taken by every trace point (probed once a
    process)."""
    from opentelemetry import context as context_api
    from opentelemetry import trace

    def stock_enter(span: Any) -> Any:
        return context_api.attach(trace.set_span_in_context(span))

    stock = (stock_enter, context_api.detach)
    slot = current_context_slot()
    if slot is None:
        return stock
    variable, span_key = slot
    make_context = context_api.Context

    def enter(span: Any) -> Any:
        # What set_span_in_context makes: a copy with the span's key set.
        return variable.set(make_context({**variable.get(), span_key: span}))

    def leave(token: Any) -> None:
        try:
            variable.reset(token)
        except Exception:  # another context's token: the API's own line
            context_api.detach(token)

    try:
        probe = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        before = context_api.get_current()
        token = enter(probe)
        try:
            same = (trace.get_current_span() is probe
                    and context_api.get_current() == trace.set_span_in_context(
                        probe, before)
                    and type(context_api.get_current()) is make_context)
        finally:
            leave(token)
        same = same and context_api.get_current() is before
    except Exception:
        same = False
    return (enter, leave) if same else stock


def suppression_slot() -> tuple[ContextVar[Any], tuple[str, str]] | None:
    """``(the ContextVar holding the current Context, the keys that suppress
    instrumentation)``: ``not is_instrumentation_enabled()`` comes to
    ``any(variable.get().get(key) for key in keys)``, read in one step
    instead of the API's four calls per key; None when the API keeps its
    context otherwise or the check reads other keys (checked on probes)."""
    try:
        from opentelemetry import context as context_api
        from opentelemetry.instrumentation import utils

        slot = current_context_slot()
        keys = (utils._SUPPRESS_INSTRUMENTATION_KEY,
                utils._SUPPRESS_INSTRUMENTATION_KEY_PLAIN)
        if slot is None or not all(isinstance(k, str) for k in keys):
            return None
        variable = slot[0]
        for probe in (context_api.Context(), *(
                context_api.set_value(k, True, context_api.Context()) for k in keys)):
            token = variable.set(probe)
            try:
                fast = any(variable.get().get(k) for k in keys)
                if fast is utils.is_instrumentation_enabled():
                    return None
            finally:
                variable.reset(token)
        return variable, keys
    except (AttributeError, ImportError, TypeError):
        return None


def _suppressing() -> Callable[[Any], Any]:
    from opentelemetry.context import set_value

    try:
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as key
    except ImportError:  # the plain key, which is_instrumentation_enabled reads too
        key = "suppress_instrumentation"
    return functools.partial(set_value, key, True)


#: ``suppressed(context)``: ``context`` with instrumentation suppressed, as
#: the instrumentations' ``suppress_instrumentation()`` sets it (the API's
#: private context key), without attaching it.
suppressed = _suppressing()


def local_span_context_maker() -> Callable[[int, int, Any, Any], Any] | None:
    """``make(trace_id, span_id, trace_flags, trace_state)``: the
    ``SpanContext(trace_id, span_id, is_remote=False, ...)`` of a local span,
    built as the tuple ``(trace_id, span_id, is_remote, trace_flags,
    trace_state, is_valid)`` the API's ``__new__`` builds, in one step; or
    None when the API builds it otherwise (checked against it on probes)."""
    try:
        from opentelemetry.trace import SpanContext, TraceFlags, TraceState

        default_flags = SpanContext(1, 1, False).trace_flags
        default_state = SpanContext(1, 1, False).trace_state
        new = tuple.__new__
        trace_max, span_max = (1 << 128) - 1, (1 << 64) - 1

        def make(trace_id: int, span_id: int, trace_flags: Any,
                 trace_state: Any) -> Any:
            return new(SpanContext, (
                trace_id, span_id, False,
                default_flags if trace_flags is None else trace_flags,
                default_state if trace_state is None else trace_state,
                0 < trace_id <= trace_max and 0 < span_id <= span_max))

        state = TraceState([("k", "v")])
        for ids in ((1, 2), (0, 2), (1, 0), (trace_max + 1, 2), (1, span_max + 1),
                    (trace_max, span_max)):
            for flags, trace_state in ((TraceFlags(3), state), (None, None)):
                made = make(*ids, flags, trace_state)
                real = SpanContext(*ids, is_remote=False, trace_flags=flags,
                                   trace_state=trace_state)
                if not (type(real) is SpanContext and tuple(made) == tuple(real)
                        and made.is_valid is real.is_valid
                        and made.trace_state is real.trace_state
                        and made.trace_flags == real.trace_flags
                        and made.is_remote is real.is_remote is False
                        and (made.trace_id, made.span_id) == ids):
                    return None
        return make
    except (AttributeError, ImportError, TypeError, ValueError):
        return None
