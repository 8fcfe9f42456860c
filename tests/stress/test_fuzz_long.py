"""The header fuzz of ``tests/functional/test_bad_input.py``, long.

``ZAQAR_OTEL_FUZZ_EXAMPLES`` examples (default 10000) against one
zaqar-otel-server: never a different answer, never a trace from a forged,
garbled or oversized header.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.functional import test_bad_input
from tests.functional.test_bad_input import Target, fuzz

target = test_bad_input.target

EXAMPLES = int(os.environ.get("ZAQAR_OTEL_FUZZ_EXAMPLES", "10000"))


def test_fuzzed_trace_headers_long(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    fuzz(target, EXAMPLES)
    took = time.monotonic() - started
    with capsys.disabled():
        print(f"\nheader fuzz: {target.examples} requests in {took:.0f} s, "
              f"{len(target.expected_traces)} validly signed among them, "
              f"answers all equal to the unfuzzed one, no other trace exported")
    assert target.examples >= min(EXAMPLES, 1000)
