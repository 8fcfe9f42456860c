"""The SERVER span's HTTP attributes, as the wsgi instrumentation sets them,
computed once for what repeats from request to request.

``collect_request_attributes`` and ``add_response_attributes`` of the wsgi
instrumentation cost a traced request about 110 k instructions (a method
sanitized, a user agent normalized and scanned for bots, each attribute
behind two semantic-convention mode checks). Nearly all of it depends on
what is the same for every request of a connection: method, scheme, Host,
server port, client address, user agent, protocol; and the response's on
its status line alone. Here the instrumentation itself computes them, once
per distinct input, on an environ holding only those keys; what differs per
request is added after, as the instrumentation adds it in the stable HTTP
mode: ``url.path`` (only when the server gives a request target) and
``client.port``. Never ``url.query``: a query string can hold anything a
client put there, so it is not exported at all. ``server.address`` is the
host alone, its port in ``server.port``::

    attributes = request_attributes(environ)      # for start_span
    set_response_attributes(span, "200 OK", headers)

In any other semantic-convention mode (``sdk_layout.wsgi_semconv_mode``
finds none), or for an environ whose values cannot be a key, the
instrumentation runs as it is, every time.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import (
    add_response_attributes,
    collect_request_attributes,
)

from zaqar_otel import sdk_layout

# The stable HTTP attribute names (http.request.method, url.path...); on a
# wsgi instrumentation laid out otherwise, its default names, uncached.
_HTTP_MODE = sdk_layout.wsgi_semconv_mode()
_MODE_ARGS = {} if _HTTP_MODE is None else {"sem_conv_opt_in_mode": _HTTP_MODE}
if _HTTP_MODE is None:
    sdk_layout.fast_path_off("server spans carry the wsgi instrumentation's "
                             "default HTTP attribute names")

#: Query strings can carry anything a client put there; never exported.
DROPPED = ("url.query",)
#: The environ keys the stable-mode attributes depend on, but for the
#: request target, the path and the client's port (added per request).
_REPEATING = ("REQUEST_METHOD", "SERVER_NAME", "wsgi.url_scheme", "HTTP_HOST",
              "SERVER_PORT", "REMOTE_ADDR", "REMOTE_HOST", "HTTP_USER_AGENT",
              "SERVER_PROTOCOL")
_KEPT_MAX = 512  # distinct inputs kept (cleared when full: clients repeat)
_KEPT_VALUE_MAX = 512  # characters of a kept input's value, at most
_by_request: dict[tuple[Any, ...], dict[str, Any]] = {}
_by_status: dict[str, tuple[tuple[str, Any], ...]] = {}


def _computed(environ: dict[str, Any]) -> dict[str, Any]:
    """The instrumentation's attributes, url.query dropped, the Host split."""
    attributes: dict[str, Any] = collect_request_attributes(environ, **_MODE_ARGS)
    for name in DROPPED:
        attributes.pop(name, None)
    _split_server_address(attributes)
    return attributes


def request_attributes(environ: dict[str, Any]) -> dict[str, Any]:
    """A new dict of the request's attributes (see the module)."""
    if _HTTP_MODE is None:
        return _computed(environ)
    get = environ.get
    target = get("RAW_URI")
    if target is None:  # the instrumentation's order: "" stays ""
        target = get("REQUEST_URI")
    values = tuple(map(get, _REPEATING))
    key = (*values, bool(target))
    try:
        known = _by_request.get(key)
    except TypeError:  # an unhashable value: no key, the whole computation
        return _computed(environ)
    if known is None:
        probe = {name: value for name, value in zip(_REPEATING, values, strict=True)
                 if value is not None}
        if target:
            probe["RAW_URI"] = "/"  # present, so the path is reported below
        known = _computed(probe)
        # Only inputs of ordinary length are kept: a client's 64 KiB
        # User-Agent or Host would make the 512 entries hold megabytes.
        if all(type(v) is not str or len(v) <= _KEPT_VALUE_MAX for v in values):
            if len(_by_request) >= _KEPT_MAX:
                _by_request.clear()
            _by_request[key] = known
    attributes = dict(known)
    if target:
        path = get("PATH_INFO")
        if path:
            attributes["url.path"] = path
    port = get("REMOTE_PORT")
    if port:
        try:
            attributes["client.port"] = int(port)
        except (TypeError, ValueError):
            pass
    return attributes


class _Noted:
    """Notes what ``add_response_attributes`` does to a recording span."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: Any) -> None:
        self.calls.append((key, value))

    def set_status(self, status: Any, description: str | None = None) -> None:
        self.calls.append(("", status))  # "": not an attribute key


def set_response_attributes(span: trace.Span, status: str,
                            headers: Any) -> None:
    """``add_response_attributes(span, status, headers)``, its effect on a
    recording span computed once per status line."""
    if _HTTP_MODE is None or not span.is_recording():
        add_response_attributes(span, status, headers, **_MODE_ARGS)
        return
    keyed = type(status) is str
    calls = _by_status.get(status) if keyed else None
    if calls is None:
        noted = _Noted()
        add_response_attributes(noted, status, headers,  # type: ignore[arg-type]
                                **_MODE_ARGS)
        calls = tuple(noted.calls)
        if keyed:
            if len(_by_status) >= _KEPT_MAX:
                _by_status.clear()
            _by_status[status] = calls
    for key, value in calls:
        if key:
            span.set_attribute(key, value)
        else:
            span.set_status(value)


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
