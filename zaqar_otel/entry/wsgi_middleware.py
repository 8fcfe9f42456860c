"""The entry of a trace: WSGI middleware outermost around Zaqar's app.

For each request it

1. extracts the caller's context with the global propagator (``traceparent``
   and verified OSProfiler headers, see ``zaqar_otel.propagation``);
2. decides whether to trace (``zaqar_otel.sampling``);
3. if so, starts a SERVER span named by the falcon route template
   (``GET /v2/queues/{queue_name}/messages``, never the raw path) with the
   HTTP semantic-convention attributes of the process's mode
   (``http_attributes``: old, stable or both, as the instrumentations of
   the same trace name theirs), and initializes OSProfiler's
   per-thread profiler with ids that map back to that span, so Zaqar's
   ``trace_cls`` trace points nest under it and outgoing OSProfiler headers
   continue the same trace;
4. ends the span when the response is complete: at once for a rendered
   body (the list falcon returns, handed on as the same object), else when
   the streamed body is exhausted or closed; the span carries Zaqar's request
   id (``openstack.request_id``, the ``x-openstack-request-id`` header);
5. with metrics on, hands every request, traced or not, to
   ``RequestMetrics.request`` once Zaqar's app has returned: method, route
   template (noted by the messaging middleware), status, duration, and the
   server span as exemplar when traced.

A fault in any of this is logged once and the request goes on untraced
(invariant 6): the response is always what Zaqar returns::

    entry = Entry(tracer, hmac_key="KEY")       # one per process
    app = TracingMiddleware(zaqar_app, entry, falcon_route_of(falcon_app),
                            metrics=recorder,   # metrics: optional
                            http=HttpAttributes(conventions))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import Token
from time import perf_counter
from typing import Any, Protocol

from opentelemetry import context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from osprofiler import profiler

from zaqar_otel import patching, redact
from zaqar_otel._sdk import layout
from zaqar_otel.entry import http_attributes
from zaqar_otel.entry.lifecycle import Entry, end_span
from zaqar_otel.messaging import operations
from zaqar_otel.propagation import propagator
from zaqar_otel.redact import HTTP_METHODS

LOG = logging.getLogger(__name__)

RouteOf = Callable[[str, str], str | None]
#: oslo.middleware's request id (``req-<uuid>``), also the response's
#: ``x-openstack-request-id``; what Zaqar's log lines of the request show.
REQUEST_ID_ENVIRON = "openstack.request_id"
REQUEST_ID_ATTRIBUTE = "openstack.request_id"


class RequestMetrics(Protocol):
    """What the entry hands every request to (``zaqar_otel.metrics``)."""

    def request(self, environ: Mapping[str, Any], route: str | None,
                status: str | None, seconds: float, error: BaseException | None,
                span_context: trace.SpanContext | None) -> None: ...

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
    :param http: the server span's HTTP attributes in the process's
        semantic-convention mode (set-up hands it down); None: the stable
        names.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        entry: Entry | None,
        route_of: RouteOf,
        metrics: RequestMetrics | None = None,
        http: http_attributes.HttpAttributes | None = None,
    ) -> None:
        self._app = app
        self._route_of = route_of
        if http is None and entry is not None:
            http = http_attributes.HttpAttributes(layout.stable_conventions())
        self._http = http
        self._entry = entry  # None: metrics alone, nothing is traced
        self._extract = Extractor()
        self._metrics = metrics
        self._log_failure = patching.FailureLog(
            LOG, "tracing a request failed; the request goes on untraced")
        self._log_metrics_failure = patching.FailureLog(
            LOG, "measuring a request failed; it is not counted")

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        started = perf_counter() if self._metrics is not None else 0.0
        try:
            span, token = self._begin(environ)
        except Exception:
            self._log_failure()
            return self._app(environ, start_response)
        if span is not None:
            return self._traced(environ, start_response, span, token, started)
        if self._metrics is not None:
            return self._measured(environ, start_response, token, started)
        try:
            return self._app(environ, start_response)
        finally:
            if token is not None:
                context.detach(token)

    def _measured(self, environ: dict[str, Any], start_response: Callable[..., Any],
                  token: Token[Context] | None, started: float) -> Iterable[bytes]:
        """An untraced request, measured."""
        seen: list[str] = []

        def noting_start_response(status: str, headers: Any, *args: Any) -> Any:
            seen.append(status)
            return start_response(status, headers, *args)

        try:
            body = self._app(environ, noting_start_response)
        except BaseException as exc:
            self._measure(environ, seen, started, exc, None)
            raise
        finally:
            if token is not None:
                context.detach(token)
        self._measure(environ, seen, started, None, None)
        return body

    def _measure(self, environ: dict[str, Any], seen: list[str], started: float,
                 error: BaseException | None,
                 span_context: trace.SpanContext | None) -> None:
        # Until Zaqar's app returned: a streamed body's transfer is not in it.
        seconds = perf_counter() - started
        assert self._metrics is not None  # only called with metrics on
        try:
            self._metrics.request(environ, environ.get(operations.ROUTE_ENVIRON),
                                  seen[-1] if seen else None, seconds, error,
                                  span_context)
        except Exception:
            self._log_metrics_failure()

    def _begin(self, environ: dict[str, Any]
               ) -> tuple[trace.Span | None, Token[Context] | None]:
        if self._entry is None:
            return None, None
        http = self._http
        assert http is not None  # made with the entry

        def describe() -> tuple[str, dict[str, Any]]:
            method = environ.get("REQUEST_METHOD", "")
            route = self._route_of(method, environ.get("PATH_INFO") or "/")
            attributes = http.request(environ)
            if route:
                attributes["http.route"] = route
            return _span_name(method, route), attributes

        return self._entry.begin(self._extract(environ), describe)

    def _traced(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        span: trace.Span,
        token: Token[Context] | None,
        started: float,
    ) -> Iterable[bytes]:
        seen: list[str] = []
        response = self._http.response  # type: ignore[union-attr]  # traced: set

        def traced_start_response(status: str, headers: Any, *args: Any) -> Any:
            seen.append(status)
            try:
                response(span, status, headers)
            except Exception:
                self._log_failure()
            return start_response(status, headers, *args)

        try:
            body = self._app(environ, traced_start_response)
        except BaseException as exc:
            try:
                self._note_request_id(span, environ)
                redact.record_error(span, exc)
                if self._metrics is not None:
                    self._measure(environ, seen, started, exc,
                                  span.get_span_context())
            finally:
                end_span(span, self._log_failure)
            raise
        finally:
            # Zaqar's work is done once the app returns; what is left is
            # handing over the body it rendered.
            profiler.clean()
            if token is not None:
                context.detach(token)
        self._note_request_id(span, environ)
        if self._metrics is not None:
            self._measure(environ, seen, started, None, span.get_span_context())
        if isinstance(body, (list, tuple)):
            # Rendered already (falcon's usual answer): the response is
            # complete now, and the caller gets the very object Zaqar made.
            end_span(span, self._log_failure)
            return body
        return _EndSpanWhenDone(body, span, self._log_failure)

    def _note_request_id(self, span: trace.Span, environ: dict[str, Any]) -> None:
        # Set by oslo.middleware's RequestId inside Zaqar's app: the id its
        # log lines and the x-openstack-request-id header show.
        request_id = environ.get(REQUEST_ID_ENVIRON)
        if isinstance(request_id, str):
            try:
                span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
            except Exception:
                self._log_failure()

    def __getattr__(self, name: str) -> Any:
        if name == "_app":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        # Code that wraps or inspects Zaqar's app (its tests read
        # ``app._auth_app``) sees through this middleware, as through
        # osprofiler's.
        return getattr(self._app, name)


# What each propagator of the default set needs in a request to extract
# anything at all (without it, its extract returns the context it was given).
_NEEDS: dict[type, str] = {
    TraceContextTextMapPropagator: "HTTP_TRACEPARENT",
    W3CBaggagePropagator: "HTTP_BAGGAGE",
    propagator.OSProfilerPropagator: "HTTP_X_TRACE_INFO",
}
def _needed_keys(textmap: Any) -> frozenset[str] | None:
    """The environ keys without which ``textmap`` extracts nothing, if it is
    a composite of the default propagators only; else None."""
    parts = layout.composite_parts(textmap)
    return (frozenset(_NEEDS[type(p)] for p in parts)
            if parts and all(type(p) in _NEEDS for p in parts) else None)


class Extractor:
    """``propagate.extract`` of a request; a request with none of the headers
    the default propagators read (most untraced requests) skips their work
    and gets the empty context they would all return. What the global
    propagator needs is worked out once for each propagator set."""

    def __init__(self) -> None:
        self._needed: tuple[Any, frozenset[str] | None] = (None, None)

    def __call__(self, environ: dict[str, Any]) -> Context:
        textmap = propagate.get_global_textmap()
        known, keys = self._needed
        if known is not textmap:
            keys = _needed_keys(textmap)
            self._needed = (textmap, keys)
        if keys is not None and environ.keys().isdisjoint(keys):
            return Context()
        return textmap.extract(environ, getter=wsgi_getter)


def _span_name(method: str, route: str | None) -> str:
    method = method if method in HTTP_METHODS else "HTTP"
    return f"{method} {route}" if route else method


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
