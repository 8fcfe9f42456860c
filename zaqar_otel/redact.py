"""URLs as they may be exported: no credentials, no query string."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace

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


def requests_hook(span: trace.Span, request: Any) -> None:
    """``request_hook`` of the requests instrumentation: URL without query.

    The instrumentation removes credentials and a few known signature
    parameters; webhook URLs carry tokens under any name.
    """
    if span.is_recording():
        url = redact_uri(str(getattr(request, "url", "")))
        for name in URL_ATTRIBUTES:
            span.set_attribute(name, url)
