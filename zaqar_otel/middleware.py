"""The entry of a trace: WSGI middleware outermost around Zaqar's app.

For each request it

1. extracts the caller's context with the global propagator (``traceparent``
   and verified OSProfiler headers, see ``zaqar_otel.bridge``);
2. decides whether to trace (``zaqar_otel.sampling``);
3. if so, starts a SERVER span named by the falcon route template
   (``GET /v2/queues/{queue_name}/messages``, never the raw path) with the
   stable HTTP semantic-convention attributes, and initializes OSProfiler's
   per-thread profiler with ids that map back to that span, so Zaqar's
   ``trace_cls`` trace points nest under it and outgoing OSProfiler headers
   continue the same trace;
4. ends the span when the response is complete: at once for a rendered
   body (the list falcon returns, handed on as the same object), else when
   the streamed body is exhausted or closed.

A fault in any of this is logged once and the request goes on untraced
(invariant 6): the response is always what Zaqar returns::

    entry = Entry(tracer, hmac_key="KEY")       # one per process
    app = TracingMiddleware(zaqar_app, entry, falcon_route_of(falcon_app))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.wsgi import (
    add_response_attributes,
    collect_request_attributes,
    wsgi_getter,
)
from opentelemetry.trace import SpanKind
from osprofiler import profiler

from zaqar_otel import bridge, patching, redact, sampling, tracepoints

LOG = logging.getLogger(__name__)

_HTTP = _StabilityMode.HTTP
# Query strings can carry anything a client put there; never exported.
_DROPPED_ATTRIBUTES = ("url.query",)
_KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"))

RouteOf = Callable[[str, str], str | None]

#: Why a request is traced: "osprofiler" (a verified signature),
#: "traceparent" (honoured sampled flag) or "sample_ratio"; a collector's
#: tail sampling can keep every trace someone asked for.
ORIGIN_ATTRIBUTE = "zaqar_otel.trace_origin"


def falcon_route_of(app: Any) -> RouteOf:
    """Route template lookup in a falcon App's router (no request is routed)."""
    router = app._router  # falcon has no public lookup by path

    def route_of(method: str, path: str) -> str | None:
        found = router.find(path)
        return found[3] if found else None

    return route_of


