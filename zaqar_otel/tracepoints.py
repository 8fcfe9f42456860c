"""OSProfiler trace points (Zaqar's ``trace_cls`` controllers) as OTel spans.

osprofiler calls its notifier with a ``<name>-start`` payload when a traced
method is entered and ``<name>-stop`` when it returns. ``Notifier`` turns
each pair into an OTel span that is made current, so the redis / pymongo /
sqlalchemy instrumentor spans of that call nest under it. The span id is the
low 64 bits of the trace point's OSProfiler uuid (invariant 1), so outgoing
OSProfiler headers and any osprofiler driver fed alongside name the same span.

Open spans live in a context variable: per thread and per greenthread, never
a process-wide stack. Only the trace point name, the method name, the span
kind and the error type/message are exported: osprofiler's call args and
results never are (invariant 4)::

    from osprofiler import notifier
    notifier.set(Notifier(tracer_provider.get_tracer("zaqar_otel")))

When no other osprofiler driver needs the payloads, ``TracePoints`` makes
the spans of Zaqar's ``trace_cls`` methods directly, without osprofiler's
start/notify/stop layer (a uuid4, two timestamps rendered as text and two
payload dicts per call): set-up puts ``direct_trace`` in place of
``osprofiler.profiler.trace``, which ``trace_cls`` decorates each method
with. The span is the same (name, kind, attributes, error event and status,
parent, current while the method runs); its id is random, and the uuid
pushed on osprofiler's own stack is the one that maps back to it
(``idmap.uuid_from_span_id``), so invariant 1 holds both ways. A method
called with no osprofiler profiler on the thread (an untraced request) costs
one look-up::

    patches.patch(profiler, "trace", direct_trace(TracePoints(tracer)))
"""

from __future__ import annotations

import contextvars
import functools
import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from contextvars import Token
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanKind
from oslo_utils import reflection
from osprofiler import profiler as osprofiler_profiler

from zaqar_otel import patching, redact
from zaqar_otel._sdk import layout
from zaqar_otel._sdk.attributes import KeptAttributes
from zaqar_otel.propagation import idmap

LOG = logging.getLogger(__name__)

# Open trace point spans of this thread/greenthread, innermost last.
# None stands for a skipped trace point.
_open: contextvars.ContextVar[tuple[tuple[trace.Span, Token[Context]] | None, ...]] = (
    contextvars.ContextVar("zaqar_otel_open_tracepoints", default=()))
# The span id the next span started in this context must take.
_next_span_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "zaqar_otel_next_span_id", default=None)
# The trace id the next root span started in this context must take.
_next_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "zaqar_otel_next_trace_id", default=None)


def start_root(tracer: trace.Tracer, trace_id: int, name: str,
               **kwargs: Any) -> trace.Span:
    """``tracer.start_span`` for a root span of trace ``trace_id``.

    An OSProfiler trace's root caller (``openstack --os-profile``) exports no
    span; the span of the request it sent is the trace's root, and the trace
    keeps the caller's ``base_id``. Needs an ``OSProfilerIdGenerator`` (see
    ``use_osprofiler_ids``); with any other the SDK's random id is kept.
    """
    token = _next_trace_id.set(trace_id)
    try:
        return tracer.start_span(name, **kwargs)
    finally:
        _next_trace_id.reset(token)



class OSProfilerIdGenerator(IdGenerator):
    """Random ids, except for a span started for an OSProfiler trace point
    (its span id) or for an OSProfiler root caller's request (its trace id)."""

    def __init__(self, fallback: IdGenerator | None = None) -> None:
        self._fallback = fallback or RandomIdGenerator()
        # The SDK's RandomIdGenerator draws 64 random bits, again while 0
        # (invalid): its first draw made here, a call less a span.
        self._draw = (random.getrandbits if type(self._fallback) is RandomIdGenerator
                      else None)

    def generate_span_id(self) -> int:
        draw = self._draw
        return (_next_span_id.get() or (draw is not None and draw(64))
                or self._fallback.generate_span_id())

    def generate_trace_id(self) -> int:
        return _next_trace_id.get() or self._fallback.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        # Keeps the W3C level-2 "random" flag on traces this generator starts.
        return self._fallback.is_trace_id_random()


