"""A Jaeger trace as osprofiler's report: what ``osprofiler trace show`` reads.

osprofiler's drivers feed each trace point's start and stop notification to
``Driver._append_results`` and turn them into the report with
``Driver._parse_results``: ``{"info": {"name": "total", "started": 0,
"finished": ms, "last_trace_started": ms}, "children": [node, ...],
"stats": {name: {"count", "duration"}}}``, each node ``{"info": {"name",
"project", "service", "host", "started", "finished" (ms from the trace's
start), "exception", "meta.raw_payload.<type>-start": {...},
"meta.raw_payload.<type>-stop": {...}}, "trace_id", "parent_id",
"children"}``. :func:`osprofiler_report` feeds them the spans Jaeger holds,
so the report is osprofiler's own, built by its own code::

    report = osprofiler_report(trace)       # json.dumps(report) reads as
                                            # osprofiler trace show --json

The mapping (invariant 1): a node's ``trace_id`` is the OSProfiler uuid of
the span (``idmap.uuid_from_span_id``), its ``parent_id`` its parent's uuid,
or the trace's ``base_id`` for a root, as osprofiler writes a root. ``name``
is the span's name; ``service`` the service that sent it (Jaeger's service
name), ``project`` its ``service.namespace`` when it has one, ``host`` its
``host.name``. A span whose parent is not in the trace is a top-level node,
as osprofiler's ``_build_tree`` places it. The raw payloads hold what Jaeger
holds (kind, tags, events, links, Jaeger's warnings), the start payload's
``info`` with ``kind`` and ``tags``, the stop payload's with ``etype`` and
``message`` for an error, as osprofiler's notifications have them.
"""

from __future__ import annotations

import datetime
from typing import Any

from osprofiler.drivers import base

from zaqar_otel.cmd.jaeger_api import Span, Trace
from zaqar_otel.propagation import idmap

__all__ = ["osprofiler_report"]

_EPOCH = datetime.datetime(1970, 1, 1)
# osprofiler's notification timestamp format (_append_results parses it).
_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%f"


class _ReportBuilder(base.Driver):
    """osprofiler's Driver, used only for its report building (the two
    protected methods every osprofiler driver calls); stores nothing."""

    @classmethod
    def get_name(cls) -> str:
        return "zaqar-otel-jaeger-report"


def _timestamp(us: int) -> str:
    return (_EPOCH + datetime.timedelta(microseconds=us)).strftime(_TIMESTAMP)


def _point_type(span: Span) -> str:
    """The type of the trace point a span stands for (osprofiler's ``wsgi``,
    ``db``...), one word: osprofiler names the node and the payloads by it."""
    name = span.tags.get("osprofiler.name")
    if isinstance(name, str) and name:
        word = name
    elif span.kind == "SERVER" and any(k.startswith("http.") for k in span.tags):
        word = "wsgi"
    elif any(key in span.tags for key in ("db.system", "db.system.name",
                                          "db.statement", "db.query.text")):
        word = "db"
    else:
        word = span.kind.lower() or "span"
    return word.replace("-", "_").replace(".", "_")


def _error(span: Span) -> tuple[str, str] | None:
    """(exception type, message) of an error span, as osprofiler's etype."""
    for _, fields in span.logs:
        if fields.get("event") == "exception" or "exception.type" in fields:
            return (str(fields.get("exception.type", "Exception")),
                    str(fields.get("exception.message", span.status_message)))
    if span.status_code == "ERROR":
        return "Error", span.status_message
    return None


def osprofiler_report(trace: Trace) -> dict[str, Any]:
    """osprofiler's report (``get_report``'s dict) of a trace from Jaeger."""
    builder = _ReportBuilder("jaeger")
    trace_id = trace.trace_id
    base_id = idmap.base_id_from_trace_id(trace_id)
    for span in sorted(trace.spans, key=lambda s: s.start_us):
        uuid = idmap.uuid_from_span_id(trace_id, span.span_id)
        parent = (base_id if span.parent_span_id is None
                  else idmap.uuid_from_span_id(trace_id, span.parent_span_id))
        point = _point_type(span)
        project = span.process_tags.get("service.namespace")
        project = str(project) if project is not None else None
        common = {"base_id": base_id, "trace_id": uuid, "parent_id": parent,
                  "project": project, "service": span.service}
        started, stopped = _timestamp(span.start_us), _timestamp(span.end_us)
        start_info: dict[str, Any] = {
            "host": span.host, "name": span.name, "kind": span.kind,
            "otel": {"trace_id": f"{trace_id:032x}",
                     "span_id": f"{span.span_id:016x}",
                     "parent_span_id": (f"{span.parent_span_id:016x}"
                                        if span.parent_span_id is not None else None),
                     "duration_us": span.duration_us},
            "tags": span.tags}
        if span.links:
            start_info["links"] = [{"trace_id": f"{t:032x}", "span_id": f"{s:016x}"}
                                   for t, s in span.links]
        if span.warnings:
            start_info["warnings"] = list(span.warnings)
        stop_info: dict[str, Any] = {"host": span.host}
        if span.logs:
            stop_info["events"] = [{"timestamp": _timestamp(ts), **fields}
                                   for ts, fields in span.logs]
        error = _error(span)
        if error is not None:
            stop_info["etype"], stop_info["message"] = error
        for suffix, timestamp, info in (("start", started, start_info),
                                        ("stop", stopped, stop_info)):
            name = f"{point}-{suffix}"
            builder._append_results(
                uuid, parent, name, project, span.service, span.host, timestamp,
                {"name": name, **common, "timestamp": timestamp, "info": info})
        # _append_results names the node by the point's type; the span's
        # own name says more (and is what Jaeger shows).
        builder.result[uuid]["info"]["name"] = span.name
    return builder._parse_results()
