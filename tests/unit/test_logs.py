"""Log records that name their trace: the fields, traced or not, and the undo."""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from zaqar_otel import logs


def _record() -> logging.LogRecord:
    return logging.getLogger("zaqar.test").makeRecord(
        "zaqar.test", logging.INFO, __file__, 1, "a line", (), None)


def test_a_traced_line_carries_its_trace_and_span_and_others_are_empty() -> None:
    undo = logs.install()
    try:
        untraced = _record()
        tracer = TracerProvider().get_tracer("t")
        with tracer.start_as_current_span("s") as span:
            traced = _record()
            ids = span.get_span_context()
        unsampled = SpanContext(0x1234, 0x5678, is_remote=True,
                                trace_flags=TraceFlags(TraceFlags.DEFAULT))
        with trace.use_span(NonRecordingSpan(unsampled)):
            # An untraced request runs under an unsampled stand-in parent.
            stand_in = _record()
    finally:
        undo()
    assert (untraced.otel_trace_id, untraced.otel_span_id) == ("", "")
    assert (stand_in.otel_trace_id, stand_in.otel_span_id) == ("", "")
    assert traced.otel_trace_id == f"{ids.trace_id:032x}"
    assert traced.otel_span_id == f"{ids.span_id:016x}"
    # What a format string naming the fields renders.
    line = logging.Formatter("%(message)s [%(otel_trace_id)s %(otel_span_id)s]")
    assert line.format(traced) == f"a line [{ids.trace_id:032x} {ids.span_id:016x}]"
    assert line.format(untraced) == "a line [ ]"


def test_install_chains_the_factory_found_and_undo_restores_it() -> None:
    before = logging.getLogRecordFactory()
    undo = logs.install()
    assert logs.install()() is None  # a second install changes nothing
    assert logging.getLogRecordFactory() is not before
    undo()
    assert logging.getLogRecordFactory() is before
    assert not hasattr(_record(), logs.TRACE_ID_FIELD)
