"""OTLP trace export requests, encoded straight to protobuf bytes.

The SDK's encoder builds a protobuf object for every span, attribute and
value before serialising them: on a traced Zaqar request the exporter thread
spent about a third of all tracing time there (py-spy). This module writes
the same ``ExportTraceServiceRequest`` bytes directly, and keeps the encoded
form of recent ``(key, value)`` attribute pairs, since most attributes of a
service's spans repeat (``db.system``, ``http.route``, the statement).
Its output is, byte for byte, what the SDK's encoder writes for the same
spans (``tests/unit/test_otlp_encoding.py``), with one deliberate difference:
a string that cannot be UTF-8 (a lone surrogate) has the character replaced
by ``?``, where the SDK's encoder drops the attribute, or fails the whole
batch when it is a span name or status message::

    encoder = SpanEncoder()             # one per exporter
    body = encoder.encode(spans)        # bytes of an ExportTraceServiceRequest

Field numbers are those of ``opentelemetry/proto/trace/v1/trace.proto`` and
``common/v1/common.proto``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

LOG = logging.getLogger(__name__)

# SpanFlags (fixed32): the parent's is_remote is known (0x100); it is remote (0x200).
_REMOTE_FLAGS = struct.pack("<I", 0x300)
_LOCAL_FLAGS = struct.pack("<I", 0x100)
_KIND = {SpanKind.INTERNAL: b"\x30\x01", SpanKind.SERVER: b"\x30\x02",
         SpanKind.CLIENT: b"\x30\x03", SpanKind.PRODUCER: b"\x30\x04",
         SpanKind.CONSUMER: b"\x30\x05"}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_MEMO_MAX = 2048  # encoded (key, value) pairs kept; cleared when full
_MEMO_VALUE_MAX = 256  # longer strings (keys or values) are not kept
# Not floats: 0.0 == -0.0 would share an entry, and NaN never matches one.
_MEMO_TYPES = (str, int, bool)


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(bytes((n,)) for n in range(0x80))


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag`` is the encoded key (wire type 2)."""
    return tag + _varint(len(payload)) + payload


def _text(value: str) -> bytes:
    # A lone surrogate cannot be UTF-8; replace it rather than lose the batch.
    return value.encode("utf-8", "replace")


