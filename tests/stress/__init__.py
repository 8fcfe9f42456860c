"""Long runs and measurements: ``tox -e stress`` / ``make stress``.

Not in the default suite (``testpaths``). Durations and counts come from
``ZAQAR_OTEL_STRESS_SECONDS`` (default 60), ``ZAQAR_OTEL_FUZZ_EXAMPLES``
(default 10000), ``ZAQAR_OTEL_MEMORY_REQUESTS`` (default 10000) and
``ZAQAR_OTEL_LATENCY_REQUESTS`` (default 1000). Tables are printed to the
terminal even without ``-s``.
"""
