"""What the OTel API's W3C propagators log about a request's headers, made inert.

The API's ``traceparent`` / ``tracestate`` and ``baggage`` extractors log a
WARNING for each malformed ``tracestate`` or ``baggage`` member, quoting the
client's text: control characters, terminal escapes, and over websocket (whose
header values are any JSON string) a ``\\n`` that forges a log line of its
own. They do so for every request carrying one, traced or not, so any client
could make Zaqar's log grow as fast as it sends (issue 24: 150 requests with
an 8 KB ``baggage`` header, 1,242 KiB of log against plain Zaqar's 10 KiB).
Invariant 8: untrusted text stays inert.

``install()`` puts one filter on those loggers: a record keeps the SDK's own
fixed text with every value of its arguments left out (``...``), and at most
one such line is written every ``PERIOD`` seconds; the next one says how many
were left out. Set-up installs it with the propagators and removes it at
teardown::

    undo = log_guard.install()
    ...
    undo()
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

#: The API's loggers that quote header text: baggage's extractor, TraceState
#: (tracestate members), the trace-context extractor.
LOGGERS = (
    "opentelemetry.baggage.propagation",
    "opentelemetry.baggage",
    "opentelemetry.trace.span",
    "opentelemetry.trace.propagation.tracecontext",
)
#: Seconds between two lines about malformed trace headers, at most.
PERIOD = 300.0

_PLACEHOLDER = re.compile(r"%[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[a-zA-Z%]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Longest SDK text kept (its messages are one short sentence).
_MAX_TEXT = 200


def inert(template: object) -> str:
    """The SDK's message template with its values left out, no control
    character, bounded: ``"Invalid baggage entry: `%s`"`` -> ``"Invalid
    baggage entry: `...`"``."""
    text = template if isinstance(template, str) else type(template).__name__
    text = _PLACEHOLDER.sub(lambda m: "%" if m.group() == "%%" else "...", text)
    return _CONTROL.sub(" ", text)[:_MAX_TEXT]


class HeaderWarnings(logging.Filter):
    """At most one inert line every ``period`` seconds for all the loggers
    it is on; the rest are dropped and counted."""

    def __init__(self, period: float = PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._next: float | None = None
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        with self._lock:
            if self._next is not None and now < self._next:
                self.left_out += 1
                return False
            left_out, self.left_out = self.left_out, 0
            self._next = now + self.period
        said = inert(record.msg)
        record.msg = ("zaqar-otel: a request's trace headers were partly ignored "
                      "(%s); the header text is not logged, and at most one such "
                      "line every %d s (%d left out since the last one)")
        record.args = (said, round(self.period), left_out)
        return True


def install(period: float = PERIOD) -> Callable[[], None]:
    """Put a ``HeaderWarnings`` filter on ``LOGGERS``; returns its undo."""
    guard = HeaderWarnings(period)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        for old in [f for f in logger.filters if isinstance(f, HeaderWarnings)]:
            logger.removeFilter(old)
        logger.addFilter(guard)

    def undo() -> None:
        for logger in loggers:
            logger.removeFilter(guard)

    return undo