def _any_value(value: Any) -> bytes:
    """An encoded ``AnyValue`` message."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", _text(value))
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"{value} does not fit in int64")
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(
            _field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(
            _field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"invalid type {type(value).__name__} of value {value!r}")


def _key_value(key: str, value: Any) -> bytes:
    # proto3 leaves an empty string out, as the SDK's serialiser does.
    return ((_field(b"\x0a", _text(key)) if key else b"")
            + _field(b"\x12", _any_value(value)))


def _plain(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """The dict inside the SDK's ``BoundedAttributes``, else ``attributes``.

    Iterating a ``BoundedAttributes`` goes through ``Mapping.items``: one
    Python-level ``__getitem__`` per key. The spans come from the batch
    processor, ended: nothing writes to them any more.
    """
    inner = getattr(attributes, "_dict", None)
    return inner if isinstance(inner, dict) else attributes


def _short(text: object) -> bool:
    return isinstance(text, str) and len(text) <= _MEMO_VALUE_MAX


def _fixed64(tag: bytes, n: int) -> bytes:
    return tag + struct.pack("<Q", n)


def _uint(tag: bytes, n: int) -> bytes:
    return tag + _varint(n) if n else b""


def _flags(parent: SpanContext | None) -> bytes:
    return _REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS


class SpanEncoder:
    """Encodes span batches; keeps recently encoded attributes.

    :param memo_size: how many encoded ``(key, value)`` attributes are kept
        (cleared when full); 0 keeps none.

    One per exporter: the memo is not shared, and exports of one exporter
    do not overlap (the batch processor exports from one thread).
    """

    def __init__(self, memo_size: int = _MEMO_MAX) -> None:
        # (field tag, key, value type, value) -> the encoded field. The type
        # is part of the key because True == 1; only str, int and bool values
        # are kept, since (True,) and (1,) would collide in the same way.
        self._memo: dict[tuple[bytes, str, type, Any], bytes] = {}
        self._memo_size = memo_size  # 0: encode every attribute anew
        # Attribute keys already logged as not exportable: one line each, not
        # one per span (bounded, in case keys are made up per request).
        self._unexportable: set[str] = set()

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialized ``ExportTraceServiceRequest`` carrying ``spans``.

        Spans are grouped by resource, then by instrumentation scope, in the
        order they come, as the SDK's encoder groups them.
        """
        groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
        for span in spans:
            by_scope = groups.setdefault(span.resource, {})
            by_scope.setdefault(span.instrumentation_scope or None, []).append(
                _field(b"\x12", self._span(span)))
        out = []
        for resource, by_scope in groups.items():
            parts = [_field(b"\x0a", b"".join(
                self._attributes(b"\x0a", resource.attributes)))]
            for scope, encoded in by_scope.items():
                schema = scope.schema_url if scope is not None else ""
                parts.append(_field(b"\x12", b"".join([
                    _field(b"\x0a", self._scope(scope)), *encoded,
                    _field(b"\x1a", _text(schema)) if schema else b""])))
            if resource.schema_url:
                parts.append(_field(b"\x1a", _text(resource.schema_url)))
            out.append(_field(b"\x0a", b"".join(parts)))
        return b"".join(out)

    def _attributes(self, tag: bytes,
                    attributes: Mapping[str, Any] | None) -> list[bytes]:
        """Each attribute as a repeated ``KeyValue`` field ``tag``."""
        if not attributes:
            return []
        memo = self._memo
        out = []
        for key, value in _plain(attributes).items():
            kind = type(value)
            memo_key = (tag, key, kind, value)
            if kind in _MEMO_TYPES:
                encoded = memo.get(memo_key)
                if encoded is not None:
                    out.append(encoded)
                    continue
            try:
                encoded = _field(tag, _key_value(key, value))
            except Exception as exc:  # as the SDK: drop the attribute, keep the span
                if key not in self._unexportable and len(self._unexportable) < 100:
                    self._unexportable.add(key)
                    LOG.warning("zaqar-otel: attribute %s is not exported (%s); "
                                "not logged again for this key", key, exc)
                continue
            out.append(encoded)
            if kind in _MEMO_TYPES and self._memo_size and _short(key) and (
                    kind is not str or _short(value)):
                if len(memo) >= self._memo_size:
                    memo.clear()
                memo[memo_key] = encoded
        return out

    def _span(self, span: ReadableSpan) -> bytes:
        context = span.context
        parts = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"),
                 b"\x12\x08", context.span_id.to_bytes(8, "big")]
        if context.trace_state:
            parts.append(_field(b"\x1a", _text(context.trace_state.to_header())))
        parent = span.parent
        if parent is not None:
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        if span.name:
            parts.append(_field(b"\x2a", _text(span.name)))
        parts.append(_KIND[span.kind])
        if span.start_time:
            parts.append(_fixed64(b"\x39", span.start_time))
        if span.end_time:
            parts.append(_fixed64(b"\x41", span.end_time))
        # The SDK's ReadableSpan wraps its attributes in a MappingProxyType,
        # which hides the plain dict; events and links are copied to a tuple
        # under a lock on each access, though most spans have none.
        parts += self._attributes(b"\x4a", getattr(span, "_attributes", None)
                                  or span.attributes)
        parts.append(_uint(b"\x50", span.dropped_attributes))
        for event in span.events if getattr(span, "_events", True) else ():
            parts.append(_field(b"\x5a", b"".join([
                _fixed64(b"\x09", event.timestamp) if event.timestamp else b"",
                _field(b"\x12", _text(event.name)) if event.name else b"",
                *self._attributes(b"\x1a", event.attributes),
                _uint(b"\x20", event.dropped_attributes)])))
        parts.append(_uint(b"\x60", span.dropped_events))
        for link in span.links if getattr(span, "_links", True) else ():
            parts.append(_field(b"\x6a", b"".join([
                b"\x0a\x10", link.context.trace_id.to_bytes(16, "big"),
                b"\x12\x08", link.context.span_id.to_bytes(8, "big"),
                *self._attributes(b"\x22", link.attributes),
                _uint(b"\x28", link.dropped_attributes),
                b"\x35", _flags(link.context)])))
        parts.append(_uint(b"\x70", span.dropped_links))
        status = span.status
        if status is not None:
            message = status.description
            parts.append(_field(b"\x7a", b"".join([
                _field(b"\x12", _text(message)) if message else b"",
                _uint(b"\x18", status.status_code.value)])))
        parts += (b"\x85\x01", _flags(parent))  # field 16, fixed32
        return b"".join(parts)

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        if scope is None:
            return b""
        return b"".join([
            _field(b"\x0a", _text(scope.name)) if scope.name else b"",
            _field(b"\x12", _text(scope.version)) if scope.version else b"",
            *self._attributes(b"\x1a", scope.attributes)])
