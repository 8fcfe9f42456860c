"""OSProfiler signed trace headers <-> W3C trace context.

OpenStack services trace with OSProfiler: a request carries ``X-Trace-Info``
(urlsafe-base64 JSON ``{"base_id": UUID, "parent_id": UUID}``) and
``X-Trace-HMAC`` (hex HMAC-SHA1 of the base64 bytes under a shared key).
This module decodes, verifies, encodes and signs those headers exactly as
``osprofiler.web`` does, maps the ids onto OpenTelemetry's, and offers both
as a ``TextMapPropagator``::

    from opentelemetry.propagate import set_global_textmap
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator)
    from zaqar_otel.bridge import OSProfilerPropagator

    set_global_textmap(CompositePropagator([
        TraceContextTextMapPropagator(), OSProfilerPropagator(["KEY"])]))

or, in any OTel Python process, ``OTEL_PROPAGATORS=tracecontext,baggage,osprofiler``
with the keys in ``OSPROFILER_HMAC_KEYS``.

Id mapping (the one osprofiler's own OTLP driver uses, so spans of other
OpenStack services land in the same trace with the right parents):

* trace id = ``UUID(base_id).int``; back: ``base_id = str(UUID(int=trace_id))``.
* span id = low 64 bits of an OSProfiler span uuid. Back, a span id becomes the
  uuid whose low 64 bits are the span id and whose high 64 bits are those of
  the trace id. So the caller-less root of an OSProfiler trace
  (``parent_id == base_id``) maps back to itself, and an extracted
  ``parent_id`` is remembered in the context so that re-injecting the same
  span context gives back the exact string.

When a carrier holds both a verified OSProfiler header and a ``traceparent``,
the OSProfiler header wins: it is signed, ``traceparent`` is not. The
``tracestate`` of the ``traceparent`` is kept when both name the same trace.

Bad input (garbage, forged or oversized headers) never raises: the carrier is
ignored and one debug line per kind of fault and minute is logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.context import Context, create_key, get_value, set_value
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

LOG = logging.getLogger(__name__)

X_TRACE_INFO = "X-Trace-Info"
X_TRACE_HMAC = "X-Trace-HMAC"
#: Header values above this size are ignored without being decoded.
MAX_HEADER_BYTES = 4096
#: Environment variable read when no keys are given or configured.
HMAC_KEYS_ENV = "OSPROFILER_HMAC_KEYS"

_LOW64 = (1 << 64) - 1
_HIGH64 = _LOW64 << 64
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]+={0,2}")
_SHA1_HEX = re.compile(rb"[0-9a-f]{40}")
_UUID_PATTERN = r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
_CANONICAL_UUID = re.compile(_UUID_PATTERN)
_CANONICAL_PAYLOAD = re.compile(
    rf'{{"base_id": "(?P<base_id>{_UUID_PATTERN})", '
    rf'"parent_id": "(?P<parent_id>{_UUID_PATTERN})"}}')
_TRACE_KEYS = frozenset(("base_id", "parent_id"))
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)

# Context key for the verified TraceInfo: its parent_id string (whose high 64
# bits a span id lacks) and the key that verified it, to sign outgoing headers.
_TRACE_INFO = create_key("zaqar_otel.osprofiler.trace_info")

# Context key: calls made in it get no signed headers (see without_signature).
_UNSIGNED = create_key("zaqar_otel.osprofiler.unsigned")

HmacKeys = Sequence[str] | Callable[[], Sequence[str]] | None


@dataclass(slots=True)
class TraceInfo:
    """A verified ``X-Trace-Info`` payload and the key that signed it."""

    base_id: str
    parent_id: str
    hmac_key: str
    trace_id: int = field(init=False, compare=False)
    span_id: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # Parsed once: these also validate the ids (ValueError if not uuids).
        self.trace_id = trace_id_from_base_id(self.base_id)
        self.span_id = span_id_from_uuid(self.parent_id)


# -- id mapping ---------------------------------------------------------------


def _uuid_int(value: str) -> int:
    # The canonical form (all osprofiler sends) without uuid.UUID's cost; any
    # other form uuid.UUID accepts still works, the rest raises ValueError.
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return int(value.replace("-", ""), 16)
    return uuid.UUID(value).int


def _uuid_str(value: int) -> str:
    h = f"{value:032x}"
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


# -- header codec -------------------------------------------------------------


class _Throttle:
    """Lets one log line per kind of fault through per interval."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}

    def debug(self, reason: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -self._interval) >= self._interval:
            self._last[reason] = now
            LOG.debug("ignoring OSProfiler trace headers: " + reason, *args)


