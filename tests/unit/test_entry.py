"""TracingMiddleware in process: what an untraced request pays for."""

from __future__ import annotations

import io
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from zaqar_otel import sampling
from zaqar_otel.entry.lifecycle import Entry
from zaqar_otel.entry.wsgi_middleware import TracingMiddleware
from zaqar_otel.propagation import codec, propagator


def _run(headers: dict[str, str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["instrumented"] = is_instrumentation_enabled()
        seen["recording"] = trace.get_current_span().is_recording()
        start_response("200 OK", [])
        return [b"ok"]

    provider = TracerProvider(sampler=sampling.request_sampler(0.0))
    middleware = TracingMiddleware(app, Entry(provider.get_tracer("t"), "key"),
                                   lambda method, path: "/v2/queues")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v2/queues",
               "wsgi.url_scheme": "http", "SERVER_NAME": "z", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(),
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator(
        [TraceContextTextMapPropagator(), propagator.OSProfilerPropagator(["key"])]))
    try:
        body = middleware(environ, lambda *args: None)
        assert list(body) == [b"ok"]
        if hasattr(body, "close"):  # the server span ends when the body closes
            body.close()
    finally:
        propagate.set_global_textmap(previous)
    return seen


def test_untraced_requests_suppress_the_database_instrumentors() -> None:
    """No span is even started (and dropped) per Redis command or statement."""
    assert _run({}) == {"instrumented": False, "recording": False}


def test_traced_requests_keep_them() -> None:
    headers = codec.encode("6f1d0c9e-0000-4000-8000-000000000001",
                            "6f1d0c9e-0000-4000-8000-000000000002", "key")
    assert _run(headers) == {"instrumented": True, "recording": True}


# -- what the caller gets back (invariant 6) ---------------------------------


def _traced(app: Any) -> tuple[TracingMiddleware, Any, dict[str, Any]]:
    """``app`` behind the middleware, its finished spans, a signed environ."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampling.request_sampler(0.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    middleware = TracingMiddleware(app, Entry(provider.get_tracer("t"), "key"),
                                   lambda method, path: "/v2/queues")
    headers = codec.encode("6f1d0c9e-0000-4000-8000-000000000001",
                            "6f1d0c9e-0000-4000-8000-000000000002", "key")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v2/queues",
               "wsgi.url_scheme": "http", "SERVER_NAME": "z", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(),
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    return middleware, exporter, environ


def _call(middleware: TracingMiddleware, environ: dict[str, Any]) -> Any:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(propagator.OSProfilerPropagator(["key"]))
    try:
        return middleware(environ, lambda *args: None)
    finally:
        propagate.set_global_textmap(previous)


def test_a_rendered_body_is_the_very_object_zaqar_returned() -> None:
    """Zaqar's tests index it (``result[0]``); the span ends without close()."""
    for rendered in ([b"ok"], (b"o", b"k"), []):
        def app(environ: dict[str, Any], start_response: Any,
                body: Any = rendered) -> Any:
            start_response("200 OK", [])
            return body

        middleware, exporter, environ = _traced(app)
        assert _call(middleware, environ) is rendered
        [span] = exporter.get_finished_spans()
        assert span.attributes["http.response.status_code"] == 200


def test_a_streamed_body_is_covered_and_ends_when_exhausted() -> None:
    """A generator body: the span lasts until the last chunk, and ends even
    when the caller never calls close()."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        yield b"a"
        assert exporter.get_finished_spans() == ()  # still streaming
        yield b"b"

    middleware, exporter, environ = _traced(app)
    body = _call(middleware, environ)
    assert exporter.get_finished_spans() == ()
    assert list(body) == [b"a", b"b"]
    assert len(exporter.get_finished_spans()) == 1
    body.close()  # a later close() does not end it twice
    assert len(exporter.get_finished_spans()) == 1


def test_a_streamed_body_closed_early_ends_the_span_and_closes_it() -> None:
    closed: list[bool] = []

    def chunks() -> Any:
        try:
            yield b"a"
            yield b"b"
        finally:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return chunks()

    middleware, exporter, environ = _traced(app)
    body = _call(middleware, environ)
    assert next(iter(body)) == b"a"
    body.close()
    assert closed and len(exporter.get_finished_spans()) == 1


def test_attributes_of_the_wrapped_app_show_through() -> None:
    """Zaqar's test_auth reads ``app._auth_app`` through the wrapper."""
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return []

    app._auth_app = "keystone"  # type: ignore[attr-defined]
    middleware, _, _ = _traced(app)
    assert middleware._auth_app == "keystone"  # type: ignore[attr-defined]
    try:
        middleware.missing  # noqa: B018 - the lookup is the test
    except AttributeError:
        pass
    else:
        raise AssertionError("a missing attribute must raise AttributeError")


def test_server_address_is_the_host_without_the_port() -> None:
    from zaqar_otel.entry.http_attributes import _split_server_address

    cases = {"zaqar.example:8888": ("zaqar.example", 8888),
             "[::1]:8888": ("::1", 8888), "zaqar.example": ("zaqar.example", None),
             "::1": ("::1", None), "host:notaport": ("host:notaport", None)}
    for given, (host, port) in cases.items():
        attributes: dict[str, Any] = {"server.address": given}
        _split_server_address(attributes)
        assert attributes["server.address"] == host
        assert attributes.get("server.port") == port


# -- metrics and the request id ----------------------------------------------


class _Recorded:
    """A RequestMetrics that keeps what it was handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def request(self, environ: Any, route: Any, status: Any, seconds: float,
                error: Any, span_context: Any) -> None:
        self.calls.append((route, status, seconds, error, span_context))


def _answering(status: str, fail: bool = False) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # What Zaqar's inner middleware leave in the environ.
        environ["zaqar_otel.route"] = "/v2/queues/{queue_name}"
        environ["openstack.request_id"] = "req-6f1d0c9e"
        start_response(status, [])
        if fail:
            raise RuntimeError("boom")
        return [b""]

    return app


def test_untraced_requests_are_measured_with_route_and_status() -> None:
    recorded = _Recorded()
    provider = TracerProvider(sampler=sampling.request_sampler(0.0))
    middleware = TracingMiddleware(_answering("201 Created"),
                                   Entry(provider.get_tracer("t"), "key"),
                                   lambda method, path: None, metrics=recorded)
    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": "/v2/queues/q",
               "wsgi.input": io.BytesIO()}
    assert middleware(environ, lambda *args: None) == [b""]
    [(route, status, seconds, error, span_context)] = recorded.calls
    assert (route, status, error, span_context) == (
        "/v2/queues/{queue_name}", "201 Created", None, None)
    assert 0 < seconds < 1


def test_metrics_alone_trace_nothing_and_measure_failures() -> None:
    recorded = _Recorded()
    middleware = TracingMiddleware(_answering("500 Internal Server Error", fail=True),
                                   None, lambda method, path: None, metrics=recorded)
    try:
        middleware({"REQUEST_METHOD": "GET"}, lambda *args: None)
    except RuntimeError:
        pass
    [(_, status, _, error, span_context)] = recorded.calls
    assert status == "500 Internal Server Error"
    assert isinstance(error, RuntimeError) and span_context is None


def test_traced_requests_carry_the_request_id_and_are_exemplars() -> None:
    middleware, exporter, environ = _traced(_answering("200 OK"))
    recorded = _Recorded()
    middleware._metrics = recorded
    _call(middleware, environ)
    [span] = exporter.get_finished_spans()
    assert span.attributes["openstack.request_id"] == "req-6f1d0c9e"
    [(_, _, _, _, span_context)] = recorded.calls
    assert span_context == span.get_span_context()


def test_a_failing_recorder_never_breaks_the_request() -> None:
    class Broken:
        def request(self, *args: Any) -> None:
            raise ValueError("broken")

    middleware = TracingMiddleware(_answering("200 OK"), None,
                                   lambda method, path: None, metrics=Broken())
    assert middleware({"REQUEST_METHOD": "GET"}, lambda *args: None) == [b""]
