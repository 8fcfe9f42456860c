"""The test harness: what the tests, the peers and the benchmarks share.

Real servers on loopback and what drives them, in one place:

- :mod:`harness.servers`: SecantusDB (MongoDB wire protocol), the machine's
  PostgreSQL and MariaDB, the Go binaries ``make backends`` builds, and the
  skip-or-fail rule for a missing one (:func:`~harness.servers.unavailable`);
- :mod:`harness.backends`: Jaeger v2, the collector (as shipped, as a
  scale-out gateway), Prometheus, and their metrics' text;
- :mod:`harness.scale_out`: the scale-out collector tier and its traffic;
- :mod:`harness.keystone`: a real Keystone (its own venv) and the real
  ``openstack`` CLI;
- :mod:`harness.keystone_stack`: Keystone, Zaqar under zaqar-otel and the
  CLI in one trace, and that trace's checks (peers/keystone, and the
  combined scale-out run of bench/scale_out.py);
- :mod:`harness.receivers`: OTLP receivers beyond the demo's
  (:class:`zaqar_otel.demo.receiver.OTLPReceiver`): a counting one in a
  child process (the benchmarks), a collector's or Jaeger's in its place;
- :mod:`harness.tracing`: the HMAC key, zaqar.conf sections with tracing on,
  a profiled session and the one-tree checks, the canary request;
- :mod:`harness.clients`: signed clients: fresh OSProfiler headers, signed
  requests from many threads;
- :mod:`harness.websocket`: a websocket client for Zaqar's websocket API;
- :mod:`harness.faults`: a TCP relay that forwards, refuses, swallows or
  cuts; Redis killed under load;
- :mod:`harness.probe`: the spans alive in a server process, on a signal,
  and a process's resident memory;
- :mod:`harness.stats`: bounds for counts drawn at a ratio;
- :mod:`harness.leaks`: secrets found in exported bytes or log lines;
- :mod:`harness.browser`: headless chromium for the pages the project renders.

The harness imports the product (mostly :mod:`zaqar_otel.demo`, whose
Redis, Zaqar and receiver it builds on) and never ``tests``, ``peers`` or
``bench``; the product never imports the harness
(``tests/unit/test_layout.py`` checks both).
"""
