"""The SERVER span's HTTP attributes, as the wsgi instrumentation sets them
in the process's semantic-convention mode, computed once for what repeats
from request to request.

``collect_request_attributes`` and ``add_response_attributes`` of the wsgi
instrumentation cost a traced request about 110 k instructions (a method
sanitized, a user agent normalized and scanned for bots, each attribute
behind two semantic-convention mode checks). Nearly all of it depends on
what is the same for every request of a connection: method, scheme, Host,
server port, client address, user agent, protocol; and the response's on
its status line alone. Here the instrumentation itself computes them, once
per distinct input, on an environ holding only those keys; what differs per
request is added after, as the instrumentation adds it:

============  =====================================  ==============================
mode          per request                            never exported
============  =====================================  ==============================
stable        ``url.path`` (with a request target),  ``url.query``
              ``client.port``
old           ``http.target`` (the request target    the query string of
              cut at ``?``), else ``http.url``       ``http.target`` and
              (without query), ``net.peer.port``     ``http.url``
dup           both
============  =====================================  ==============================

A query string can hold anything a client put there, so no mode exports it.
The Host header's host goes to ``server.address`` (stable) / ``net.host.name``
(old) alone, its port to ``server.port`` / ``net.host.port``. The mode is
the one set-up read (``layout.conventions()``), handed in::

    http = HttpAttributes(conventions)
    attributes = http.request(environ)          # for start_span
    http.response(span, "200 OK", headers)

On a wsgi instrumentation without the mode argument (``Conventions.http_mode``
None), or for an environ whose values cannot be a key, the instrumentation
runs as it is, every time (its query strings still cut).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote
from wsgiref.util import request_uri

from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import (
    add_response_attributes,
    collect_request_attributes,
)
from opentelemetry.util.http import redact_url

from zaqar_otel._sdk import layout

#: Query strings can carry anything a client put there; never exported.
DROPPED = ("url.query",)
#: Old names whose value the instrumentation ends with the query string.
_CUT_AT_QUERY = ("http.target", "http.url")
#: The environ keys the attributes depend on, but for the request target,
#: the path and the client's port (added per request).
_REPEATING = ("REQUEST_METHOD", "SERVER_NAME", "wsgi.url_scheme", "HTTP_HOST",
              "SERVER_PORT", "REMOTE_ADDR", "REMOTE_HOST", "HTTP_USER_AGENT",
              "SERVER_PROTOCOL")
#: The characters ``quote(path, safe="/;=,")`` keeps as they are.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~/;=,-]*")
_KEPT_MAX = 512  # distinct inputs kept (cleared when full: clients repeat)
_KEPT_VALUE_MAX = 512  # characters of a kept input's value, at most


class HttpAttributes:
    """The server span's HTTP attributes in one semantic-convention mode,
    with what repeats kept (see the module)."""

    def __init__(self, conventions: layout.Conventions) -> None:
        mode = conventions.http_mode
        self.conventions = conventions
        self._args: dict[str, Any] = (
            {} if mode is None else {"sem_conv_opt_in_mode": mode})
        self._kept = mode is not None
        self._new = conventions.http_new
        self._old = conventions.http_old
        self._by_request: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._by_status: dict[str, tuple[tuple[str, Any], ...]] = {}
        if mode is None:
            layout.fast_path_off("server spans carry the wsgi "
                                     "instrumentation's default HTTP attribute "
                                     "names, computed for each request")

    def _computed(self, environ: dict[str, Any]) -> dict[str, Any]:
        """The instrumentation's attributes, no query, the Host split."""
        attributes: dict[str, Any] = collect_request_attributes(environ, **self._args)
        for name in DROPPED:
            attributes.pop(name, None)
        for name in _CUT_AT_QUERY:
            value = attributes.get(name)
            if isinstance(value, str) and "?" in value:
                attributes[name] = value.partition("?")[0]
        _split_server_address(attributes)
        _split_server_address(attributes, "net.host.name", "net.host.port")
        return attributes

    def request(self, environ: dict[str, Any]) -> dict[str, Any]:
        """A new dict of the request's attributes (see the module)."""
        if not self._kept:
            return self._computed(environ)
        get = environ.get
        target = get("RAW_URI")
        if target is None:  # the instrumentation's order: "" stays ""
            target = get("REQUEST_URI")
        values = tuple(map(get, _REPEATING))
        key = (*values, bool(target))
        kept = self._by_request
        try:
            known = kept.get(key)
        except TypeError:  # an unhashable value: no key, the whole computation
            return self._computed(environ)
        if known is None:
            probe = {name: value for name, value in zip(_REPEATING, values, strict=True)
                     if value is not None}
            if target:
                probe["RAW_URI"] = "/"  # present, so the path is reported below
            known = self._computed(probe)
            # Only inputs of ordinary length are kept: a client's 64 KiB
            # User-Agent or Host would make the 512 entries hold megabytes.
            if all(type(v) is not str or len(v) <= _KEPT_VALUE_MAX for v in values):
                if len(kept) >= _KEPT_MAX:
                    kept.clear()
                kept[key] = known
        attributes = dict(known)
        port = get("REMOTE_PORT")
        if self._new:
            if target:
                path = get("PATH_INFO")
                if path:
                    attributes["url.path"] = path
            if port:
                try:
                    attributes["client.port"] = int(port)
                except (TypeError, ValueError):
                    pass
        if self._old:
            if target:
                attributes["http.target"] = (target.partition("?")[0]
                                             if type(target) is str else target)
            else:
                _set_url(attributes, environ)
            if port:
                try:
                    attributes["net.peer.port"] = int(port)
                except (TypeError, ValueError):
                    pass
        return attributes

    def response(self, span: trace.Span, status: str, headers: Any) -> None:
        """``add_response_attributes(span, status, headers)``, its effect on a
        recording span computed once per status line."""
        if not self._kept or not span.is_recording():
            add_response_attributes(span, status, headers, **self._args)
            return
        keyed = type(status) is str
        calls = self._by_status.get(status) if keyed else None
        if calls is None:
            noted = _Noted()
            add_response_attributes(noted, status, headers,  # type: ignore[arg-type]
                                    **self._args)
            calls = tuple(noted.calls)
            if keyed:
                if len(self._by_status) >= _KEPT_MAX:
                    self._by_status.clear()
                self._by_status[status] = calls
        for key, value in calls:
            if key:
                span.set_attribute(key, value)
            else:
                span.set_status(value)


