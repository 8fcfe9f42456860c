"""Everything zaqar-otel reads of the OTel SDK's private layout, in one place.

Each look-up checks the layout it expects (the one of SDK 1.45) and returns
None when it differs, so that every caller can fall back to the SDK's public
path instead of failing or silently dropping spans:

* ``BatchSpanProcessor``'s queue (``_batch_processor._queue``), to count
  spans dropped from a full queue; without it the SDK logs those itself;
* the OTLP/HTTP exporter's parts (``_metrics``, ``_client``,
  ``_max_request_size``, ``_shutdown`` and ``_common``'s size check), for
  the exporter that encodes with ``otlp_encoding``; without them it exports
  through the SDK's own ``export`` and encoder;
* the OTLP/gRPC exporter's ``_translate_data`` hook, likewise;
* an exporter's ``_endpoint``, only to name the destination in log lines;
* the wsgi instrumentation's stable-HTTP mode (``_semconv._StabilityMode``),
  without which its attribute helpers give their default names;
* ``Resource._attributes``, which a forked worker's Resource replaces to take
  an instance id of its own; without it the worker keeps its parent's.

Usage::

    parts = sdk_layout.http_parts(exporter)
    if parts is None:
        return super().export(spans)      # the SDK's own encoder
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)

#: The SDK release whose layout these look-ups were written against.
KNOWN_LAYOUT = "1.45"


def batch_queue(processor: Any) -> Sized | None:
    """The span queue of a ``BatchSpanProcessor``, or None."""
    queue = getattr(getattr(processor, "_batch_processor", None), "_queue", None)
    return queue if isinstance(queue, Sized) else None


def batch_max_queue_size(processor: Any) -> int | None:
    """The queue's capacity the SDK chose (default or ``OTEL_BSP_*``)."""
    size = getattr(getattr(processor, "_batch_processor", None),
                   "_max_queue_size", None)
    return size if isinstance(size, int) and size > 0 else None


def exporter_endpoint(exporter: Any) -> str | None:
    """The URL an SDK OTLP exporter sends to, for log lines."""
    endpoint = getattr(exporter, "_endpoint", None)
    return endpoint if isinstance(endpoint, str) and endpoint else None


@dataclass(frozen=True)
class HttpParts:
    """What ``otlp_http.OTLPSpanExporter.export`` uses of the SDK's exporter."""

    metrics: Any  # has export_operation(count) -> context manager
    client: Any  # has export(body) -> result with success, error, status_code
    max_request_size: int
    too_large: Callable[[bytes, int], bool]
    too_large_error: type[Exception]


def http_parts(exporter: Any) -> HttpParts | None:
    """The SDK OTLP/HTTP exporter's private parts, or None if laid out
    otherwise."""
    try:
        from opentelemetry.exporter.otlp.proto.http import _common

        metrics, client = exporter._metrics, exporter._client
        max_size = exporter._max_request_size
        if not isinstance(exporter._shutdown, bool):
            return None
        parts = HttpParts(metrics, client, max_size, _common._is_request_too_large,
                          _common.RequestPayloadTooLargeError)
    except (AttributeError, ImportError):
        return None
    if not (callable(getattr(metrics, "export_operation", None))
            and callable(getattr(client, "export", None))
            and isinstance(max_size, int)
            and callable(parts.too_large)
            and isinstance(parts.too_large_error, type)):
        return None
    return parts


def grpc_translates(exporter_class: type) -> bool:
    """Whether the SDK's OTLP/gRPC exporter encodes through ``_translate_data``."""
    return any(callable(vars(base).get("_translate_data"))
               for base in exporter_class.__mro__[1:])


def wsgi_semconv_mode() -> Any | None:
    """The wsgi instrumentation's stable HTTP semantic-conventions mode."""
    try:
        from opentelemetry.instrumentation._semconv import _StabilityMode

        return _StabilityMode.HTTP
    except (ImportError, AttributeError):
        return None


def resource_attributes_replaceable(resource: Any) -> bool:
    """Whether a Resource keeps its attributes where a subclass can swap them."""
    return isinstance(getattr(resource, "_attributes", None), Mapping)


def fast_path_off(what: str) -> None:
    """One line: this SDK differs, the SDK's own path is used for ``what``."""
    from opentelemetry.sdk.version import __version__ as sdk_version

    LOG.warning("zaqar-otel: the OpenTelemetry SDK %s is laid out differently "
                "from %s: %s; spans still flow through the SDK's own code",
                sdk_version, KNOWN_LAYOUT, what)
