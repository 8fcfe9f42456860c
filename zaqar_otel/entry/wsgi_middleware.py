"""The entry of a trace: WSGI middleware outermost around Zaqar's app.

For each request it

1. extracts the caller's context with the global propagator (``traceparent``
   and verified OSProfiler headers, see ``zaqar_otel.propagation``);
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
from contextvars import Token
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.wsgi import (
    add_response_attributes,
    collect_request_attributes,
    wsgi_getter,
)
from osprofiler import profiler

from zaqar_otel import patching, redact, sdk_layout
from zaqar_otel.entry import lifecycle
from zaqar_otel.entry.lifecycle import Entry, end_span

LOG = logging.getLogger(__name__)

# The stable HTTP attribute names (http.request.method, url.path...); on a
# wsgi instrumentation laid out otherwise, its default names.
_HTTP_MODE = sdk_layout.wsgi_semconv_mode()
_MODE_ARGS = {} if _HTTP_MODE is None else {"sem_conv_opt_in_mode": _HTTP_MODE}
if _HTTP_MODE is None:
    sdk_layout.fast_path_off("server spans carry the wsgi instrumentation's "
                             "default HTTP attribute names")
# Query strings can carry anything a client put there; never exported.
_DROPPED_ATTRIBUTES = ("url.query",)
_KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"))

RouteOf = Callable[[str, str], str | None]

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

    def _begin(self, environ: dict[str, Any]) -> lifecycle.Begun:
        def describe() -> tuple[str, dict[str, Any]]:
            method = environ.get("REQUEST_METHOD", "")
            route = self._route_of(method, environ.get("PATH_INFO") or "/")
            attributes = collect_request_attributes(environ, **_MODE_ARGS)
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
        token: Token[Context],
    ) -> Iterable[bytes]:
        def traced_start_response(status: str, headers: Any, *args: Any) -> Any:
            try:
                add_response_attributes(span, status, headers,
                                        **_MODE_ARGS)
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
