"""The SERVER span's HTTP attributes, computed once for what repeats, are
what the wsgi instrumentation gives every time (``entry.http_attributes``),
in each semantic-convention mode: old (no opt-in), stable (``http``) and
both (``http/dup``)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.wsgi import (
    add_response_attributes,
    collect_request_attributes,
)
from opentelemetry.sdk.trace import TracerProvider

from zaqar_otel._sdk import layout
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


MODES = {
    "default": (_StabilityMode.DEFAULT, True, False),
    "stable": (_StabilityMode.HTTP, False, True),
    "dup": (_StabilityMode.HTTP_DUP, True, True),
}


def conventions(mode: str) -> layout.Conventions:
    stability, old, new = MODES[mode]
    return layout.Conventions(http_old=old, http_new=new, http_mode=stability)


def instrumentation(environ: dict[str, Any], mode: str = "stable") -> dict[str, Any]:
    """What the instrumentation gives, its query strings cut (url.query
    dropped, http.target and http.url ended at "?"), the Host's port split off."""
    attributes = collect_request_attributes(environ, MODES[mode][0])
    attributes.pop("url.query", None)
    for name in ("http.target", "http.url"):
        if isinstance(attributes.get(name), str):
            attributes[name] = attributes[name].partition("?")[0]
    http_attributes._split_server_address(attributes)
    http_attributes._split_server_address(attributes, "net.host.name", "net.host.port")
    return attributes


def _ours(environ: dict[str, Any], made: http_attributes.HttpAttributes) -> Any:
    try:
        return made.request(environ)
    except Exception as error:  # the instrumentation's own failure, kept
        return type(error)


def _theirs(environ: dict[str, Any], mode: str) -> Any:
    try:
        return instrumentation(environ, mode)
    except Exception as error:
        return type(error)


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


@pytest.mark.parametrize("mode", MODES)
def test_request_attributes_are_the_instrumentations_on_a_miss_and_a_hit(
        mode: str) -> None:
    made = http_attributes.HttpAttributes(conventions(mode))
    for environ in environs(3000, seed=13):
        expected = _theirs(environ, mode)
        assert _ours(environ, made) == expected, environ
        assert _ours(environ, made) == expected, environ
    # Far fewer distinct inputs than requests: what repeats was kept.
    assert 0 < len(made._by_request) <= http_attributes._KEPT_MAX


@pytest.mark.parametrize("mode", MODES)
def test_no_name_of_the_other_mode_and_no_query(mode: str) -> None:
    made = http_attributes.HttpAttributes(conventions(mode))
    old = {"http.method", "http.scheme", "http.target", "http.url", "http.host",
           "http.flavor", "http.user_agent", "http.server_name", "net.host.name",
           "net.host.port", "net.peer.ip", "net.peer.port", "net.peer.name"}
    new = {"http.request.method", "url.scheme", "url.path", "server.address",
           "server.port", "client.address", "client.port",
           "network.protocol.version", "user_agent.original"}
    _, wants_old, wants_new = MODES[mode]
    for environ in environs(500, seed=7):
        got = _ours(environ, made)
        if isinstance(got, type):
            continue
        names = set(got)
        assert wants_old or not names & old, (mode, names & old)
        assert wants_new or not names & new, (mode, names & new)
        assert "secret" not in str(got) and "limit" not in str(got), got


def test_what_differs_per_request_is_never_taken_from_another() -> None:
    base = {"REQUEST_METHOD": "GET", "wsgi.url_scheme": "http",
            "HTTP_HOST": "zaqar.example:8888", "SERVER_PORT": "8888",
            "REMOTE_ADDR": "127.0.0.1", "RAW_URI": "/", "SERVER_PROTOCOL": "HTTP/1.1"}
    for mode in MODES:
        made = http_attributes.HttpAttributes(conventions(mode))
        seen = set()
        for path, port, target in itertools.product(
                ("/v2/queues/a", "/v2/queues/b"), ("40000", "40001"),
                ("RAW_URI", None)):
            environ = {**base, "PATH_INFO": path, "REMOTE_PORT": port,
                       "QUERY_STRING": "secret=1"}
            if target:
                environ[target] = path + "?secret=1"
            else:
                del environ["RAW_URI"]
            got = made.request(environ)
            assert got == instrumentation(environ, mode)
            if mode != "default":
                if target:
                    assert got["url.path"] == path
                assert got["client.port"] == int(port)
            if mode != "stable":
                assert got["net.peer.port"] == int(port)
                assert (got["http.target"] if target else got["http.url"]
                        ).endswith(path)
            assert "url.query" not in got and "secret" not in str(got)
            got["url.path"] = got["http.target"] = "changed"  # the caller's dict
            again = made.request(environ)
            found = (again.get("url.path") or again.get("http.target")
                     or again.get("http.url"))
            if found:  # none: stable names, no request target
                seen.add(found)
        assert {p.rsplit("/", 1)[-1] for p in seen} == {"a", "b"}


def test_an_unhashable_value_is_computed_in_full() -> None:
    environ = {"REQUEST_METHOD": "GET", "HTTP_USER_AGENT": ["not", "a", "str"]}
    for mode in MODES:
        made = http_attributes.HttpAttributes(conventions(mode))
        assert _ours(environ, made) == _theirs(environ, mode)


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


@pytest.mark.parametrize("mode", MODES)
def test_response_attributes_are_the_instrumentations(mode: str) -> None:
    made = http_attributes.HttpAttributes(conventions(mode))

    def theirs(span: Any, status: str) -> None:
        add_response_attributes(span, status, [],
                                sem_conv_opt_in_mode=MODES[mode][0])

    def ours(span: Any, status: str) -> None:
        made.response(span, status, [])

    for status in ("200 OK", "201 Created", "204 No Content", "404 Not Found",
                   "500 Internal Server Error", "503 Service Unavailable",
                   "abc Weird", "200OK", "99 Low", "200 OK"):
        expected = _span_after(theirs, status)
        assert _span_after(ours, status) == expected, status
        assert _span_after(ours, status) == expected, status  # kept
