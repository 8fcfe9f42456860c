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

A span may also be encoded as it ends, on its request thread, and the
batch framed from those pieces when it is exported (``encoded``): the export
thread then holds the GIL only for the framing, not for the encoding of a
whole batch, which a request running meanwhile waited for at each of its
database calls::

    piece = encoder.encoded(span)       # at span end
    body = encoder.encode(pieces)       # at export: spans and pieces alike

The exporters' encoders pause briefly every few dozen spans they encode
themselves (``EXPORT_PAUSE_EVERY``), letting the request threads have the GIL.

Field numbers are those of ``opentelemetry/proto/trace/v1/trace.proto`` and
``common/v1/common.proto``.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceFlags, TraceState

from zaqar_otel._sdk.events import SharedEvent
from zaqar_otel.export.processor import Encoded

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
_BLOCKS_MAX = 512  # encoded attribute sets kept; cleared when full
_NAMES_MAX = 512  # encoded span names kept; cleared when full
#: What the exporters' encoders pause for: every this many spans (about
#: half a millisecond of encoding), this long (seconds), so that request
#: threads waiting for the GIL take it then. Without it a request that waits
#: for the GIL while a batch of 512 is encoded waits a whole switch interval
#: (5 ms) at each of its database calls: the export made its own tail.
EXPORT_PAUSE_EVERY = 32
EXPORT_PAUSE = 0.0001
# Not floats: 0.0 == -0.0 would share an entry, and NaN never matches one.
_MEMO_TYPES = frozenset((str, int, bool))


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:  # a span's length, mostly
        return bytes((n & 0x7F | 0x80, n >> 7))
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
    if type(value) is tuple:  # a list of str as the span keeps it: message ids
        values = []
        for item in value:
            if type(item) is str:  # an AnyValue's string_value, inline
                values.append(_field(b"\x0a", _field(b"\x0a", _text(item))))
            else:
                values.append(_field(b"\x0a", _any_value(item)))
        return _field(b"\x2a", b"".join(values))
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
    if type(attributes) is MappingProxyType:  # its items() are the dict's
        return attributes
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


# The short way through a span (``SpanEncoder._span_fields``) reads the
# SDK's fields instead of its properties, where they are laid out as in SDK
# 1.45: a SpanContext is the tuple (trace id, span id, is_remote, flags,
# state, is_valid), a Status keeps _status_code and _description, and the
# span's class does not override a property of ReadableSpan's.
_PROPERTIES = ("context", "parent", "name", "kind", "start_time", "end_time",
               "attributes", "events", "links", "status", "resource",
               "instrumentation_scope", "dropped_attributes", "dropped_events",
               "dropped_links")


def _fields_known() -> bool:
    try:
        probe = SpanContext(3, 4, True, TraceFlags(1), TraceState([("k", "v")]))
        status = Status(StatusCode.ERROR, "d")
        return (tuple(probe)[:5] == (3, 4, True, 1, probe.trace_state)
                and len(probe) == 6
                and vars(status) == {"_status_code": StatusCode.ERROR,
                                     "_description": "d"}
                and all(isinstance(vars(ReadableSpan).get(p), property)
                        for p in _PROPERTIES))
    except Exception:
        return False


_by_field_classes: dict[type, bool] = {}


def by_field(cls: type) -> bool:
    """Whether spans of ``cls`` may be read by field (see above): their
    ``_context``, ``_status``, ``_events`` and the rest are the SDK's."""
    known = _by_field_classes.get(cls)
    if known is None:
        # Probed for each new class (a handful a process), not at import.
        known = _fields_known() and issubclass(cls, ReadableSpan) and all(
            getattr(cls, p, None) is vars(ReadableSpan)[p] for p in _PROPERTIES)
        _by_field_classes[cls] = known
    return known


_KIND_BY_ID = {id(kind): encoded for kind, encoded in _KIND.items()}
_STATUS_BY_CODE_ID = {id(code): _field(b"\x7a", _uint(b"\x18", code.value))
                      for code in StatusCode}
