"""propagation.log_guard: the API's propagators' warnings about a request's
headers, inert and at most one line a period (issue 24, item 2)."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from zaqar_otel.propagation import log_guard

HOSTILE = {
    "baggage": "\x1b[31mkey\x1b[0m,a\nFORGED line," + "x" * 5000,
    "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    "tracestate": "bad member \x1b[2J\nFORGED",
}


def test_header_text_never_reaches_a_record_and_one_line_a_period(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    guard = log_guard.HeaderWarnings(period=300, clock=lambda: now[0])
    loggers = [logging.getLogger(n) for n in log_guard.LOGGERS]
    for logger in loggers:
        logger.addFilter(guard)
    try:
        caplog.set_level(logging.WARNING)
        for _ in range(50):
            W3CBaggagePropagator().extract(HOSTILE)
            TraceContextTextMapPropagator().extract(HOSTILE)
        now[0] += 301
        W3CBaggagePropagator().extract(HOSTILE)
    finally:
        for logger in loggers:
            logger.removeFilter(guard)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert all("\x1b" not in line and "\n" not in line and "FORGED" not in line
               and "key" not in line and len(line) < 400 for line in lines)
    assert "(0 left out" in lines[0] and "left out since the last one" in lines[1]
    assert "(0 left out" not in lines[1]


def test_install_is_undone() -> None:
    undo = log_guard.install()
    logger = logging.getLogger(log_guard.LOGGERS[0])
    assert any(isinstance(f, log_guard.HeaderWarnings) for f in logger.filters)
    undo()
    assert not any(isinstance(f, log_guard.HeaderWarnings) for f in logger.filters)
