"""Log lines that name their trace: ``%(otel_trace_id)s`` and ``%(otel_span_id)s``.

Every log record made while a traced request runs gets the trace id (32 hex
digits, as Jaeger shows it: an OSProfiler ``base_id`` without its dashes)
and the id of the span then current (16 hex digits); any other record gets
empty strings, so a format string that names them works for every line,
traced or not, before and after set-up. oslo.log formats with the record's
attributes, so both ``logging_context_format_string`` and
``logging_default_format_string`` can use them::

    [DEFAULT]
    logging_context_format_string = %(asctime)s.%(msecs)03d %(process)d
        %(levelname)s %(name)s [%(global_request_id)s %(request_id)s
        %(user_identity)s] [trace %(otel_trace_id)s span %(otel_span_id)s]
        %(instance)s%(message)s

The fields come from a log record factory (``logging.setLogRecordFactory``)
installed by ``instrument.install()``, before Zaqar sets up its logging: a
handler's filter would miss handlers oslo.log adds later, and a record
without the attributes would make every line of such a format fail. It
chains the factory it found and is undone by ``uninstall()``::

    undo = install()
    logging.getLogger("x").info("...")   # record.otel_trace_id == "" untraced
    undo()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

TRACE_ID_FIELD = "otel_trace_id"
SPAN_ID_FIELD = "otel_span_id"


def fields() -> tuple[str, str]:
    """(trace id, span id) of the sampled span current here, else ("", "")."""
    span_context = trace.get_current_span().get_span_context()
    # An untraced request runs under an unsampled stand-in parent whose ids
    # name no exported trace: those lines get no id.
    if not span_context.trace_flags.sampled or not span_context.is_valid:
        return "", ""
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


class _WithTraceFields:
    """A log record factory that adds the two fields to what ``previous`` makes."""

    def __init__(self, previous: Callable[..., logging.LogRecord]) -> None:
        self.previous = previous

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        try:
            trace_id, span_id = fields()
        except Exception:  # a log line must never fail for its trace ids
            trace_id = span_id = ""
        setattr(record, TRACE_ID_FIELD, trace_id)
        setattr(record, SPAN_ID_FIELD, span_id)
        return record


def install() -> Callable[[], None]:
    """Add the fields to every log record from now on; returns the undo."""
    current = logging.getLogRecordFactory()
    if isinstance(current, _WithTraceFields):
        return lambda: None
    factory = _WithTraceFields(current)
    logging.setLogRecordFactory(factory)

    def undo() -> None:
        # Only if nobody chained another factory over ours since.
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(factory.previous)

    return undo