_Q = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_TIME = struct.Struct("<BQ")  # an event's field 1 (fixed64) with its tag
# A span's trace id (as two 64-bit halves) and span id, each after its tag
# and length (0x0a10: field 1, 16 bytes; 0x1208: field 2, 8 bytes).
_IDS = struct.Struct(">HQQHQ")
_LOW64 = (1 << 64) - 1
_PARENT_ID = struct.Struct(">HQ")  # 0x2208: field 4, 8 bytes
# Its start and end times (fields 7 and 8, fixed64), each after its tag.
_TIMES = struct.Struct("<BQBQ")
_REMOTE_FLAGS_FIELD = b"\x85\x01" + _REMOTE_FLAGS
_LOCAL_FLAGS_FIELD = b"\x85\x01" + _LOCAL_FLAGS
_DEFAULT_TRACE_STATE = SpanContext(1, 1, False).trace_state


class EncodedSpan(Encoded):
    """A span encoded as it ended (``SpanEncoder.encoded``): its field of a
    ``ScopeSpans`` message, and the resource and scope it is grouped by."""

    __slots__ = ("field", "resource", "scope")

    def __init__(self, field: bytes, resource: Resource,
                 scope: InstrumentationScope | None) -> None:
        self.field = field
        self.resource = resource
        self.scope = scope


# EncodedSpan.__new__ with its fields set after: what its __init__ does,
# without a Python frame.
_new_piece = object.__new__


