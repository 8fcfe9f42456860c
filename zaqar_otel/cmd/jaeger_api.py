"""Jaeger's query API, read for ``zaqar-otel trace show`` / ``trace list``.

The JSON API the Jaeger UI reads (Jaeger v1 and v2 serve it on the UI's
port, 16686): ``/api/traces/{id}`` (one trace: ``data[0].spans`` with
``traceID``, ``spanID``, ``operationName``, ``references``, ``startTime`` and
``duration`` in microseconds, ``tags``, ``logs``, ``processID``,
``warnings``; and ``processes``), ``/api/traces?service=S&limit=N&start&end``
(the newest traces of a service) and ``/api/services``::

    client = JaegerClient("http://localhost:16686", timeout=10)
    trace = client.trace(trace_id)          # Trace, or JaegerError
    for summary in client.recent(service="zaqar", limit=20): ...

Every text that came from Jaeger (span and service names, tag values, log
fields, warnings: clients choose some of them) is stripped of control
characters here (:func:`printable`), before anything prints it (invariant 8).
Failures are :class:`JaegerError` subclasses, each with a one-line message.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JaegerClient", "JaegerError", "JaegerUnreachable", "Span",
           "Trace", "TraceNotFound", "printable"]

# C0 and C1 controls, DEL, and the format characters a terminal or a page
# can be tricked with (bidi overrides and isolates, line and paragraph
# separators, zero-width joiners and BOM).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
# A text longer than this is cut: a terminal line, not a payload.
MAX_TEXT = 4096
# Jaeger's answer is read up to this many bytes (a 5,000-span trace is ~10 MB).
MAX_ANSWER = 512 * 1024 * 1024


def printable(value: object, limit: int = MAX_TEXT) -> str:
    """``value`` as text without control characters, at most ``limit`` long."""
    text = _CONTROL.sub(" ", value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _clean(value: Any) -> Any:
    """A tag or log value: strings cleaned, numbers and booleans kept."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    return printable(value)


class JaegerError(Exception):
    """Jaeger could not give what was asked; ``str()`` is one line."""


class JaegerUnreachable(JaegerError):
    """No answer: Jaeger is down, the address is wrong, or it timed out."""


class TraceNotFound(JaegerError):
    """Jaeger answered that it has no such trace."""