def use_osprofiler_ids(tracer: trace.Tracer) -> trace.Tracer:
    """Let ``tracer`` take span ids from trace points (SDK tracers only)."""
    current = getattr(tracer, "id_generator", None)
    if isinstance(current, IdGenerator) and not isinstance(
            current, OSProfilerIdGenerator):
        tracer.id_generator = OSProfilerIdGenerator(current)  # type: ignore[attr-defined]
    return tracer


def _kind(info: dict[str, Any]) -> SpanKind:
    # osprofiler's own db / requests trace points are calls out of Zaqar.
    if "db" in info or "requests" in info:
        return SpanKind.CLIENT
    return SpanKind.INTERNAL


class Notifier:
    """An osprofiler notifier that records trace points as OTel spans.

    :param tracer: where spans are started (its id generator should be
        wrapped by ``use_osprofiler_ids``).
    :param forward: another osprofiler notifier (e.g. a ``redis://`` driver's)
        that keeps getting the payloads, args and results removed.
    :param skip_prefixes: trace points whose name starts with one of these
        make no span (their children nest under the enclosing span).
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        forward: Callable[[dict[str, Any]], None] | None = None,
        skip_prefixes: tuple[str, ...] = (),
    ) -> None:
        self._tracer = use_osprofiler_ids(tracer)
        self._forward = forward
        self._skip = skip_prefixes
        self._log_failure = patching.FailureLog(
            LOG, "recording an OSProfiler trace point failed")

    def __call__(self, payload: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        try:
            name = payload["name"]
            if name.endswith("-start"):
                self._start(name[: -len("-start")], payload)
            elif name.endswith("-stop"):
                self._stop(payload)
            if self._forward is not None:
                self._forward(_without_values(payload))
        except Exception:
            # Never let tracing break the traced call; say so once.
            self._log_failure()

    def _start(self, name: str, payload: dict[str, Any]) -> None:
        if name.startswith(self._skip):
            _open.set((*_open.get(), None))
            return
        info = payload.get("info") or {}
        attributes: dict[str, Any] = {"osprofiler.name": name}
        function = info.get("function") or {}
        if function.get("name"):
            attributes["code.function.name"] = function["name"]
        token = _next_span_id.set(idmap.span_id_from_uuid(payload["trace_id"]))
        try:
            span = self._tracer.start_span(name, kind=_kind(info),
                                           attributes=attributes)
        finally:
            _next_span_id.reset(token)
        attach_token = context.attach(trace.set_span_in_context(span))
        _open.set((*_open.get(), (span, attach_token)))

    def _stop(self, payload: dict[str, Any]) -> None:
        stack = _open.get()
        if not stack:
            return
        top = stack[-1]
        _open.set(stack[:-1])
        if top is None:
            return
        span, attach_token = top
        info = payload.get("info") or {}
        if info.get("etype"):
            redact.error_event(span, info["etype"], info.get("message", ""))
        span.end()
        context.detach(attach_token)


def _without_values(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload less call args, kwargs and results."""
    info = payload.get("info")
    if not info:
        return payload
    cleaned = dict(info)
    for key in ("function", "db"):
        if isinstance(cleaned.get(key), dict):
            cleaned[key] = {k: v for k, v in cleaned[key].items()
                            if k not in ("args", "kwargs", "result", "params")}
    return {**payload, "info": cleaned}


