"""Invariant 6 for the message links (``messaging/links.py``), the long
run of tests/functional/test_links_redis_killed.py: Redis SIGKILLed under
load for 20 s, longer than Zaqar's and redis-py's retries, so Zaqar answers
503: the traced server's answers are kinds plain Zaqar gives, nothing
acknowledged is lost.
"""

from __future__ import annotations

import pytest

from harness.faults import sigkill_compared
from zaqar_otel.demo.receiver import OTLPReceiver


def test_redis_outage_longer_than_zaqars_retries(
    receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str],
) -> None:
    """A 20 s outage: requests in flight and new ones fail (503) after
    Zaqar's retries, on both sides alike; after the restart both serve
    again and every acknowledged post is stored once."""
    sides, report = sigkill_compared(receiver, outage=20.0)
    with capsys.disabled():
        print("\n" + report)
    for side in sides:
        assert any(status >= 500 for (_, _, status, _) in side.outcomes), (
            f"{side.name}: no request failed during the outage")
        assert any(at == "after" and status < 300
                   for (at, _, status, _) in side.outcomes), side.name
