"""The OTel SDK's and exporters' loggers, named by their modules: most of
them private to the SDK, so named here only, with the filters zaqar-otel
puts on them.

* ``hide_secrets``: the loggers that may quote an endpoint URL or a header
  value get ``redact``'s mask of the environment's endpoints and headers.
* ``quiet_drop_lines``: the SDK's per-batch failure lines (and its line for
  each attribute value cut to the length limit) leave the log, where
  ``export.processor.DropCounter`` says the same in two lines an outage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from zaqar_otel import redact

#: Loggers that may quote an endpoint URL or a header value.
SECRETS = tuple(f"opentelemetry.{name}" for name in (
    "exporter.otlp.proto.http.trace_exporter",
    "exporter.otlp.proto.http.metric_exporter",
    "exporter.otlp.proto.http._log_exporter",
    "exporter.otlp.proto.http._common",
    "exporter.otlp.common.http",
    "exporter.otlp.proto.grpc.exporter",
    "exporter.otlp.proto.grpc.trace_exporter",
    "exporter.otlp.proto.grpc.metric_exporter",
    "sdk.trace.export",
    "sdk.metrics._internal.export",
    "sdk._shared_internal",
    "util.re",
))
#: Of those, the one that quotes header values only (the headers' parser).
HEADER_VALUES = ("opentelemetry.util.re",)

#: Loggers of the SDK's per-batch failure lines, and those lines' starts.
DROPS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk._shared_internal",
)
FULL_QUEUE_LINE = "Queue full"
DROP_LINES = ("Transient error", "Failed to export", FULL_QUEUE_LINE)
# The SDK's line for each attribute value cut to the length limit: one per
# value, as often as a client sends a long header. Cutting is the limit's
# documented effect (the option's help, docs/faults.md), not news.
ATTRIBUTES = "opentelemetry.attributes"
TRUNCATED_LINES = ("String attribute value exceeds max length",)


def hide_secrets(secrets: redact.Secrets) -> Callable[[], None]:
    """Mask ``secrets`` in what SECRETS log; returns the undo."""
    return redact.hide_logged_secrets(secrets, SECRETS, HEADER_VALUES)


class _QuietLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_drop_lines(counts_full_queue: bool) -> None:
    """Keep the SDK's per-batch failure lines (and its "Queue full" ones,
    when ``counts_full_queue``: the guard counts those) out of the log."""
    drops = DROP_LINES if counts_full_queue else tuple(
        line for line in DROP_LINES if line != FULL_QUEUE_LINE)
    for name, starts in ((*((n, drops) for n in DROPS),
                          (ATTRIBUTES, TRUNCATED_LINES))):
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _QuietLines)]:
            logger.removeFilter(old)
        logger.addFilter(_QuietLines(starts))
