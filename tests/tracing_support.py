"""The old name of :mod:`harness.tracing`, kept for ``tests/breadth``.

The harness (the checkout's ``harness/`` package) holds what the tests, the
peers and the benchmarks share; new code imports it from there.
"""

from harness.tracing import (  # noqa: F401 - re-exported
    OTEL_SERVER,
    ProfiledSession,
    assert_well_formed,
    tracing,
)
