"""Invariant 6 for the message links (``messaging/links.py``,
``trace_message_links = true``): Redis SIGKILLed mid-request and restarted
on the same port, plain Zaqar (``zaqar-server`` without the hook) under the
same fault beside zaqar-otel-server.

No message lost or duplicated, the answers those of plain Zaqar, and a
link write or read cut by the kill changes no answer and delays none. The
20 s outage (Zaqar answers 503) is in tests/stress/test_links_redis_killed_long.py;
what was found is in docs/faults.md.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from harness.clients import shape
from harness.faults import (
    PersistentRedis,
    Relay,
    Side,
    redis_deployment,
    sigkill_compared,
)
from harness.tracing import OTEL_SERVER, traced_extra
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZAQAR_SERVER_COMMAND, ZaqarServer

pytestmark = pytest.mark.functional


def test_redis_sigkilled_under_load_answers_like_plain_zaqar_and_loses_nothing(
    receiver: OTLPReceiver,
) -> None:
    """A 3 s outage, shorter than Zaqar's and redis-py's retries most of the
    time: the requests in flight wait and then succeed on both sides, bar a
    list now and then (``sigkill_compared``); the 20 s outage that makes
    Zaqar answer 503 is in tests/stress/test_links_redis_killed_long.py."""
    _, report = sigkill_compared(receiver, outage=3.0)
    print("\n" + report)


@pytest.fixture(scope="module")
def link_cut() -> dict[str, dict[str, Any]]:
    """Redis SIGKILLed exactly when zaqar-otel writes or reads a message link
    (a relay in front of Redis holds that command back, kills Redis and
    refuses connections until Redis is restarted on the same port), for a
    post, a listing and a claim; plain Zaqar gets Redis killed right after
    the same requests' answers (it has no link command). What each saw."""
    results: dict[str, dict[str, Any]] = {}
    with OTLPReceiver() as receiver:
        for name in ("plain", "traced"):
            command, extra = ((ZAQAR_SERVER_COMMAND, {}) if name == "plain" else
                              (OTEL_SERVER, traced_extra(receiver)))
            with PersistentRedis() as redis_server, \
                    Relay(redis_server.port) as relay, \
                    ZaqarServer(redis_deployment(f"redis://127.0.0.1:{relay.port}"),
                                command=command, extra=extra) as server:
                results[name] = _cut_at_links(server, redis_server, relay)
    return results


def _cut_at_links(server: ZaqarServer, redis_server: RedisServer,
                  relay: Relay) -> dict[str, Any]:
    side = Side("", server, redis_server, "cut")

    def kill() -> None:
        relay.mode = "refuse"
        os.kill(redis_server.pid, signal.SIGKILL)

    def revive() -> None:
        redis_server.stop(grace=0)
        redis_server.start()
        relay.mode = "forward"

    q = "/v2/queues/cut"
    assert server.request("PUT", q)[0] == 201
    seen: dict[str, Any] = {}
    for step, method, path, body in (
            ("post", "POST", f"{q}/messages",
             {"messages": [{"body": {"n": 1}, "ttl": 300}]}),
            ("list", "GET", f"{q}/messages?echo=true", None),
            ("claim", "POST", f"{q}/claims", {"ttl": 300, "grace": 60})):
        relay.cut_on(b"zaqar_otel.link.", kill)
        started = time.monotonic()
        status, payload = side.call(lambda at=step: at, step, method, path, body)
        took = time.monotonic() - started
        fired = relay.fired.is_set()
        if not fired:
            kill()
        revive()
        seen[step] = (status, shape(payload), took, fired)
    # After the restart: the message is there once, and claimed.
    seen["again"] = side.call(lambda: "again", "again", "POST", f"{q}/claims",
                              {"ttl": 300, "grace": 60})[0]
    seen["stored"] = dict(side.stored())
    seen["log"] = server.log_text()
    return seen


def _describe(results: dict[str, dict[str, Any]]) -> str:
    return "\n".join(f"{name}: " + ", ".join(
        f"{step} {seen[step][0]} in {seen[step][2]:.2f} s"
        f"{' (Redis killed at the link command)' if seen[step][3] else ''}"
        for step in ("post", "list", "claim"))
        + f"; second claim {seen['again']}; stored {seen['stored']}"
        for name, seen in results.items())


def test_redis_killed_at_the_link_write_changes_no_answer(
    link_cut: dict[str, dict[str, Any]],
) -> None:
    """The post, listing and claim answer as plain Zaqar does, the message is
    stored once, and zaqar-otel logs no error about it."""
    print("\n" + _describe(link_cut))
    plain, traced = link_cut["plain"], link_cut["traced"]
    assert all(traced[step][3] for step in ("post", "list", "claim")), \
        "zaqar-otel wrote or read no link: nothing was cut"
    for step in ("post", "list", "claim"):
        assert traced[step][:2] == plain[step][:2], (step, traced[step], plain[step])
    assert traced["again"] == plain["again"] == 204
    assert traced["stored"] == plain["stored"] == {1: 1}
    ours = [line for line in traced["log"].splitlines() if "zaqar_otel" in line]
    assert not [line for line in ours if "ERROR" in line or "Traceback" in line], \
        "\n".join(ours[:20])


def test_redis_killed_at_the_link_write_delays_no_answer(
    link_cut: dict[str, dict[str, Any]],
) -> None:
    """Plain Zaqar answers at once (its own commands are done); the link
    command, a convenience, must not hold the answer for seconds."""
    print("\n" + _describe(link_cut))
    for step in ("post", "list", "claim"):
        traced, plain = link_cut["traced"][step][2], link_cut["plain"][step][2]
        assert traced < plain + 0.5, f"{step}: {traced:.2f} s vs {plain:.2f} s"