def _ascii(value: str | bytes | None) -> bytes | None:
    if isinstance(value, str):
        try:
            return value.strip().encode("ascii")
        except UnicodeEncodeError:
            return None
    return value.strip() if value else None


@functools.lru_cache(maxsize=32)
def _keyed_sha1(key: str) -> hmac.HMAC:
    # Copying a keyed HMAC skips the key schedule: a third cheaper per call.
    return hmac.new(key.encode("utf-8"), digestmod="sha1")


def _sign(key: str, data: bytes) -> bytes:
    mac = _keyed_sha1(key).copy()
    mac.update(data)
    return mac.digest()


def decode(
    info: str | bytes | None,
    signature: str | bytes | None,
    hmac_keys: Iterable[str],
    _log: _Throttle | None = None,
) -> TraceInfo | None:
    """Verify and decode ``X-Trace-Info`` / ``X-Trace-HMAC`` header values.

    Returns None unless ``signature`` is the HMAC-SHA1 of ``info`` under one
    of ``hmac_keys`` (compared in constant time) and ``info`` decodes to an
    object with a uuid ``base_id`` and optional uuid ``parent_id``, nothing
    else. A missing ``parent_id`` means the trace root, as in osprofiler.
    """
    log = _log or _Throttle(0.0)
    data, sig = _ascii(info), _ascii(signature)
    if not data or not sig:
        if data or sig:
            log.debug("one of %s / %s is missing", X_TRACE_INFO, X_TRACE_HMAC)
        return None
    if len(data) > MAX_HEADER_BYTES:
        log.debug("header over %d bytes", MAX_HEADER_BYTES)
        return None
    if not _SHA1_HEX.fullmatch(sig) or not _BASE64URL.fullmatch(data):
        log.debug("malformed header value")
        return None
    digest = bytes.fromhex(sig.decode("ascii"))
    for key in hmac_keys:
        if hmac.compare_digest(_sign(key, data), digest):
            break
    else:
        log.debug("signature matches no configured key")
        return None
    try:
        text = base64.urlsafe_b64decode(data).decode("utf-8")
        canonical = _CANONICAL_PAYLOAD.fullmatch(text)
        # The exact form osprofiler writes skips the JSON parser; any other
        # JSON spelling of the same object still decodes below.
        payload = canonical.groupdict() if canonical else json.loads(text)
        if not _TRACE_KEYS.issuperset(payload):
            raise ValueError("unexpected keys")
        base_id = payload["base_id"]
        # Keep the strings as sent: osprofiler compares and stores them as is.
        return TraceInfo(
            base_id=base_id,
            parent_id=payload.get("parent_id") or base_id,  # as osprofiler.web
            hmac_key=key,
        )
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        log.debug("signed payload is not {base_id, parent_id} uuids")
        return None


def encode(base_id: str, parent_id: str, hmac_key: str) -> dict[str, str]:
    """Signed ``X-Trace-Info`` / ``X-Trace-HMAC`` headers, as osprofiler's."""
    if _CANONICAL_UUID.fullmatch(base_id) and _CANONICAL_UUID.fullmatch(parent_id):
        # Byte-identical to json.dumps for these ids, at a fraction of the cost.
        text = f'{{"base_id": "{base_id}", "parent_id": "{parent_id}"}}'
    else:
        text = json.dumps({"base_id": base_id, "parent_id": parent_id})
    data = base64.urlsafe_b64encode(text.encode("utf-8"))
    signature = _sign(hmac_key, data).hex()
    return {X_TRACE_INFO: data.decode("ascii"), X_TRACE_HMAC: signature}


def split_keys(value: str | None) -> list[str]:
    """Keys from a comma-separated option or variable, as osprofiler splits."""
    return [k.strip() for k in (value or "").split(",") if k.strip()]


