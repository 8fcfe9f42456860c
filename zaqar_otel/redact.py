"""Text as it may be exported or logged: no credentials, no query strings,
no URL paths of third parties, no values.

Exception messages quote whatever failed: SQLAlchemy appends the statement's
bound parameters on later lines, requests the URL with its path and query
(webhook tokens: Slack, Teams and Discord keep theirs in the path), drivers
the URI with its password. Only what is safe is kept.

An endpoint's password may hold any character (``@``, ``/``, ``?``, a space),
so what looks like a URL's user and password runs to the last ``@`` before
the next URL; and the values an operator set in the environment's
``OTEL_EXPORTER_OTLP_*`` endpoints and headers are kept in a ``Secrets``
(``remember_environment``) and masked wherever they appear, in any form, in
the lines the ``Secrets``' owner logs or prints (``Secrets.mask``,
``hide_logged_secrets``). The process's ``Secrets`` belongs to set-up
(``hook.state.Hook``); this module keeps none.
"""

from __future__ import annotations

import json
import logging
import os
import re
import traceback
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

#: Longest exception message exported.
MAX_MESSAGE = 256
#: HTTP's methods as the HTTP semantic conventions list them. A client may
#: send any token as its method (Zaqar answers 405): any other is named by
#: a fixed word (``_OTHER``, ``HTTP``), never exported or kept as it came.
HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"))
_CREDENTIALS = re.compile(r"(?<=://)[^/\s@'\"]+@")
_QUERY = re.compile(r"\?[^\s'\")\]]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# A URL that starts a word: where the one before it ends at the latest.
_NEXT_URL = re.compile(r"(?<![^\s'\"(<\[=,])[A-Za-z][A-Za-z0-9+.-]*://")
# A URL in a message, and requests' "with url: /path".
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")
_URL_PATH = re.compile(r"(?<=with url: )/\S*")
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")

_TRACEBACK_MARKERS = ("Traceback", "During handling of", "The above exception")

#: Attributes of the requests instrumentation that hold the full URL.
URL_ATTRIBUTES = ("url.full", "http.url")

#: Variables whose URL may carry a user and password.
ENDPOINT_VARIABLES = tuple(f"OTEL_EXPORTER_OTLP{s}_ENDPOINT"
                           for s in ("", "_TRACES", "_METRICS", "_LOGS"))
#: Variables whose values are secrets (API keys of hosted collectors).
HEADER_VARIABLES = tuple(f"OTEL_EXPORTER_OTLP{s}_HEADERS"
                         for s in ("", "_TRACES", "_METRICS", "_LOGS"))
#: Shorter remembered values are not masked (they would garble any text).
MIN_SECRET = 4


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


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, nothing a caller chose after it
    (user, password, path, ``;params``, query, fragment). A URL without a
    host (``mailto:``) is its scheme alone: no address is exported."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "(unparsable)"
    host = parts.netloc.rpartition("@")[2].rpartition(":")[0] if port else (
        parts.netloc.rpartition("@")[2])
    scheme = parts.scheme.lower()
    if not host or not _HOST.fullmatch(host):
        return scheme or "(unparsable)"
    return f"{scheme}://{host.lower()}" + (f":{port}" if port else "")


def _forms(secret: str, shortest: int) -> set[str]:
    """``secret`` as a line may quote it: raw, percent-encoded or decoded,
    as repr or JSON escape it; no form shorter than ``shortest``."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
             unquote(secret), repr(secret)[1:-1], json.dumps(secret)[1:-1]}
    return {f for f in forms if len(f) >= shortest}


def credentials(url: str) -> tuple[str, ...]:
    """(user:password, password) of ``url``, the userinfo running to the last
    ``@`` (a password may hold one); () if it has none."""
    found = _SCHEME.search(url)
    if found is None:
        return ()
    rest = url[found.end():]
    info = rest[:rest.rfind("@")] if "@" in rest else ""
    return (info, info.partition(":")[2]) if info else ()


class Secrets:
    """Values never shown (endpoint passwords, header values), masked in
    every form a line may quote them by ``mask``."""

    def __init__(self) -> None:
        self._forms: dict[str, None] = {}  # insertion-ordered, no duplicates

    def remember(self, *secrets: str, shortest: int = MIN_SECRET) -> None:
        """Mask ``secrets`` (and their encoded forms) from now on; a form
        shorter than ``shortest`` would mask ordinary text, and is not."""
        for secret in secrets:
            for form in _forms(secret, shortest):
                self._forms[form] = None

    def remember_environment(self, environ: Mapping[str, str] = os.environ) -> None:
        """Remember the user:password of the ``OTEL_EXPORTER_OTLP_*``
        endpoints and the values of the ``*_HEADERS`` variables."""
        for name in ENDPOINT_VARIABLES:
            self.remember(*credentials(environ.get(name) or ""))
        for name in HEADER_VARIABLES:
            for item in (environ.get(name) or "").split(","):
                key, sep, value = item.partition("=")
                if sep:
                    self.remember(value.strip())

    def mask(self, text: str) -> str:
        """``userinfo(text)`` with every remembered secret masked too."""
        for secret in sorted(self._forms, key=len, reverse=True):
            text = text.replace(secret, "***")
        return userinfo(text)


def userinfo(text: str) -> str:
    """``text`` with the user and password of every URL in it masked, and
    ``http://alice:P@ss/w?rd@host`` ->
    ``http://***@host``, for log lines and command output that name an
    endpoint. What runs from ``://`` to the last ``@`` before the next URL is
    masked: a password may hold any character; a line that names an address
    after a URL loses a little more than the password."""
    out: list[str] = []
    done = 0
    while (found := _SCHEME.search(text, done)) is not None:
        start = found.end()
        following = _NEXT_URL.search(text, start)
        end = following.start() if following else len(text)
        at = text.rfind("@", start, end)
        out.append(text[done:start])
        if at != -1:
            out.append("***@")
            done = at + 1
        else:
            done = start
    out.append(text[done:])
    return "".join(out)


class _Masked(logging.Filter):
    """A record of the OTel SDK as ``Secrets.mask`` masks it, its traceback too:
    the exporters quote their endpoint URL ("Invalid URL 'http://alice:...'")
    and the header parser a malformed ``OTEL_EXPORTER_OTLP_HEADERS`` item
    (``values``: its arguments are replaced by ``***``)."""

    def __init__(self, secrets: Secrets, values: bool = False) -> None:
        super().__init__()
        self.secrets = secrets
        self.values = values

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if self.values and record.args:
                record.msg = str(record.msg).replace("%(", "%%(")
                count = len(record.args) if isinstance(record.args, tuple) else 1
                record.args = ("***",) * count
            record.msg, record.args = self.secrets.mask(record.getMessage()), ()
            if record.exc_info and record.exc_info[1] is not None:
                text = "".join(traceback.format_exception(*record.exc_info))
                record.exc_info = None
                record.exc_text = self.secrets.mask(text.rstrip())
        except Exception:  # noqa: S110 - a log line must never fail
            pass
        return True


def hide_logged_secrets(secrets: Secrets, loggers: Iterable[str],
                        values_only: Container[str] = ()) -> Callable[[], None]:
    """Put the filter masking ``secrets`` on the named ``loggers`` (on those
    in ``values_only``: header values only); returns its undo."""
    added: list[tuple[logging.Logger, _Masked]] = []
    for name in loggers:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _Masked)]:
            logger.removeFilter(old)
        masked = _Masked(secrets, values=name in values_only)
        logger.addFilter(masked)
        added.append((logger, masked))

    def undo() -> None:
        for logger, masked in added:
            logger.removeFilter(masked)

    return undo


def requests_hook(span: trace.Span, request: Any,
                  names: tuple[str, ...] = URL_ATTRIBUTES) -> None:
    """``request_hook`` of the requests instrumentation: the URL's origin,
    as each of ``names``.

    The instrumentation removes credentials and a few known signature
    parameters; webhook URLs carry tokens under any name, in the query, a
    ``;token=`` parameter or the path itself (Slack, Teams, Discord).
    """
    if span.is_recording():
        url = origin(str(getattr(request, "url", "")))
        for name in names:
            span.set_attribute(name, url)


def requests_hook_for(names: tuple[str, ...]) -> Callable[[trace.Span, Any], None]:
    """``requests_hook`` setting only ``names``: the URL attribute of the
    semantic-convention mode the instrumentation follows (``url.full``,
    ``http.url`` or both), so that the hook never adds the other's."""
    def hook(span: trace.Span, request: Any) -> None:
        requests_hook(span, request, names)

    return hook


def _hosts(url: str) -> str:
    """``scheme://hosts`` of a URL in a message (every host of a multi-host
    URI), no user, path or query."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(url)"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def message(text: object) -> str:
    """An exception message as exported: its first line (SQLAlchemy puts the
    statement and parameters below), no URL credentials, paths or query
    strings."""
    first = userinfo(str(text).split("\n", 1)[0]).replace("***@", "")
    first = _URL_PATH.sub("...", _URL.sub(lambda m: _hosts(m.group()), first))
    return _QUERY.sub("", first)[:MAX_MESSAGE]


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


def error_event(span: trace.Span, etype: str, text: object,
                description: str | None = None) -> None:
    """An error on ``span``: the ``exception`` event of type ``etype`` with
    the ``message`` of ``text`` (its first line, no URL credentials, paths or
    queries: SQLAlchemy's messages carry the bound parameters below), and
    the ERROR status, described by ``description``, else ``etype``."""
    span.add_event("exception", {"exception.type": etype,
                                 "exception.message": message(text)})
    span.set_status(Status(StatusCode.ERROR,
                           str(etype) if description is None else description))


def record_error(span: trace.Span, exc: BaseException) -> None:
    """``span.record_exception`` without what the message may carry.

    Called while Zaqar's own exception propagates: it never raises, so that
    exception is the one Zaqar's caller sees.
    """
    try:
        error_event(span, type(exc).__qualname__, exc, type(exc).__name__)
    except Exception:  # noqa: S110 - the error being recorded matters more
        pass
