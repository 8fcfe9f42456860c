"""The SERVER span's HTTP attributes, computed once for what repeats, are
what the wsgi instrumentation gives every time (``entry.http_attributes``)."""

from __future__ import annotations

import itertools
import random
from typing import Any

from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.wsgi import (
    add_response_attributes,
    collect_request_attributes,
)
from opentelemetry.sdk.trace import TracerProvider

from zaqar_otel.entry import http_attributes

CHOICES: dict[str, list[Any]] = {
    "REQUEST_METHOD": ["GET", "POST", "get", "PURGE", " DELETE ", ""],
    "SERVER_NAME": ["zaqar.example", None],
    "wsgi.url_scheme": ["http", "https", None],
    "HTTP_HOST": ["zaqar.example:8888", "[::1]:8888", "::1", "zaqar.example", "", None],
    "SERVER_PORT": ["8888", "80", "", None],
    "RAW_URI": ["/v2/queues?limit=1", "", None],
    "REQUEST_URI": ["/v2/queues", None],
    "PATH_INFO": ["/v2/queues/q1/messages", "", None],
    "QUERY_STRING": ["limit=10&secret=s3cr3t", "", None],
    "REMOTE_ADDR": ["127.0.0.1", "::1", None],
    "REMOTE_PORT": ["54321", "0", "x", None],
    "REMOTE_HOST": ["client.example", "127.0.0.1", None],
    "HTTP_USER_AGENT": ["python-zaqarclient/3.0", "Googlebot/2.1", " ", None],
    "SERVER_PROTOCOL": ["HTTP/1.1", "HTTP/1.0", "h2", "", None],
}


def instrumentation(environ: dict[str, Any]) -> dict[str, Any]:
    """What the middleware exported before: the instrumentation's own
    attributes, url.query dropped, the Host's port split off."""
    attributes = collect_request_attributes(environ, _StabilityMode.HTTP)
    attributes.pop("url.query", None)
    http_attributes._split_server_address(attributes)
    return attributes


def environs(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        environ = {}
        for key, values in CHOICES.items():
            value = rng.choice(values)
            if value is not None:
                environ[key] = value
        made.append(environ)
    return made


def test_request_attributes_are_the_instrumentations_on_a_miss_and_a_hit() -> None:
    http_attributes._by_request.clear()
    for environ in environs(3000, seed=13):
        expected = instrumentation(environ)
        assert http_attributes.request_attributes(environ) == expected, environ
        assert http_attributes.request_attributes(environ) == expected, environ
    # Far fewer distinct inputs than requests: what repeats was kept.
    assert 0 < len(http_attributes._by_request) <= http_attributes._KEPT_MAX


def test_what_differs_per_request_is_never_taken_from_another() -> None:
    base = {"REQUEST_METHOD": "GET", "wsgi.url_scheme": "http",
            "HTTP_HOST": "zaqar.example:8888", "SERVER_PORT": "8888",
            "REMOTE_ADDR": "127.0.0.1", "RAW_URI": "/", "SERVER_PROTOCOL": "HTTP/1.1"}
    seen = set()
    for path, port in itertools.product(("/v2/queues/a", "/v2/queues/b"),
                                        ("40000", "40001")):
        environ = {**base, "PATH_INFO": path, "REMOTE_PORT": port,
                   "QUERY_STRING": "secret=1"}
        got = http_attributes.request_attributes(environ)
        assert got == instrumentation(environ)
        assert got["url.path"] == path and got["client.port"] == int(port)
        assert "url.query" not in got
        got["url.path"] = "changed"  # the caller's own dict
        seen.add(http_attributes.request_attributes(environ)["url.path"])
    assert seen == {"/v2/queues/a", "/v2/queues/b"}


def test_an_unhashable_value_is_computed_in_full() -> None:
    environ = {"REQUEST_METHOD": "GET", "HTTP_USER_AGENT": ["not", "a", "str"]}
    try:
        expected: Any = instrumentation(environ)
    except Exception as error:  # the instrumentation's own failure, kept
        expected = type(error)
    try:
        got: Any = http_attributes.request_attributes(environ)
    except Exception as error:
        got = type(error)
    assert got == expected


def _span_after(setter: Any, status: str) -> tuple[Any, ...]:
    span = TracerProvider().get_tracer("t").start_span("s")
    try:
        setter(span, status)
        error = None
    except Exception as exc:
        error = type(exc)
    span.end()
    return (dict(span.attributes), span.status.status_code,
            span.status.description, error)


def test_response_attributes_are_the_instrumentations() -> None:
    http_attributes._by_status.clear()

    def theirs(span: Any, status: str) -> None:
        add_response_attributes(span, status, [],
                                sem_conv_opt_in_mode=_StabilityMode.HTTP)

    def ours(span: Any, status: str) -> None:
        http_attributes.set_response_attributes(span, status, [])

    for status in ("200 OK", "201 Created", "204 No Content", "404 Not Found",
                   "500 Internal Server Error", "503 Service Unavailable",
                   "abc Weird", "200OK", "99 Low", "200 OK"):
        expected = _span_after(theirs, status)
        assert _span_after(ours, status) == expected, status
        assert _span_after(ours, status) == expected, status  # kept