def _set_url(attributes: dict[str, Any], environ: dict[str, Any]) -> None:
    """``http.url`` of a request without a request target, as the
    instrumentation makes it (``redact_url(request_uri(environ))``) but
    without the query: the kept ``scheme://host/`` of the connection (its
    credentials removed) and the request's quoted path."""
    base = attributes.get("http.url")
    path = environ.get("PATH_INFO") or ""
    if (not isinstance(base, str) or not base.endswith("/")
            or environ.get("SCRIPT_NAME") or type(path) is not str):
        try:
            attributes["http.url"] = redact_url(
                request_uri(environ, include_query=False)).partition("?")[0]
        except Exception:
            attributes.pop("http.url", None)
        return
    # quote() leaves such a path as it is (Zaqar's routes, queue names, ids).
    quoted = path if _UNQUOTED.fullmatch(path) else quote(
        path, safe="/;=,", encoding="latin1")
    attributes["http.url"] = base + quoted[1:]


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


def _split_server_address(attributes: dict[str, Any],
                          address_key: str = "server.address",
                          port_key: str = "server.port") -> None:
    """``server.address`` (``net.host.name``) is the host alone (the wsgi
    instrumentation copies the Host header, port included); the port goes
    to ``server.port`` (``net.host.port``)."""
    address = attributes.get(address_key)
    if not isinstance(address, str):
        return
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or (host.count(":") and not host.endswith("]")):
        return  # no port, or a bare IPv6 address
    attributes[address_key] = host.strip("[]")
    attributes.setdefault(port_key, int(port))