def environment_hmac_keys() -> list[str]:
    """Keys from ``$OSPROFILER_HMAC_KEYS`` (a propagator built without keys)."""
    return split_keys(os.environ.get(HMAC_KEYS_ENV))


def verified_trace_info(context: Context | None = None) -> TraceInfo | None:
    """The OSProfiler header the propagator verified into ``context``, if any."""
    found = get_value(_TRACE_INFO, context)
    return found if isinstance(found, TraceInfo) else None


def without_signature(context: Context | None = None) -> Context:
    """``context`` in which ``inject`` signs nothing.

    A signed header is a capability: whoever holds one can make a service
    sharing the key trace a request. Calls to third parties (a webhook
    subscriber) must not get one; ``traceparent`` still goes.
    """
    return set_value(_UNSIGNED, True, context)


# -- propagator ---------------------------------------------------------------


def _header(getter: Getter[CarrierT], carrier: CarrierT, name: str) -> str | None:
    lower = name.lower()
    values = getter.get(carrier, name) or getter.get(carrier, lower)
    if values is None and getter is default_getter:
        # Case-insensitive match for plain dicts. Other getters (WSGI's) are
        # case-insensitive themselves: no scan of every key per request.
        for key in getter.keys(carrier):
            if key.lower() == lower:
                values = getter.get(carrier, key)
                break
    if not values:
        return None
    return values if isinstance(values, str) else values[0]


class OSProfilerPropagator(TextMapPropagator):
    """Extracts and injects OSProfiler's signed ``X-Trace-*`` headers.

    :param hmac_keys: keys to verify with (the first also signs), or a
        callable returning them; default: ``$OSPROFILER_HMAC_KEYS``, read at
        each use. zaqar-otel's set-up builds its own with ``[profiler]
        hmac_keys``. No keys: extract and inject do nothing.
    """

    def __init__(self, hmac_keys: HmacKeys = None) -> None:
        if hmac_keys is None:
            self._keys: Callable[[], Sequence[str]] = environment_hmac_keys
        elif callable(hmac_keys):
            self._keys = hmac_keys
        else:
            fixed = list(hmac_keys)
            self._keys = lambda: fixed
        self._log = _Throttle()

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """Context with the caller's span, if the headers verify."""
        if context is None:
            context = Context()
        info_value = _header(getter, carrier, X_TRACE_INFO)
        if info_value is None:
            return context
        keys = self._keys()
        if not keys:
            return context
        info = decode(info_value, _header(getter, carrier, X_TRACE_HMAC), keys,
                      self._log)
        if info is None:
            return context
        trace_id = info.trace_id
        current = trace.get_current_span(context).get_span_context()
        span_context = trace.SpanContext(
            trace_id=trace_id,
            span_id=info.span_id,
            is_remote=True,
            trace_flags=_SAMPLED,
            trace_state=current.trace_state
            if current.trace_id == trace_id
            else None,
        )
        if not span_context.is_valid:
            # An all-zero id cannot be a parent; osprofiler never sends one.
            self._log.debug("zero trace or span id")
            return context
        context = trace.set_span_in_context(
            trace.NonRecordingSpan(span_context), context
        )
        return set_value(_TRACE_INFO, info, context)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Signed headers for the current span, if it is sampled."""
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid or not span_context.trace_flags.sampled:
            return
        if get_value(_UNSIGNED, context):
            return
        trace_id, span_id = span_context.trace_id, span_context.span_id
        inbound = verified_trace_info(context)
        if inbound is not None:
            key = inbound.hmac_key
        else:
            keys = self._keys()
            if not keys:
                return
            key = keys[0]
        if inbound and (inbound.trace_id, inbound.span_id) == (trace_id, span_id):
            base_id, parent_id = inbound.base_id, inbound.parent_id
        else:
            base_id = base_id_from_trace_id(trace_id)
            parent_id = uuid_from_span_id(trace_id, span_id)
        for name, value in encode(base_id, parent_id, key).items():
            setter.set(carrier, name, value)

    @property
    def fields(self) -> set[str]:
        return {X_TRACE_INFO, X_TRACE_HMAC}
