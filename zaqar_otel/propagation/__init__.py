"""Propagation: OSProfiler's signed headers <-> W3C trace context.

Pure parts, importing only the OTel API and the standard library:

* ``ids``: OSProfiler uuids <-> OTel trace and span ids;
* ``headers``: the ``X-Trace-Info`` / ``X-Trace-HMAC`` codec (decode, verify,
  encode, sign);
* ``propagator``: ``OSProfilerPropagator``, a ``TextMapPropagator`` on top;
* ``env_guard``: keeps an unknown ``OTEL_PROPAGATORS`` name from stopping
  the process (run by the package's ``.pth`` start-up hook).
"""