@dataclass(frozen=True)
class Span:
    """One span as Jaeger shows it; ids as ints, times in microseconds."""

    trace_id: int
    span_id: int
    parent_span_id: int | None
    name: str
    kind: str                      # SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
    start_us: int
    duration_us: int
    service: str
    host: str
    tags: dict[str, Any]
    process_tags: dict[str, Any]
    logs: tuple[tuple[int, dict[str, Any]], ...] = ()
    links: tuple[tuple[int, int], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    @property
    def status_code(self) -> str:
        """OK, ERROR or UNSET, from ``otel.status_code`` and ``error``."""
        code = str(self.tags.get("otel.status_code", "")).upper()
        if code in ("OK", "ERROR"):
            return code
        return "ERROR" if self.tags.get("error") in (True, "true") else "UNSET"

    @property
    def status_message(self) -> str:
        return str(self.tags.get("otel.status_description", ""))


@dataclass(frozen=True)
class Trace:
    """The spans of one trace, in Jaeger's order, with Jaeger's warnings."""

    trace_id: int
    spans: tuple[Span, ...]
    warnings: tuple[str, ...] = ()
    fetched_at: float = field(default_factory=time.time)

    def missing_parents(self) -> set[int]:
        """Parent span ids that no span of the trace has."""
        ids = {s.span_id for s in self.spans}
        return {s.parent_span_id for s in self.spans
                if s.parent_span_id is not None and s.parent_span_id not in ids}

    @property
    def start_us(self) -> int:
        return min((s.start_us for s in self.spans), default=0)

    @property
    def end_us(self) -> int:
        return max((s.end_us for s in self.spans), default=0)


def _tags(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in items or ():
        if isinstance(tag, dict) and "key" in tag:
            out[printable(tag["key"], 256)] = _clean(tag.get("value"))
    return out


def _hex(value: Any) -> int:
    return int(str(value), 16)


def parse_trace(data: dict[str, Any]) -> Trace:
    """A :class:`Trace` of one element of the ``data`` list Jaeger answers."""
    processes = {key: (printable(p.get("serviceName", ""), 256), _tags(p.get("tags")))
                 for key, p in (data.get("processes") or {}).items()
                 if isinstance(p, dict)}
    trace_id = _hex(data["traceID"])
    spans = []
    for raw in data.get("spans") or ():
        service, process_tags = processes.get(raw.get("processID"), ("", {}))
        tags = _tags(raw.get("tags"))
        parent = None
        links = []
        for ref in raw.get("references") or ():
            ref_trace, ref_span = _hex(ref["traceID"]), _hex(ref["spanID"])
            if (ref.get("refType") == "CHILD_OF" and parent is None
                    and ref_trace == trace_id):
                parent = ref_span
            else:
                links.append((ref_trace, ref_span))
        logs = tuple((int(log.get("timestamp", 0)), _tags(log.get("fields")))
                     for log in raw.get("logs") or () if isinstance(log, dict))
        spans.append(Span(
            trace_id=_hex(raw.get("traceID", data["traceID"])),
            span_id=_hex(raw["spanID"]),
            parent_span_id=parent,
            name=printable(raw.get("operationName", ""), 512),
            kind=str(tags.get("span.kind", "internal")).upper(),
            start_us=int(raw.get("startTime", 0)),
            duration_us=int(raw.get("duration", 0)),
            service=service,
            host=str(process_tags.get("host.name", process_tags.get("hostname", ""))),
            tags=tags,
            process_tags=process_tags,
            logs=logs,
            links=tuple(links),
            warnings=tuple(printable(w) for w in raw.get("warnings") or ()),
        ))
    return Trace(trace_id, tuple(spans),
                 tuple(printable(w) for w in data.get("warnings") or ()))


@dataclass(frozen=True)
class Summary:
    """One trace of ``trace list``."""

    trace_id: int
    start_us: int
    duration_us: int
    spans: int
    errors: int
    services: tuple[str, ...]
    root: str


def summarize(trace: Trace) -> Summary:
    """The line ``trace list`` prints for a trace."""
    ids = {s.span_id for s in trace.spans}
    roots = sorted((s for s in trace.spans
                    if s.parent_span_id is None or s.parent_span_id not in ids),
                   key=lambda s: s.start_us)
    root = f"{roots[0].service}: {roots[0].name}" if roots else ""
    return Summary(
        trace.trace_id, trace.start_us, trace.end_us - trace.start_us,
        len(trace.spans), sum(s.status_code == "ERROR" for s in trace.spans),
        tuple(sorted({s.service for s in trace.spans})), root)


def _jaeger_errors(exc: urllib.error.HTTPError) -> bool:
    """Whether an error answer is Jaeger's: JSON with an ``errors`` list."""
    try:
        body = json.loads(exc.read(65536))
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and isinstance(body.get("errors"), list)


class JaegerClient:
    """Reads Jaeger's query API at ``url`` (the UI's address)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"not an http(s) URL: {printable(url, 200)!r}")
        self.url = url.strip().rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        # http(s) only: __init__ refuses any other scheme.
        request = urllib.request.Request(  # noqa: S310
            url, headers={"Accept": "application/json"})
        where = printable(self.url, 200)
        try:
            with urllib.request.urlopen(  # noqa: S310
                    request, timeout=self.timeout) as answer:
                body = answer.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and _jaeger_errors(exc):
                raise TraceNotFound(f"Jaeger at {where} has no {path}") from None
            if exc.code == 404:
                raise JaegerError(f"{where} answered 404 for {path}: is it "
                                  "Jaeger's UI / query address?") from None
            raise JaegerError(f"Jaeger at {where} answered {exc.code} "
                              f"{printable(exc.reason, 100)} for {path}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JaegerUnreachable(f"Jaeger does not answer at {where}: "
                                    f"{printable(reason, 200)}") from None
        if len(body) > MAX_ANSWER:
            raise JaegerError(f"Jaeger's answer for {path} is over "
                              f"{MAX_ANSWER >> 20} MB")
        try:
            return json.loads(body)
        except ValueError:
            raise JaegerError(f"{where} answered {path} with something that is "
                              "not JSON: is it Jaeger's UI / query address?") from None

    def trace(self, trace_id: int) -> Trace:
        """The trace, or :class:`TraceNotFound` / another :class:`JaegerError`."""
        hex_id = f"{trace_id:032x}"
        try:
            answer = self._get(f"/api/traces/{hex_id}")
        except TraceNotFound:
            raise TraceNotFound(f"trace {hex_id} not found in Jaeger at "
                                f"{printable(self.url, 200)}") from None
        data = answer.get("data") if isinstance(answer, dict) else None
        if not data:
            raise TraceNotFound(f"trace {hex_id} not found in Jaeger at "
                                f"{printable(self.url, 200)}")
        try:
            return parse_trace(data[0])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise JaegerError(f"Jaeger's answer for trace {hex_id} is not in the "
                              f"shape expected ({type(exc).__name__})") from None

    def services(self) -> list[str]:
        answer = self._get("/api/services")
        data = answer.get("data") if isinstance(answer, dict) else None
        return sorted(printable(s, 256) for s in data or ())

    def recent(self, service: str | None, limit: int,
               lookback_s: float = 86400.0, errors: bool = False) -> list[Summary]:
        """The newest ``limit`` traces (of ``service``, else of every
        service); with ``errors``, those with a span in error among the
        newest ``10 * limit`` (at most 1,000): Jaeger's search cannot ask
        for a span status."""
        end = int(time.time() * 1e6)
        start = end - int(lookback_s * 1e6)
        found: dict[int, Summary] = {}
        for name in [service] if service else self.services():
            query: dict[str, Any] = {
                "service": name, "limit": min(10 * limit, 1000) if errors else limit,
                "start": start, "end": end}
            try:
                answer = self._get("/api/traces", query)
            except TraceNotFound:
                continue
            traces = answer.get("data") if isinstance(answer, dict) else None
            for data in traces or ():
                try:
                    summary = summarize(parse_trace(data))
                except (KeyError, TypeError, ValueError, AttributeError):
                    continue
                if summary.errors or not errors:
                    found[summary.trace_id] = summary
        newest = sorted(found.values(), key=lambda s: s.start_us, reverse=True)
        return newest[:limit]
