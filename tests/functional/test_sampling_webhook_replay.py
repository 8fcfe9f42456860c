"""Invariant 3 where Zaqar calls a third party (``messaging/deliveries.py``,
``sampling.py``): what a webhook subscriber receives does not let it force
tracing.

A client that owns a webhook subscriber sees the deliveries of its traced
posts: neither signed OSProfiler headers (replayed on its own unsigned
requests) nor a trace id it saw kept (replayed on every request) get it
traced more often than ``sample_ratio``.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Mapping

import pytest

from harness.clients import signed
from harness.stats import binomial_bound
from harness.tracing import EVERYTHING, OTEL_SERVER, tracing
from zaqar_otel.demo.processes import RedisServer, WebhookSubscriber
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.propagation import codec

pytestmark = pytest.mark.functional


class HookedServer:
    """zaqar-otel-server at ``sample_ratio`` with a webhook subscriber the
    attacking client owns on one queue; ``post`` tells what the delivery of
    each post brought the subscriber."""

    def __init__(self, server: ZaqarServer, hook: WebhookSubscriber, queue: str):
        self.server, self.hook, self.queue = server, hook, f"/v2/queues/{queue}"
        self.posts = 0
        assert server.request("PUT", self.queue)[0] == 201
        assert server.request("POST", f"{self.queue}/subscriptions", {
            "subscriber": hook.url + "/hook", "ttl": 3600})[0] == 201

    def post(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """One post; the trace headers of its delivery (lower-case names)."""
        before = len(self.hook.received)
        assert self.server.request("POST", f"{self.queue}/messages", {
            "messages": [{"body": {"n": self.posts}, "ttl": 60}]},
            headers=headers)[0] == 201
        self.posts += 1
        # Zaqar delivers from a thread pool: seconds on a busy machine.
        deadline = time.monotonic() + 30
        while len(self.hook.received) <= before and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(self.hook.received) > before, "a delivery did not arrive"
        received = {k.lower(): v for k, v in self.hook.received[before][1].items()}
        return {k: v for k, v in received.items()
                if k in ("traceparent", "tracestate", "x-trace-info", "x-trace-hmac")}

    def traced_replays(self, receiver: OTLPReceiver, headers: Mapping[str, str],
                       replays: int) -> int:
        """How many of ``replays`` stats requests with ``headers`` were traced."""
        receiver.clear()
        for _ in range(replays):
            assert self.server.request("GET", f"{self.queue}/stats",
                                       headers=headers)[0] == 200
        canary_headers, canary_id = signed()
        assert self.server.request("GET", "/v2/queues",
                                   headers=canary_headers)[0] == 200
        receiver.wait_for(lambda s: s.trace_id == canary_id and s.kind == "SERVER")
        return sum(1 for s in receiver.spans() if s.kind == "SERVER"
                   and s.name == "GET /v2/queues/{queue_name}/stats")


@contextlib.contextmanager
def hooked_server(receiver: OTLPReceiver, ratio: float) -> Iterator[HookedServer]:
    extra = tracing(receiver, profiler=EVERYTHING,
                    otel={"sample_ratio": str(ratio), "honor_w3c_sampled": "false"})
    extra["storage"] = {"message_pipeline": "zaqar.notification.notifier"}
    with RedisServer() as redis_server, WebhookSubscriber() as hook, ZaqarServer(
            redis_sql(redis_server.url), command=OTEL_SERVER, extra=extra) as server:
        yield HookedServer(server, hook, "hooked")


def _sampled(delivered: Mapping[str, str]) -> bool:
    flags = delivered.get("traceparent", "-00")[-2:]
    return bool(int(flags, 16) & 1)


HOOK_RATIO = 0.05


def test_signed_headers_a_webhook_receives_do_not_let_it_force_tracing(
    receiver: OTLPReceiver,
) -> None:
    """A client that owns a webhook subscriber sees the deliveries of its
    traced posts. Were they to carry ``X-Trace-Info`` / ``X-Trace-HMAC``
    signed with Zaqar's key, replaying those on its own unsigned requests
    would make Zaqar trace every one of them (invariant 3: only the key
    holders force tracing). Unsigned posts until 5 traced deliveries came."""
    with hooked_server(receiver, HOOK_RATIO) as hooked:
        stolen, sampled = None, 0
        while sampled < 5 and hooked.posts < 600:
            delivered = hooked.post()
            sampled += _sampled(delivered)
            if "x-trace-hmac" in delivered:
                stolen = {codec.X_TRACE_INFO: delivered["x-trace-info"],
                          codec.X_TRACE_HMAC: delivered["x-trace-hmac"]}
                break
        assert sampled, f"none of {hooked.posts} posts was traced: nothing tested"
        replays = 60
        traced = hooked.traced_replays(receiver, stolen, replays) if stolen else 0
    bound = binomial_bound(replays, HOOK_RATIO)
    print(f"\n{hooked.posts} unsigned posts, {sampled} traced deliveries; signed "
          f"headers received: {stolen is not None}; replayed: {traced} of "
          f"{replays} traced (ratio {HOOK_RATIO}: at most {bound})")
    assert traced <= bound, (
        f"a webhook subscriber replays the X-Trace-HMAC Zaqar sent it and "
        f"{traced} of {replays} of its requests are traced")


def test_a_trace_id_seen_kept_replayed_is_not_traced_every_time(
    receiver: OTLPReceiver,
) -> None:
    """A ratio decision that depends only on the caller's trace id gives
    the same id the same answer: a client that learns one kept id (the
    delivery of a traced post is the only one with a sampled
    ``traceparent``) replays it on every request. Candidates are ids whose
    post was traced; one whose next 3 posts are all traced is kept."""
    with hooked_server(receiver, HOOK_RATIO) as hooked:
        kept, candidates = None, 0
        while kept is None and hooked.posts < 600:
            trace_id = random.getrandbits(127) + 1
            parent = f"00-{trace_id:032x}-{random.getrandbits(63) + 1:016x}-00"
            if not _sampled(hooked.post({"traceparent": parent})):
                continue
            candidates += 1
            if all(_sampled(hooked.post({"traceparent": parent})) for _ in range(3)):
                kept = parent
        assert candidates, f"none of {hooked.posts} posts was traced: nothing tested"
        replays = 60
        traced = (hooked.traced_replays(receiver, {"traceparent": kept}, replays)
                  if kept else 0)
    bound = binomial_bound(replays, HOOK_RATIO)
    print(f"\n{hooked.posts} posts with chosen trace ids, {candidates} traced; a "
          f"kept id confirmed: {kept is not None}; replayed: {traced} of "
          f"{replays} traced (at most {bound})")
    assert traced <= bound, (
        f"{traced} of {replays} requests replaying one kept trace id traced")
