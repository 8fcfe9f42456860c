"""``OSProfilerPropagator``: OSProfiler's signed headers as OTel context.

Decodes and verifies incoming ``X-Trace-Info`` / ``X-Trace-HMAC`` headers
(``codec``) into a remote parent with the mapped ids (``idmap``), and signs
outgoing ones for the current span. Imports only the OTel API::

    from opentelemetry.propagate import set_global_textmap
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator)
    from zaqar_otel.bridge import OSProfilerPropagator

    set_global_textmap(CompositePropagator([
        TraceContextTextMapPropagator(), OSProfilerPropagator(["KEY"])]))

or, in any OTel Python process, ``OTEL_PROPAGATORS=tracecontext,baggage,osprofiler``
with the keys in ``OSPROFILER_HMAC_KEYS``.

A header pair that verified is kept (up to ``VERIFIED_MAX`` pairs, with the
keys that verified it) and not verified again: every request of one CLI
command, or sent from inside one trace point, carries the same pair.

An extracted ``parent_id`` is remembered in the context so that re-injecting
the same span context gives back the exact string. When a carrier holds both
a verified OSProfiler header and a ``traceparent``, the OSProfiler header
wins: it is signed, ``traceparent`` is not. The ``tracestate`` of the
``traceparent`` is kept when both name the same trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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

from zaqar_otel.propagation import codec, idmap
from zaqar_otel.propagation.codec import TraceInfo

_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)

# Context key for the verified TraceInfo: its parent_id string (whose high 64
# bits a span id lacks) and the key that verified it, to sign outgoing headers.
_TRACE_INFO = create_key("zaqar_otel.osprofiler.trace_info")

# Context key: calls made in it get no signed headers (see without_signature).
_UNSIGNED = create_key("zaqar_otel.osprofiler.unsigned")

HmacKeys = Sequence[str] | Callable[[], Sequence[str]] | None

#: Verified header pairs kept per propagator (cleared when full).
VERIFIED_MAX = 256


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
            self._keys: Callable[[], Sequence[str]] = codec.environment_hmac_keys
        elif callable(hmac_keys):
            self._keys = hmac_keys
        else:
            fixed = list(hmac_keys)
            self._keys = lambda: fixed
        self._log = codec.Throttle()
        # (X-Trace-Info, X-Trace-HMAC) -> (the keys, what they verified).
        self._verified: dict[tuple[str, str | None],
                             tuple[tuple[str, ...], TraceInfo]] = {}

    def _decode(self, info_value: str, signature: str | None,
                keys: Sequence[str]) -> TraceInfo | None:
        """``codec.decode``, once per header pair and keys: every request of
        one CLI command, or sent from inside one trace point, carries the same
        pair (about 55 k instructions a verification). Only pairs that
        verified are kept, with the keys that verified them."""
        keyed = tuple(keys)
        pair = (info_value, signature)
        kept = self._verified.get(pair)
        if kept is not None and kept[0] == keyed:
            return kept[1]
        info = codec.decode(info_value, signature, keyed, self._log)
        if info is not None:
            if len(self._verified) >= VERIFIED_MAX:
                self._verified.clear()
            self._verified[pair] = (keyed, info)
        return info

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """Context with the caller's span, if the headers verify."""
        if context is None:
            context = Context()
        info_value = _header(getter, carrier, codec.X_TRACE_INFO)
        if info_value is None:
            return context
        keys = self._keys()
        if not keys:
            return context
        signature = _header(getter, carrier, codec.X_TRACE_HMAC)
        info = self._decode(info_value, signature, keys)
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
            base_id = idmap.base_id_from_trace_id(trace_id)
            parent_id = idmap.uuid_from_span_id(trace_id, span_id)
        for name, value in codec.encode(base_id, parent_id, key).items():
            setter.set(carrier, name, value)

    @property
    def fields(self) -> set[str]:
        return {codec.X_TRACE_INFO, codec.X_TRACE_HMAC}
