"""Invariant 3 over websocket (``sampling.py``, ``entry/websocket.py``):
bulk spans from an unauthenticated client, against a real zaqar-otel-server
with every ``trace_*`` switch on (``harness.tracing.EVERYTHING``).

Trace ids a ratio sampler always keeps, in each action's headers and in the
upgrade request, and many unsigned actions on one connection (with forged
OSProfiler headers on half of them): traced at about ``sample_ratio``, not
every time, and no span outside the traced actions.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter

import pytest

from harness import websocket
from harness.clients import kept_by_trace_id_ratio
from harness.stats import binomial_bound
from harness.tracing import KEY
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.tree import render_tree
from zaqar_otel.propagation import codec

pytestmark = pytest.mark.functional

WS_RATIO = 0.01


def test_websocket_traceparent_ids_a_ratio_sampler_keeps_are_not_all_traced(
    receiver: OTLPReceiver,
) -> None:
    """Invariant 3 over websocket: trace ids with their low 64 bits zero
    (what ``TraceIdRatioBased`` keeps at any ratio), sampled flag set and
    not, in each action's headers and in the upgrade request, with
    ``sample_ratio = 0.01`` and ``honor_w3c_sampled = false``: traced at
    about the ratio, not every time."""
    actions = 400
    sent = []
    requests = [websocket.request("queue_create", {"queue_name": "attack"})]
    for n in range(actions):
        trace_id = kept_by_trace_id_ratio()
        sent.append(trace_id)
        flags = "01" if n % 2 else "00"
        requests.append(websocket.request("queue_get_stats", {"queue_name": "attack"}, {
            "traceparent": f"00-{trace_id:032x}-{random.getrandbits(63) + 1:016x}-"
                           f"{flags}"}))
    handshake = {"traceparent": f"00-{kept_by_trace_id_ratio():032x}-"
                                f"{0x1234:016x}-01"}
    with websocket.traced_server(receiver, WS_RATIO) as server:
        started = time.monotonic()
        responses = websocket.exchange(server.port, requests, timeout=30.0,
                                       handshake=handshake)
        took = time.monotonic() - started
        canary_id = websocket.canary(server, receiver)
        spans = [s for s in receiver.spans() if s.trace_id != canary_id]
    assert [r["headers"]["status"] for r in responses] == [201] + [200] * actions
    traced = {s.trace_id for s in spans if s.kind == "SERVER"}
    chosen = traced & set(sent)
    bound = binomial_bound(actions + 1, WS_RATIO)
    print(f"\n{actions} websocket actions ({actions / took:.0f}/s) with trace ids "
          f"whose low 64 bits are 0: {len(chosen)} traced (ratio {WS_RATIO}: "
          f"expected {actions * WS_RATIO:.0f}, at most {bound}); "
          f"{len(spans)} spans in all")
    assert len(traced) <= bound, (
        f"{len(chosen)} of {actions} actions with caller-chosen trace ids "
        f"traced\n" + render_tree(spans[:40]))


def test_websocket_many_unsigned_actions_on_one_connection_are_traced_at_the_ratio(
    receiver: OTLPReceiver,
) -> None:
    """One connection, many unsigned actions without trace headers (and
    forged OSProfiler headers on half of them): each action is a new draw at
    the ratio, the connection does not carry a decision over, and no span is
    made outside the traced actions."""
    actions = 400
    forged = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), "not-" + KEY)
    requests = [websocket.request("queue_create", {"queue_name": "attack"})]
    for n in range(actions):
        action = ("message_post", {"queue_name": "attack", "messages": [
            {"body": {"n": n}, "ttl": 60}]}) if n % 4 == 0 else (
            "queue_get_stats", {"queue_name": "attack"})
        requests.append(websocket.request(*action, forged if n % 2 else None))
    with websocket.traced_server(receiver, WS_RATIO) as server:
        responses = websocket.exchange(server.port, requests, timeout=30.0)
        canary_id = websocket.canary(server, receiver)
        spans = [s for s in receiver.spans() if s.trace_id != canary_id]
    statuses = Counter(r["headers"]["status"] for r in responses)
    assert statuses == {201: 1 + actions // 4, 200: actions - actions // 4}, statuses
    roots = [s for s in spans if s.parent_span_id is None]
    bound = binomial_bound(actions + 1, WS_RATIO)
    print(f"\n{actions} unsigned websocket actions on one connection: "
          f"{len(roots)} traced (expected {actions * WS_RATIO:.0f}, at most "
          f"{bound}), {len(spans)} spans")
    assert len(roots) <= bound, render_tree(spans[:40])
    # Every span belongs to one of the traced actions.
    assert all(s.kind == "SERVER" and s.name.startswith("websocket ")
               for s in roots), render_tree(roots)
    assert {s.trace_id for s in spans} == {s.trace_id for s in roots}
