"""The OSProfiler ⇄ W3C bridge: OSProfiler's signed trace headers as
OpenTelemetry context, and back.

Three parts, each usable alone, none needing Zaqar, osprofiler or the SDK
(the OTel API and the standard library only):

* the propagator, ``OSProfilerPropagator``: a ``TextMapPropagator`` that
  extracts a verified ``X-Trace-Info`` / ``X-Trace-HMAC`` pair as the remote
  parent and signs the current span's context into outgoing requests;
* the id mapping (invariant 1): trace id = ``UUID(base_id).int``, span id =
  the low 64 bits of an OSProfiler span uuid, as osprofiler's own OTLP
  driver exports them, and back;
* the header codec: decode and verify, encode and sign, exactly as
  ``osprofiler.web`` does (urlsafe-base64 JSON ``{"base_id", "parent_id"}``,
  HMAC-SHA1 hex of the base64 bytes, any of several keys, compared in
  constant time). Bad input never raises: ``decode`` returns None.

The internals are in ``zaqar_otel.propagation`` (``propagator``, ``idmap``,
``codec``).

Usage
-----

In any OTel Python process, by its entry point::

    OTEL_PROPAGATORS=tracecontext,baggage,osprofiler
    OSPROFILER_HMAC_KEYS=SECRET_KEY_1,SECRET_KEY_2

or in code::

    from opentelemetry.propagate import set_global_textmap
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator)
    from zaqar_otel.bridge import OSProfilerPropagator

    set_global_textmap(CompositePropagator([
        TraceContextTextMapPropagator(), OSProfilerPropagator(["KEY"])]))

The ids and headers by themselves::

    from zaqar_otel import bridge

    headers = bridge.encode(base_id, parent_id, "KEY")
    info = bridge.decode(headers[bridge.X_TRACE_INFO],
                         headers[bridge.X_TRACE_HMAC], ["KEY"])
    info.trace_id == bridge.trace_id_from_base_id(base_id)    # True

API
---

The propagator:

* ``OSProfilerPropagator(hmac_keys=None)``: keys to verify with (the first
  also signs), or a callable returning them; default
  ``$OSPROFILER_HMAC_KEYS``, read at each use. No keys: it neither extracts
  nor injects.
* ``verified_trace_info(context=None)``: the ``TraceInfo`` the propagator
  verified into ``context``, if any.
* ``without_signature(context=None)``: ``context`` in which ``inject`` signs
  nothing (calls to third parties).

The id mapping:

* ``trace_id_from_base_id(base_id)``, ``base_id_from_trace_id(trace_id)``;
* ``span_id_from_uuid(span_uuid)``, ``uuid_from_span_id(trace_id, span_id)``.

The header codec:

* ``decode(info, signature, hmac_keys)``: a ``TraceInfo`` (``base_id``,
  ``parent_id``, the ``hmac_key`` that verified it, ``trace_id``,
  ``span_id``), or None;
* ``encode(base_id, parent_id, hmac_key)``: the two signed headers, a dict;
* ``X_TRACE_INFO``, ``X_TRACE_HMAC``: the header names;
  ``MAX_HEADER_BYTES``: larger values are ignored undecoded;
* ``split_keys(value)``: keys from a comma-separated option or variable;
  ``HMAC_KEYS_ENV``: the variable a propagator without keys reads.
"""

from zaqar_otel.propagation.codec import (
    HMAC_KEYS_ENV,
    MAX_HEADER_BYTES,
    X_TRACE_HMAC,
    X_TRACE_INFO,
    TraceInfo,
    decode,
    encode,
    split_keys,
)
from zaqar_otel.propagation.idmap import (
    base_id_from_trace_id,
    span_id_from_uuid,
    trace_id_from_base_id,
    uuid_from_span_id,
)
from zaqar_otel.propagation.propagator import (
    OSProfilerPropagator,
    verified_trace_info,
    without_signature,
)

__all__ = [
    "HMAC_KEYS_ENV",
    "MAX_HEADER_BYTES",
    "X_TRACE_HMAC",
    "X_TRACE_INFO",
    "OSProfilerPropagator",
    "TraceInfo",
    "base_id_from_trace_id",
    "decode",
    "encode",
    "span_id_from_uuid",
    "split_keys",
    "trace_id_from_base_id",
    "uuid_from_span_id",
    "verified_trace_info",
    "without_signature",
]
