"""Text as it may be exported: no credentials, no query strings, no values.

Exception messages quote whatever failed: SQLAlchemy appends the statement's
bound parameters on later lines, requests the URL with its query (webhook
tokens), drivers the URI with its password. Only what is safe is kept.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

#: Longest exception message exported.
MAX_MESSAGE = 256
_CREDENTIALS = re.compile(r"(?<=://)[^/\s@'\"]+@")
_QUERY = re.compile(r"\?[^\s'\")\]]*")

_TRACEBACK_MARKERS = ("Traceback", "During handling of", "The above exception")

#: Attributes of the requests instrumentation that hold the full URL.
URL_ATTRIBUTES = ("url.full", "http.url")


def redact_uri(uri: str) -> str:
    """``uri`` without user, password and query (which may hold secrets).

    Multi-host URIs (MongoDB replica sets, Redis sentinels) keep every host.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "(unparsable)"
    # After the last "@": hosts only, however many, IPv6 brackets kept.
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, hosts, parts.path, "", "")) or "(unparsable)"


def userinfo(text: str) -> str:
    """``text`` with the user and password of every URL in it masked
    (``http://user:PW@host`` -> ``http://***@host``): for log lines and
    command output that name an endpoint."""
    return _CREDENTIALS.sub("***@", text)


def requests_hook(span: trace.Span, request: Any) -> None:
    """``request_hook`` of the requests instrumentation: URL without query.

    The instrumentation removes credentials and a few known signature
    parameters; webhook URLs carry tokens under any name.
    """
    if span.is_recording():
        url = redact_uri(str(getattr(request, "url", "")))
        for name in URL_ATTRIBUTES:
            span.set_attribute(name, url)


def message(text: object) -> str:
    """An exception message as exported: its first line (SQLAlchemy puts the
    statement and parameters below), no URL credentials, no query strings."""
    first = str(text).split("\n", 1)[0]
    return _QUERY.sub("", _CREDENTIALS.sub("", first))[:MAX_MESSAGE]


def stacktrace(text: str) -> str:
    """A traceback with its frames kept and its exception messages redacted:
    the first line of each, the lines below it (SQL parameters) dropped."""
    kept: list[str] = []
    in_message = False
    for line in text.split("\n"):
        if not line or line.startswith(_TRACEBACK_MARKERS):
            in_message = False
            kept.append(line)
        elif in_message:
            continue
        elif line.startswith(" "):
            kept.append(line)  # a frame: file, line, source
        else:
            in_message = True
            kept.append(message(line))
    return "\n".join(kept)


def record_error(span: trace.Span, exc: BaseException) -> None:
    """``span.record_exception`` without what the message may carry.

    Called while Zaqar's own exception propagates: it never raises, so that
    exception is the one Zaqar's caller sees.
    """
    try:
        span.add_event("exception", {"exception.type": type(exc).__qualname__,
                                     "exception.message": message(exc)})
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    except Exception:  # noqa: S110 - the error being recorded matters more
        pass