class TracePoints:
    """Spans of ``trace_cls`` methods, made without osprofiler's notifier.

    :param tracer: where spans are started (its id generator is wrapped by
        ``use_osprofiler_ids``, for the trace ids of roots).
    :param skip_prefixes: trace points whose name starts with one of these
        make no span (their children nest under the enclosing span).

    ``close()`` (teardown) sends methods decorated meanwhile back through
    osprofiler's own wrapper, and so to whatever notifier is set then.
    """

    def __init__(self, tracer: trace.Tracer,
                 skip_prefixes: tuple[str, ...] = ()) -> None:
        self._tracer = use_osprofiler_ids(tracer)
        self._skip = skip_prefixes
        self.closed = False
        self._log_failure = patching.FailureLog(
            LOG, "recording an OSProfiler trace point failed")

    def close(self) -> None:
        self.closed = True

    def wrap(self, name: str, method: Callable[..., Any],
             osprofiler_wrapper: Callable[..., Any],
             info: dict[str, Any] | None = None) -> Callable[..., Any]:
        """``method`` traced as trace point ``name``; once closed, what
        osprofiler's ``osprofiler_wrapper`` does. A skipped name calls
        ``method`` alone."""
        skipped = name.startswith(self._skip)
        kind = _kind(info or {})
        get_profiler = _profiler_lookup()
        start_span = self._tracer.start_span
        enter, leave = layout.current_span_switch()
        attributes: KeptAttributes | None = None  # made at the first traced call

        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal attributes
            if self.closed:
                return osprofiler_wrapper(*args, **kwargs)
            prof = get_profiler()
            if prof is None or skipped:
                return method(*args, **kwargs)
            token = None
            try:
                if attributes is None:
                    attributes = KeptAttributes({
                        "osprofiler.name": name,
                        "code.function.name": reflection.get_callable_name(method)})
                span = start_span(name, kind=kind, attributes=attributes)
                token = enter(span)
                pushed = _push(prof, name, span)
            except Exception:
                self._log_failure()
                if token is not None:
                    leave(token)
                return method(*args, **kwargs)
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                # As osprofiler's wrapper reports it: Exceptions only.
                try:
                    # What Notifier records for osprofiler's stop info.
                    redact.error_event(span, reflection.get_class_name(exc), exc)
                except Exception:
                    self._log_failure()
                raise
            finally:
                try:
                    if pushed:
                        _pop(prof)
                    span.end()
                except Exception:
                    self._log_failure()
                finally:
                    leave(token)

        return wrapper


@functools.cache
def _profiler_lookup() -> Callable[[], Any]:
    """``osprofiler.profiler.get``: its thread-local read directly when it
    keeps one where 4.x does (a Python call less per traced method), seen
    on a probe: with a profiler set in that thread-local and without, the
    direct read and ``get()`` give the same."""
    get = osprofiler_profiler.get
    local = vars(osprofiler_profiler).get("__local_ctx")
    if local is None or not isinstance(local, threading.local):
        return get
    read = functools.partial(getattr, local, "profiler", None)
    missing = object()
    kept = getattr(local, "profiler", missing)
    probe = object()
    try:
        local.profiler = probe
        same = get() is probe and read() is probe
        del local.profiler
        same = same and get() is None and read() is None
    except Exception:
        same = False
    finally:
        if kept is not missing:
            local.profiler = kept
        elif hasattr(local, "profiler"):
            del local.profiler
    return read if same else get


def _push(prof: Any, name: str, span: trace.Span) -> bool:
    """Push the span's uuid on osprofiler's stacks, as its ``start`` does;
    False when this osprofiler keeps them otherwise (nothing pushed)."""
    stack, names = getattr(prof, "_trace_stack", None), getattr(prof, "_name", None)
    if not (isinstance(stack, deque) and isinstance(names, deque)):
        return False
    own = span.get_span_context()
    stack.append(idmap.uuid_from_span_id(own.trace_id, own.span_id))
    names.append(name)
    return True


def _pop(prof: Any) -> None:
    if prof._name:
        prof._name.pop()
        prof._trace_stack.pop()


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def direct_trace(points: TracePoints) -> Callable[[Callable[..., Decorator]],
                                                  Callable[..., Decorator]]:
    """For ``patches.patch(osprofiler.profiler, "trace", ...)``: osprofiler's
    ``trace`` decorator factory, its wrappers made by ``points``."""

    def replace(original: Callable[..., Decorator]) -> Callable[..., Decorator]:
        @functools.wraps(original)
        def trace_(name: str, info: dict[str, Any] | None = None,
                   hide_args: bool = False, hide_result: bool = True,
                   allow_multiple_trace: bool = True) -> Decorator:
            # Call args and results are never recorded (invariant 4).
            osprofiler_decorator = original(
                name, info=info, hide_args=True, hide_result=True,
                allow_multiple_trace=allow_multiple_trace)

            def decorator(method: Callable[..., Any]) -> Callable[..., Any]:
                # osprofiler's own: counts __traced__, refuses a second
                # trace where asked to; its wrapper serves once closed.
                fallback = osprofiler_decorator(method)
                return points.wrap(name, method, fallback, info)

            return decorator

        return trace_

    return replace