class SpanEncoder:
    """Encodes span batches; keeps recently encoded attributes.

    :param memo_size: how many encoded ``(key, value)`` attributes are kept
        (cleared when full); 0 keeps none.

    One per exporter: exports of one exporter do not overlap (the batch
    processor exports from one thread); ``encoded`` may run beside them.
    """

    def __init__(self, memo_size: int = _MEMO_MAX, pause_every: int = 0,
                 pause: float = 0.0) -> None:
        # (field tag, key, value type, value) -> the encoded field. The type
        # is part of the key because True == 1; only str, int and bool values
        # are kept, since (True,) and (1,) would collide in the same way.
        self._memo: dict[tuple[bytes, str, type, Any], bytes] = {}
        self._memo_size = memo_size  # 0: encode every attribute anew
        # Every pause_every spans, sleep ``pause`` s: the request threads
        # waiting for the GIL take it then, not at the end of the switch
        # interval (5 ms) the export thread would otherwise hold it for.
        self._pause_every = pause_every
        self._pause = pause
        # A span's (attributes, their types) -> its encoded attributes: the
        # spans of one trace point or statement carry the same ones.
        self._blocks: dict[tuple[Any, ...], bytes] = {}
        self._older_blocks: dict[tuple[Any, ...], bytes] = {}
        # The same, for a span's attributes but its last one: a server
        # span's request id and an operation's message ids are set last and
        # differ on every request, while the rest repeat.
        self._heads: dict[tuple[Any, ...], bytes] = {}
        # A span name -> its encoded field: names repeat (route templates,
        # trace points, statements by table).
        self._names: dict[str, bytes] = {}
        self._event_names: dict[str, bytes] = {}
        # An event attribute's key -> the fields of a double value before
        # its 8 bytes (a Redis command's duration).
        self._double_prefixes: dict[str, bytes] = {}
        # Attribute keys already logged as not exportable: one line each, not
        # one per span (bounded, in case keys are made up per request).
        self._unexportable: set[str] = set()

    def encoded(self, span: ReadableSpan) -> EncodedSpan:
        """``span`` encoded now, for ``encode`` to frame into a batch later.

        Called from any thread (request threads, as their spans end): the
        kept encodings are plain dicts, each read or write atomic, and what
        one holds for a key never differs, so two threads racing at worst
        encode a field twice or forget one.
        """
        if by_field(type(span)):
            return self.encoded_by_field(span)
        return EncodedSpan(_field(b"\x12", self._span(span)), span.resource,
                           span.instrumentation_scope)

    def encoded_by_field(self, span: Any) -> EncodedSpan:
        """``encoded``, for a span ``by_field`` allows (its fields read
        directly): the ``spans`` field of ``ScopeSpans`` framed inline, and
        the piece made without a Python ``__init__`` (on the request
        thread, for every span)."""
        body = self._span_fields(span)
        piece = _new_piece(EncodedSpan)
        piece.field = b"\x12" + _varint(len(body)) + body
        piece.resource = span._resource
        piece.scope = span._instrumentation_scope
        return piece

    def encode(self, spans: Sequence[ReadableSpan | EncodedSpan]) -> bytes:
        """The serialized ``ExportTraceServiceRequest`` carrying ``spans``.

        Spans are grouped by resource, then by instrumentation scope, in the
        order they come, as the SDK's encoder groups them.
        """
        groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
        # The group of each (resource, scope) object pair seen: spans share a
        # few of them, hashed once per batch (the spans keep them alive, so
        # their ids stand for them until the batch is encoded).
        seen: dict[tuple[int, int], list[bytes]] = {}
        every = self._pause_every
        countdown = every
        # Spans mostly come in runs of one resource and scope: those of the
        # piece before are taken without a look-up.
        last_resource: Any = None
        last_scope: Any = None
        current: list[bytes] = []
        for span in spans:
            if isinstance(span, EncodedSpan):
                piece = span
            else:
                if every:
                    countdown -= 1
                    if not countdown:
                        countdown = every
                        time.sleep(self._pause)
                piece = self.encoded(span)
            resource, scope = piece.resource, piece.scope
            if resource is not last_resource or scope is not last_scope or (
                    last_resource is None):
                pair = (id(resource), id(scope))
                found = seen.get(pair)
                if found is None:
                    by_scope = groups.setdefault(resource, {})
                    found = seen[pair] = by_scope.setdefault(scope or None, [])
                current, last_resource, last_scope = found, resource, scope
            current.append(piece.field)
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

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any] | None,
                    remember: bool = True) -> list[bytes]:
        """Each attribute as a repeated ``KeyValue`` field ``tag``; with
        ``remember`` False none is kept (values seen once)."""
        if not attributes:
            return []
        memo = self._memo if remember else {}
        remembered = memo.get
        out = []
        for key, value in (attributes if type(attributes) is dict
                           else _plain(attributes)).items():
            kind = type(value)
            memo_key = (tag, key, kind, value)
            if kind in _MEMO_TYPES:
                encoded = remembered(memo_key)
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
            if remember and kind in _MEMO_TYPES and self._memo_size and (
                    _short(key) and (kind is not str or _short(value))):
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
            parts.append(self._event(event))
        parts.append(_uint(b"\x60", span.dropped_events))
        for link in span.links if getattr(span, "_links", True) else ():
            parts.append(self._link(link))
        parts.append(_uint(b"\x70", span.dropped_links))
        status = span.status
        if status is not None:
            message = status.description
            parts.append(_field(b"\x7a", b"".join([
                _field(b"\x12", _text(message)) if message else b"",
                _uint(b"\x18", status.status_code.value)])))
        parts += (b"\x85\x01", _flags(parent))  # field 16, fixed32
        return b"".join(parts)

    def _span_fields(self, span: Any) -> bytes:
        """``_span``, reading the fields of an SDK-laid-out span."""
        context = span._context
        parent = span._parent
        if type(context) is not SpanContext or (
                parent is not None and type(parent) is not SpanContext):
            return self._span(span)
        trace_id, span_id, _, _, trace_state, _ = context
        # Fields 1 and 2 (the ids, big-endian bytes) in one pack.
        parts = [_IDS.pack(0x0A10, trace_id >> 64, trace_id & _LOW64,
                           0x1208, span_id)]
        if trace_state is not _DEFAULT_TRACE_STATE and trace_state:
            parts.append(_field(b"\x1a", _text(trace_state.to_header())))
        if parent is not None:
            parts.append(_PARENT_ID.pack(0x2208, parent[1]))
        name = span._name
        if name:
            encoded = self._names.get(name) if type(name) is str else None
            parts.append(encoded if encoded is not None
                         else self._name_field(self._names, b"\x2a", name))
        kind = span._kind
        parts.append(_KIND_BY_ID.get(id(kind)) or _KIND[kind])
        start, end = span._start_time, span._end_time
        if start and end:
            parts.append(_TIMES.pack(0x39, start, 0x41, end))
        else:
            if start:
                parts += (b"\x39", _Q.pack(start))
            if end:
                parts += (b"\x41", _Q.pack(end))
        attributes = span._attributes
        if attributes:
            # A fast-path span still holding the attribute set it started
            # with (recorder.Span._kept): that set's bytes, encoded once.
            kept = getattr(span, "_kept", None)
            if kept is None:
                parts.append(self._attribute_block(attributes))
            else:
                block = kept.encoded
                if block is None:
                    block = kept.encoded = self._attribute_block(attributes)
                parts.append(block)
        if type(attributes) is not dict:
            parts.append(_uint(b"\x50", span.dropped_attributes))
        events, links = span._events, span._links
        if events:
            for event in events:
                parts.append(self._event(event))
        if type(events) is not tuple and type(events) is not list:  # none dropped
            parts.append(_uint(b"\x60", span.dropped_events))
        if links:
            for link in links:
                parts.append(self._link(link))
        if type(links) is not tuple:
            parts.append(_uint(b"\x70", span.dropped_links))
        status = span._status
        if status is not None:
            message = status._description
            if message:
                parts.append(_field(b"\x7a", b"".join([
                    _field(b"\x12", _text(message)),
                    _uint(b"\x18", status._status_code.value)])))
            else:
                parts.append(_STATUS_BY_CODE_ID.get(id(status._status_code))
                             or _field(b"\x7a", _uint(b"\x18",
                                                       status.status_code.value)))
        # Field 16 (fixed32): the parent's is_remote known, and its value.
        parts.append(_REMOTE_FLAGS_FIELD if parent is not None and parent[2]
                     else _LOCAL_FLAGS_FIELD)
        return b"".join(parts)

    def _attribute_block(self, attributes: Mapping[str, Any]) -> bytes:
        """A span's attributes, encoded; the same set of keys and values
        (of the same types) as a span before it is encoded once.

        Only sets of str, int and bool values are kept, with every value's
        type in the key: True == 1 but they encode differently, 0.0 ==
        -0.0, and (True,) == (1,).
        """
        plain = attributes if type(attributes) is dict else _plain(attributes)
        items = tuple(plain.items())
        types = tuple(map(type, plain.values()))
        key = (items, types)
        blocks = self._blocks
        try:
            encoded = blocks.get(key)
        except TypeError:  # an unhashable value: not a set that is kept
            encoded = None
        if encoded is not None:
            # Only sets of the memo's types are kept: with the types in the
            # key, no other set can equal one of them.
            return encoded
        if not self._memo_size or not _MEMO_TYPES.issuperset(types[:-1]):
            return b"".join(self._attributes(b"\x4a", plain))
        head_key = (items[:-1], types[:-1]) if len(items) > 1 else None
        if head_key is not None:
            head = self._heads.get(head_key)
            if head is not None:
                # A set kept but for its last attribute, the one that differs
                # from set to set: that one encoded alone, and kept nowhere.
                # (Asked before the older generation of whole sets: the sets
                # that come here are mostly such, and a whole set found here
                # costs its last attribute's encoding, not a miss.)
                last_key, last_value = items[-1]
                try:
                    return head + _field(b"\x4a", _key_value(last_key, last_value))
                except Exception:  # not exportable: _attributes drops and logs it
                    return head + b"".join(self._attributes(
                        b"\x4a", {last_key: last_value}, remember=False))
        whole = _MEMO_TYPES.issuperset(types)
        if whole:
            # Two generations: sets seen in this one or the one before stay;
            # one-off sets pass through and are forgotten.
            encoded = self._older_blocks.get(key)
            if encoded is not None:
                return self._keep_block(key, encoded)
        fields = self._attributes(b"\x4a", plain)
        encoded = b"".join(fields)
        short = [_short(k) and (type(v) is not str or _short(v)) for k, v in items]
        if head_key is not None and all(short[:-1]) and len(fields) == len(items):
            if len(self._heads) >= _BLOCKS_MAX:
                self._heads.clear()
            self._heads[head_key] = b"".join(fields[:-1])
        return self._keep_block(key, encoded) if whole and all(short) else encoded

    def _keep_block(self, key: tuple[Any, ...], encoded: bytes) -> bytes:
        """``encoded`` kept as the set ``key``'s, in this generation."""
        if len(self._blocks) >= _BLOCKS_MAX:
            self._older_blocks, self._blocks = self._blocks, {}
        self._blocks[key] = encoded
        return encoded

    def _name_field(self, kept: dict[str, bytes], tag: bytes, name: str) -> bytes:
        """A name's field ``tag``, encoded and kept in ``kept`` (a span's or
        an event's names: they repeat), unless it is long or not a str."""
        encoded = _field(tag, _text(name))
        if self._memo_size and _short(name):
            if len(kept) >= _NAMES_MAX:
                kept.clear()
            kept[name] = encoded
        return encoded

    def _event(self, event: Any) -> bytes:
        shared = type(event) is SharedEvent  # its fields are ours to read
        if shared:
            timestamp, name, own = event._timestamp, event._name, event.own
            block = event.shared.encoded
            # A Redis command's event as it mostly comes: its name and shared
            # part encoded before, its one own attribute a float (the
            # duration) with its prefix kept; the same bytes as below.
            if block is not None and timestamp and len(own) == 1 and type(name) is str:
                key, value = own[0]
                prefix = self._double_prefixes.get(key)
                name_field = self._event_names.get(name)
                if (prefix is not None and name_field is not None
                        and type(value) is float):
                    body = b"".join((_TIME.pack(0x09, timestamp), name_field, block,
                                     prefix, _DOUBLE.pack(value)))
                    return b"\x5a" + _varint(len(body)) + body
        else:
            timestamp, name = event.timestamp, event.name
        parts = [_TIME.pack(0x09, timestamp)] if timestamp else []
        if name:
            # Event names repeat (Redis commands, exception): kept like
            # span names, with the event's tag.
            encoded = self._event_names.get(name) if type(name) is str else None
            parts.append(encoded if encoded is not None
                         else self._name_field(self._event_names, b"\x12", name))
        if shared:
            self._shared_attributes(event, parts)
        else:
            attributes = event.attributes
            parts += self._attributes(b"\x1a", attributes)
            if type(attributes) is not MappingProxyType:  # fast path: none dropped
                parts.append(_uint(b"\x20", event.dropped_attributes))
        return _field(b"\x5a", b"".join(parts))

    def _shared_attributes(self, event: SharedEvent, parts: list[bytes]) -> None:
        """A ``SharedEvent``'s attributes appended to ``parts``: the shared
        ones encoded once (kept on them), its own float ones (a duration)
        from a kept prefix."""
        shared = event.shared
        block = shared.encoded
        if block is None:
            block = b"".join(self._attributes(b"\x1a", dict(shared.pairs)))
            if self._memo_size:
                shared.encoded = block
        parts.append(block)
        for key, value in event.own:
            if type(value) is float:
                prefix = self._double_prefixes.get(key)
                if prefix is None:
                    prefix = self._double_prefix(key)
                parts += (prefix, _DOUBLE.pack(value))
            else:
                parts += self._attributes(b"\x1a", {key: value})

    def _double_prefix(self, key: str) -> bytes:
        """An event attribute's ``KeyValue`` field with a double value, up
        to the value's 8 bytes (kept per key)."""
        key_field = _field(b"\x0a", _text(key)) if key else b""
        prefix = (b"\x1a" + _varint(len(key_field) + 11) + key_field
                  + b"\x12\x09\x21")
        if self._memo_size and _short(key) and len(self._double_prefixes) < _NAMES_MAX:
            self._double_prefixes[key] = prefix
        return prefix

    def _link(self, link: Any) -> bytes:
        return _field(b"\x6a", b"".join([
            b"\x0a\x10", link.context.trace_id.to_bytes(16, "big"),
            b"\x12\x08", link.context.span_id.to_bytes(8, "big"),
            *self._attributes(b"\x22", link.attributes),
            _uint(b"\x28", link.dropped_attributes),
            b"\x35", _flags(link.context)]))

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        if scope is None:
            return b""
        return b"".join([
            _field(b"\x0a", _text(scope.name)) if scope.name else b"",
            _field(b"\x12", _text(scope.version)) if scope.version else b"",
            *self._attributes(b"\x1a", scope.attributes)])
