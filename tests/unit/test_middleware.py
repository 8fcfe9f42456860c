"""TracingMiddleware in process: what an untraced request pays for."""

from __future__ import annotations

import io
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from zaqar_otel import bridge, sampling
from zaqar_otel.middleware import TracingMiddleware


def _run(headers: dict[str, str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["instrumented"] = is_instrumentation_enabled()
        seen["recording"] = trace.get_current_span().is_recording()
        start_response("200 OK", [])
        return [b"ok"]

    provider = TracerProvider(sampler=sampling.RequestSampler(0.0))
    middleware = TracingMiddleware(app, provider.get_tracer("t"),
                                   lambda method, path: "/v2/queues", "key")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v2/queues",
               "wsgi.url_scheme": "http", "SERVER_NAME": "z", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(),
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator(
        [TraceContextTextMapPropagator(), bridge.OSProfilerPropagator(["key"])]))
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
    headers = bridge.encode("6f1d0c9e-0000-4000-8000-000000000001",
                            "6f1d0c9e-0000-4000-8000-000000000002", "key")
    assert _run(headers) == {"instrumented": True, "recording": True}
