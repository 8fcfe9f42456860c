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
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from contextvars import Token
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from zaqar_otel import patching, redact
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

    def generate_span_id(self) -> int:
        return _next_span_id.get() or self._fallback.generate_span_id()

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
            # First line only, no URL credentials or queries: SQLAlchemy's
            # messages carry the bound parameters below.
            message = redact.message(info.get("message", ""))
            span.add_event("exception", {"exception.type": info["etype"],
                                         "exception.message": message})
            span.set_status(Status(StatusCode.ERROR, str(info["etype"])))
        span.end()
        context.detach(attach_token)

    @property
    def open_spans(self) -> int:
        """Trace point spans open in the calling context (for tests)."""
        return sum(1 for entry in _open.get() if entry is not None)


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
