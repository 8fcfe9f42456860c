"""A kept-alive ``http.client`` connection as the SDK's OTLP/HTTP transport.

The SDK's OTLP/HTTP exporter (1.45) sends through a transport object
(``opentelemetry.exporter.http.transport``: ``request``, ``close``,
``is_connection_error``); its own posts through a ``requests`` session. For
a plain ``http://`` collector (an agent on the host, a collector in the
same cluster) that costs about ten times what the bytes on the socket do:
one 168 KB export, measured alone under callgrind, is 3.48 M instructions
through the session against 0.33 M through a kept-alive
``http.client.HTTPConnection``, all of it on the export thread holding the
GIL while Zaqar's request threads wait (docs/performance.md).

``Connection`` is that transport. Everything above it stays the SDK's:
headers, compression, retries with back-off and ``Retry-After``, the one
immediate retry of a connection error, the timeout, the 413 handling of
``otlp_http``. ``for_endpoint`` gives it only where nothing of what the
session would add applies: an ``http://`` URL without user or password,
no proxy from the environment for it, no ~/.netrc entry for its host;
HTTPS, proxies and credentials keep the SDK's session.
"""

from __future__ import annotations

import functools
import http.client
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

#: What makes the SDK's exporter post through a session of the operator's
#: (a credential provider): that session keeps posting.
CREDENTIAL_PROVIDERS = ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
                        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER")


def for_endpoint(url: str) -> Any | None:
    """A ``Connection`` for ``url``, or None where the SDK's session must
    post (see the module) or the SDK has no transport interface."""
    if any(os.environ.get(name) for name in CREDENTIAL_PROVIDERS):
        return None
    try:
        import requests.utils
        from opentelemetry.exporter.http.transport import _base  # noqa: F401
    except ImportError:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if (parts.scheme != "http" or not parts.hostname or parts.username is not None
            or parts.password is not None):
        return None
    proxies = requests.utils.get_environ_proxies(url)  # {"no": ...} too
    if requests.utils.select_proxy(url, proxies) or requests.utils.get_netrc_auth(url):
        return None
    return _transport_class()(parts.hostname, port or 80, _path(parts), url)


@functools.cache
def _transport_class() -> type:
    from opentelemetry.exporter.http.transport._base import (
        BaseHTTPResult,
        BaseHTTPTransport,
    )

    @dataclass(frozen=True, slots=True)
    class Result(BaseHTTPResult):
        body: bytes = b""
        # http.client's message: case-insensitive, as the interface asks.
        header_map: Any = field(default_factory=dict)

        def content(self) -> bytes:
            return self.body

        def headers(self) -> Mapping[str, str]:
            return self.header_map  # type: ignore[no-any-return]

    class Connection(BaseHTTPTransport):
        """POSTs to one ``http://`` endpoint over one kept-alive connection
        (made again after any error: the next request reconnects)."""

        def __init__(self, host: str, port: int, path: str, url: str) -> None:
            self.host, self.port, self.path, self.url = host, port, path, url
            self._connection: http.client.HTTPConnection | None = None
            self._lock = threading.Lock()  # one request at a time on it
            self._pid = os.getpid()

        def request(self, method: str, url: str, *,
                    headers: dict[str, str] | None = None,
                    timeout: float | None = None,
                    data: bytes | None = None) -> BaseHTTPResult:
            if self._pid != os.getpid():
                # A forked worker (uwsgi forks without Python's at-fork
                # hooks): the parent's socket is not its own to write on,
                # and the lock may have been held at the fork. Its own.
                self._pid = os.getpid()
                self._lock = threading.Lock()
                self._connection = None  # the parent's: left to the parent
            with self._lock:
                try:
                    return self._request(method, url, headers or {}, timeout, data)
                except Exception as error:
                    self._drop()
                    return Result(error=error)

        def _request(self, method: str, url: str, headers: dict[str, str],
                     timeout: float | None, data: bytes | None) -> BaseHTTPResult:
            # A deadline already passed still gets a short try, as the
            # session's timeout of 0 would fail at once.
            wait = None if timeout is None else max(timeout, 0.001)
            connection = self._connection
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=wait)
                self._connection = connection
            elif connection.sock is not None:
                connection.sock.settimeout(wait)
            connection.timeout = wait
            path = self.path if url == self.url else _path(urlsplit(url))
            try:
                connection.request(method, path, body=data, headers=headers)
            except OSError as error:
                # A collector refusing a body (413) may answer and close
                # before reading all of it: the answer is there to read.
                response = _early_answer(connection, error)
            else:
                response = connection.getresponse()
            body = response.read()  # all of it: the connection is kept
            if response.will_close:
                self._drop()
            return Result(status_code=response.status, reason=response.reason,
                          body=body, header_map=response.headers)

        def _drop(self) -> None:
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.close()

        def is_connection_error(self, exception: Exception | None) -> bool:
            # Refused, reset, timed out, or a kept-alive connection the
            # collector closed meanwhile (RemoteDisconnected): as the
            # session's ConnectionError and Timeout.
            return isinstance(exception, (OSError, http.client.HTTPException))

        def close(self) -> None:
            with self._lock:
                self._drop()

    return Connection


def _path(parts: SplitResult) -> str:
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _early_answer(connection: http.client.HTTPConnection,
                  error: OSError) -> http.client.HTTPResponse:
    """The answer a server sent before it stopped reading the request (as
    urllib3 reads it), else ``error``."""
    if connection.sock is None:
        # Never connected (refused, unreachable): no answer to read. Python
        # 3.13's getresponse would build a response on no socket, whose
        # finalizer prints a traceback to stderr.
        raise error
    try:
        return connection.getresponse()
    except Exception:
        raise error from None
