"""Propagation: OSProfiler's signed headers <-> W3C trace context.

The internals of the bridge (its public face: ``zaqar_otel.bridge``).
Pure parts, importing only the OTel API and the standard library:

* ``idmap``: OSProfiler uuids <-> OTel trace and span ids;
* ``codec``: the ``X-Trace-Info`` / ``X-Trace-HMAC`` codec (decode, verify,
  encode, sign);
* ``propagator``: ``OSProfilerPropagator``, a ``TextMapPropagator`` on top;
* ``env_guard``: keeps an unknown ``OTEL_PROPAGATORS`` name from stopping
  the process (run by the package's ``.pth`` start-up hook);
* ``number_guard``: moves a bad ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` aside
  before the SDK reads it at import;
* ``log_guard``: what the API's propagators log about a request's headers,
  made inert.
"""
