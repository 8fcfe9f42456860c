"""OSProfiler uuids <-> OpenTelemetry ids.

The mapping osprofiler's own OTLP driver uses, so spans of other OpenStack
services land in the same trace with the right parents:

* trace id = ``UUID(base_id).int``; back: ``base_id = str(UUID(int=trace_id))``.
* span id = low 64 bits of an OSProfiler span uuid. Back, a span id becomes the
  uuid whose low 64 bits are the span id and whose high 64 bits are those of
  the trace id. So the caller-less root of an OSProfiler trace
  (``parent_id == base_id``) maps back to itself.

Pure: the standard library only::

    from zaqar_otel.propagation import idmap
    idmap.trace_id_from_base_id("7d4b0e6c-...")
"""

from __future__ import annotations

import re
import uuid

_LOW64 = (1 << 64) - 1
_HIGH64 = _LOW64 << 64
UUID_PATTERN = r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
_CANONICAL_UUID = re.compile(UUID_PATTERN)


def is_canonical(value: str) -> bool:
    """Whether ``value`` is a uuid in the 8-4-4-4-12 form osprofiler writes."""
    return bool(_CANONICAL_UUID.fullmatch(value))


def _uuid_int(value: str) -> int:
    # The canonical form (all osprofiler sends) without uuid.UUID's cost; any
    # other form uuid.UUID accepts still works, the rest raises ValueError.
    if isinstance(value, str) and is_canonical(value):
        return int(value.replace("-", ""), 16)
    return uuid.UUID(value).int


def _uuid_str(value: int) -> str:
    h = value.to_bytes(16, "big").hex()  # a quarter faster than f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def trace_id_from_base_id(base_id: str) -> int:
    """OTel trace id of an OSProfiler ``base_id`` (all 128 bits)."""
    return _uuid_int(base_id)


def span_id_from_uuid(span_uuid: str) -> int:
    """OTel span id of an OSProfiler span uuid: its low 64 bits."""
    return _uuid_int(span_uuid) & _LOW64


def base_id_from_trace_id(trace_id: int) -> str:
    """OSProfiler ``base_id`` of an OTel trace id."""
    return _uuid_str(trace_id)


def uuid_from_span_id(trace_id: int, span_id: int) -> str:
    """OSProfiler span uuid of an OTel span: high 64 bits from the trace id."""
    return _uuid_str((trace_id & _HIGH64) | (span_id & _LOW64))