class TracingMiddleware:
    """Starts the SERVER span of each traced request around ``app``.

    :param app: the WSGI app (Zaqar's, with its auth and CORS middleware).
    :param entry: how requests enter a trace (shared with the websocket API).
    :param route_of: ``(method, path) -> route template or None``.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        entry: Entry,
        route_of: RouteOf,
    ) -> None:
        self._app = app
        self._route_of = route_of
        self._entry = entry
        self._log_failure = patching.FailureLog(
            LOG, "tracing a request failed; the request goes on untraced")

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            span, token = self._begin(environ)
        except Exception:
            self._log_failure()
            return self._app(environ, start_response)
        if span is None:
            try:
                return self._app(environ, start_response)
            finally:
                context.detach(token)
        return self._traced(environ, start_response, span, token)

    def _begin(self, environ: dict[str, Any]) -> tuple[trace.Span | None, object]:
        def describe() -> tuple[str, dict[str, Any]]:
            method = environ.get("REQUEST_METHOD", "")
            route = self._route_of(method, environ.get("PATH_INFO") or "/")
            attributes = collect_request_attributes(environ, _HTTP)
            for name in _DROPPED_ATTRIBUTES:
                attributes.pop(name, None)
            _split_server_address(attributes)
            if route:
                attributes["http.route"] = route
            return _span_name(method, route), attributes

        return self._entry.begin(propagate.extract(environ, getter=wsgi_getter),
                                 describe)

    def _traced(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        span: trace.Span,
        token: object,
    ) -> Iterable[bytes]:
        def traced_start_response(status: str, headers: Any, *args: Any) -> Any:
            try:
                add_response_attributes(span, status, headers,
                                        sem_conv_opt_in_mode=_HTTP)
            except Exception:
                self._log_failure()
            return start_response(status, headers, *args)

        try:
            body = self._app(environ, traced_start_response)
        except BaseException as exc:
            try:
                redact.record_error(span, exc)
            finally:
                end_span(span, self._log_failure)
            raise
        finally:
            # Zaqar's work is done once the app returns; what is left is
            # handing over the body it rendered.
            profiler.clean()
            context.detach(token)
        if isinstance(body, (list, tuple)):
            # Rendered already (falcon's usual answer): the response is
            # complete now, and the caller gets the very object Zaqar made.
            end_span(span, self._log_failure)
            return body
        return _EndSpanWhenDone(body, span, self._log_failure)

    def __getattr__(self, name: str) -> Any:
        if name == "_app":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        # Code that wraps or inspects Zaqar's app (its tests read
        # ``app._auth_app``) sees through this middleware, as through
        # osprofiler's.
        return getattr(self._app, name)


@dataclass(frozen=True)
class Entry:
    """How an API request enters a trace, WSGI or websocket.

    :param tracer: where the SERVER span is started.
    :param hmac_key: key OSProfiler signs with when the request brought
        none (a W3C or sampled request).
    :param sample_ratio: see ``[opentelemetry] sample_ratio``.
    :param honor_w3c_sampled: see ``[opentelemetry] honor_w3c_sampled``.
    """

    tracer: trace.Tracer
    hmac_key: str
    sample_ratio: float = 0.0
    honor_w3c_sampled: bool = False

    def __post_init__(self) -> None:
        # Roots of OSProfiler traces take the caller's base_id as trace id.
        tracepoints.use_osprofiler_ids(self.tracer)

    def begin(
        self,
        extracted: context.Context,
        describe: Callable[[], tuple[str, dict[str, Any]]],
    ) -> tuple[trace.Span | None, object]:
        """The entry of one request.

        Decides from the ``extracted`` caller context; a traced request gets a
        SERVER span named and described by ``describe()`` (called only then),
        made current, and OSProfiler's profiler with ids that map back to it.
        Returns the span (None when untraced) and the token to detach at the
        end.
        """
        if profiler.get() is not None:
            # Left over on this thread by a request that did not clean up.
            profiler.clean()
        decision = sampling.decide(extracted, self.sample_ratio,
                                   self.honor_w3c_sampled)
        if not decision.sampled:
            # The unsampled parent keeps spans below this request from starting
            # traces of their own; instrumentors skip them at all.
            return None, context.attach(sampling.untraced(decision.parent))
        name, attributes = describe()
        attributes[ORIGIN_ATTRIBUTE] = decision.origin
        if decision.root_trace_id is not None:
            span = tracepoints.start_root(
                self.tracer, decision.root_trace_id, name,
                context=decision.parent, kind=SpanKind.SERVER, attributes=attributes)
        else:
            span = self.tracer.start_span(name, context=decision.parent,
                                          kind=SpanKind.SERVER, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span, decision.parent))
        _init_profiler(span, bridge.verified_trace_info(extracted), self.hmac_key)
        return span, token


def _init_profiler(span: trace.Span, inbound: bridge.TraceInfo | None,
                   hmac_key: str) -> None:
    """OSProfiler's profiler for this thread, with ids that map to ``span``.

    Zaqar's trace points then nest under it, and outgoing OSProfiler headers
    continue the caller's trace with its exact base_id.
    """
    ids = span.get_span_context()
    same_trace = inbound is not None and inbound.trace_id == ids.trace_id
    base_id = (inbound.base_id if same_trace and inbound else
               bridge.base_id_from_trace_id(ids.trace_id))
    profiler.init(
        inbound.hmac_key if inbound else hmac_key,
        base_id=base_id,
        parent_id=bridge.uuid_from_span_id(ids.trace_id, ids.span_id))


def _split_server_address(attributes: dict[str, Any]) -> None:
    """``server.address`` is the host alone (the wsgi instrumentation copies
    the Host header, port included); the port goes to ``server.port``."""
    address = attributes.get("server.address")
    if not isinstance(address, str):
        return
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or (host.count(":") and not host.endswith("]")):
        return  # no port, or a bare IPv6 address
    attributes["server.address"] = host.strip("[]")
    attributes.setdefault("server.port", int(port))


def _span_name(method: str, route: str | None) -> str:
    method = method if method in _KNOWN_METHODS else "HTTP"
    return f"{method} {route}" if route else method


def end_span(span: trace.Span, log_failure: patching.FailureLog) -> None:
    """``span.end()`` that never raises into the request."""
    # span.end() runs the span processors, which the SDK does not guard.
    try:
        span.end()
    except Exception:
        log_failure()


class _EndSpanWhenDone:
    """A streamed body; the server span ends when the body is exhausted or
    closed, whichever comes first, so it covers the streaming and ends even
    for a caller that never calls ``close()``."""

    def __init__(self, body: Iterable[bytes], span: trace.Span,
                 log_failure: patching.FailureLog) -> None:
        self._body = body
        self._span: trace.Span | None = span
        self._log_failure = log_failure

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        finally:
            self._end()

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._end()

    def _end(self) -> None:
        span, self._span = self._span, None
        if span is not None:
            end_span(span, self._log_failure)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)
