"""Traces that follow the message: messaging conventions and producer links."""

from __future__ import annotations

import uuid

import pytest

from harness.servers import MongoServer
from harness.tracing import KEY, OTEL_SERVER, ProfiledSession, canary, tracing
from zaqar_otel.demo.client import profiled, zaqar_client
from zaqar_otel.demo.processes import RedisServer, WebhookSubscriber
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.tree import render_tree
from zaqar_otel.demo.zaqar_server import ZaqarServer, mongo, redis_sql
from zaqar_otel.propagation import idmap

pytestmark = pytest.mark.functional

LINKS = {"trace_message_links": "true"}






def _operations(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.attributes.get("messaging.system") == "zaqar"]


def test_operation_spans_carry_the_messaging_conventions(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra=tracing(receiver)) as server:
        session = ProfiledSession(server, receiver, "orders")
    tree = render_tree(session.spans)
    by_id = {s.span_id: s for s in session.spans}
    ops = {(s.name, s.attributes["messaging.operation.name"]): s
           for s in _operations(session.spans)}
    send = ops[("send orders", "post")]
    assert send.kind == "PRODUCER"
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.destination.name"] == "orders"
    assert send.attributes["messaging.batch.message_count"] == 2
    assert list(send.attributes["zaqar.message.ids"]) == session.record.posted_ids
    assert send.attributes["zaqar.project.id"] == "test-project"
    claim = ops[("receive orders", "claim")]
    assert claim.kind == "CONSUMER"
    assert sorted(claim.attributes["zaqar.message.ids"]) == sorted(
        session.record.posted_ids)
    assert ops[("receive orders", "list")].kind == "CONSUMER"
    settles = [s for (name, _), s in ops.items() if name == "settle orders"]
    deletes = [s for s in _operations(session.spans)
               if s.attributes["messaging.operation.name"] == "delete"]
    assert settles and len(deletes) == 2
    assert {s.attributes["messaging.message.id"] for s in deletes} == set(
        session.record.posted_ids)
    # Operation spans sit between the server span and the storage calls.
    for op in _operations(session.spans):
        assert by_id[op.parent_span_id].kind == "SERVER", tree
    post_controller = next(s for s in session.spans
                           if s.name == "redis_message_controller"
                           and s.attributes["code.function.name"].endswith(".post"))
    assert post_controller.parent_span_id == send.span_id, tree
    # Server spans keep the HTTP conventions only.
    assert not any("messaging.system" in s.attributes for s in session.spans
                   if s.kind == "SERVER")


def _produce_then_consume(server: ZaqarServer, receiver: OTLPReceiver,
                          queue: str, traced_post: bool = True
                          ) -> tuple[int | None, int]:
    """Post 2 messages (profiled or not), then claim them in another trace.

    Returns (producer trace id or None, consumer trace id).
    """
    client = zaqar_client(server.url)
    client.queue(queue, force_create=True)
    producer_trace = None
    if traced_post:
        with profiled(KEY) as prof:
            client.queue(queue, auto_create=False).post(
                [{"body": {"n": n}, "ttl": 120} for n in range(2)])
            producer_trace = idmap.trace_id_from_base_id(prof.get_base_id())
    else:
        client.queue(queue, auto_create=False).post(
            [{"body": {"n": n}, "ttl": 120} for n in range(2)])
    with profiled(KEY) as prof:
        claimed = list(client.queue(queue, auto_create=False).claim(ttl=60, grace=60))
        consumer_trace = idmap.trace_id_from_base_id(prof.get_base_id())
    assert len(claimed) == 2 and [m.body for m in claimed] == [{"n": 0}, {"n": 1}]
    receiver.wait_for(lambda s: s.trace_id == consumer_trace and s.kind == "SERVER")
    return producer_trace, consumer_trace


@pytest.mark.parametrize("store", ["redis", "mongodb"])
def test_a_claim_links_to_the_posts_that_produced_its_messages(
    store: str, receiver: OTLPReceiver
) -> None:
    with RedisServer() as redis_server, MongoServer() as mongo_server:
        deployment = (redis_sql(redis_server.url) if store == "redis"
                      else mongo(mongo_server.url))
        with ZaqarServer(deployment, command=OTEL_SERVER,
                         extra=tracing(receiver, profiler=LINKS)) as server:
            producer, consumer = _produce_then_consume(server, receiver, "linked")
            spans = receiver.spans()
    send = next(s for s in spans if s.trace_id == producer and s.name == "send linked")
    claim = next(s for s in spans if s.trace_id == consumer
                 and s.name == "receive linked")
    assert [(t, sp) for t, sp, _ in claim.links] == [(producer, send.span_id)], (
        render_tree(spans))


def test_untraced_posts_store_nothing_and_links_are_off_by_default(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    import redis as redis_client

    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra=tracing(receiver, profiler=LINKS)) as server:
        _, consumer = _produce_then_consume(server, receiver, "quiet",
                                            traced_post=False)
        spans = receiver.spans()
    with redis_client.Redis.from_url(redis.url) as client:
        assert client.keys("zaqar_otel.link.*") == []
    claim = next(s for s in spans if s.trace_id == consumer
                 and s.name == "receive quiet")
    assert claim.links == ()
    # Default (option unset): a traced post stores nothing either.
    receiver.clear()
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra=tracing(receiver)) as server:
        _, consumer = _produce_then_consume(server, receiver, "default")
    with redis_client.Redis.from_url(redis.url) as client:
        assert client.keys("zaqar_otel.link.*") == []


def test_stored_link_expires_with_its_message_and_holds_only_ids(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    import redis as redis_client

    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra=tracing(receiver, profiler=LINKS)) as server:
        client = zaqar_client(server.url)
        queue = client.queue("ttl", force_create=True)
        with profiled(KEY):
            posted = queue.post([{"body": {"n": 1}, "ttl": 90}])
        message_id = posted["resources"][0].rsplit("/", 1)[-1]
    with redis_client.Redis.from_url(redis.url) as client:
        key = f"zaqar_otel.link.{message_id}"
        value = client.get(key)
        assert value is not None and len(value) == 48  # trace id + span id, hex
        assert 0 < client.ttl(key) <= 90


def _notifying(receiver: OTLPReceiver) -> dict[str, dict[str, str]]:
    """Every kind of tracing, outgoing HTTP too, and subscriptions notified
    (webhooks) on every post."""
    extra = tracing(receiver, profiler={"trace_requests": "true"})
    extra["storage"] = {"message_pipeline": "zaqar.notification.notifier"}
    return extra


def test_webhook_delivery_carries_trace_headers_and_links_to_the_post(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    secret = "tok-" + uuid.uuid4().hex
    with WebhookSubscriber() as subscriber, ZaqarServer(
            redis_sql(redis.url), command=OTEL_SERVER,
            extra=_notifying(receiver)) as server:
        client = zaqar_client(server.url)
        queue = client.queue("hooked", force_create=True)
        hook = f"{subscriber.url}/hook?token={secret}"
        client.subscription("hooked", subscriber=hook, ttl=600)
        with profiled(KEY) as prof:
            queue.post([{"body": {"event": "created"}, "ttl": 120}])
            producer = idmap.trace_id_from_base_id(prof.get_base_id())
        assert subscriber.arrived.wait(20), server.log_tail()
        path, headers, body = subscriber.received[0]
        delivery = receiver.wait_for(lambda s: s.name == "deliver hooked")[0]
        receiver.wait_for(lambda s: s.trace_id == delivery.trace_id
                          and s.kind == "CLIENT")
        # The notifier runs before the post is stored: the delivery may be
        # exported before the post's request ends.
        receiver.wait_for(lambda s: s.trace_id == producer and s.kind == "SERVER")
        spans = receiver.spans()
    assert path == f"/hook?token={secret}" and b"created" in body
    send = next(s for s in spans if s.trace_id == producer and s.name == "send hooked")
    # The delivery is a trace of its own, linked to the post that caused it.
    assert delivery.kind == "PRODUCER" and delivery.parent_span_id is None
    assert delivery.trace_id != producer
    assert [(t, sp) for t, sp, _ in delivery.links] == [(producer, send.span_id)]
    assert delivery.attributes["zaqar.subscriber"] == subscriber.url  # no path
    # The subscriber got the webhook call's span as traceparent.
    call = next(s for s in spans if s.trace_id == delivery.trace_id
                and s.kind == "CLIENT")
    assert call.parent_span_id == delivery.span_id
    lower = {k.lower(): v for k, v in headers.items()}
    _, trace_hex, span_hex, flags = lower["traceparent"].split("-")
    assert (trace_hex, span_hex) == (f"{delivery.trace_id:032x}",
                                     f"{call.span_id:016x}")
    assert int(flags, 16) & 1  # sampled
    # Never a signed header: a third party could replay it to make Zaqar
    # trace its own requests.
    assert "x-trace-info" not in lower and "x-trace-hmac" not in lower, headers
    # The webhook's token never reaches the exported telemetry.
    assert secret.encode() not in receiver.raw


def test_an_untraced_posts_webhook_carries_no_trace_headers(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    """docs/configuration.md: untraced requests' outgoing calls carry none."""
    with WebhookSubscriber() as subscriber, ZaqarServer(
            redis_sql(redis.url), command=OTEL_SERVER,
            extra=_notifying(receiver)) as server:
        client = zaqar_client(server.url)
        queue = client.queue("quiet-hook", force_create=True)
        client.subscription("quiet-hook", subscriber=f"{subscriber.url}/hook",
                            ttl=600)
        queue.post([{"body": {"event": "untraced"}, "ttl": 120}])
        assert subscriber.arrived.wait(20), server.log_tail()
        canary(server, receiver, clear=False)
    _, headers, body = subscriber.received[0]
    assert b"untraced" in body
    lower = {k.lower() for k in headers}
    assert not lower & {"traceparent", "tracestate", "x-trace-info", "x-trace-hmac"}, (
        headers)
    assert not [s for s in receiver.spans() if s.name.startswith("deliver")]


def test_a_listing_and_a_pop_link_to_the_post(
    redis: RedisServer, receiver: OTLPReceiver
) -> None:
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra=tracing(receiver, profiler=LINKS)) as server:
        client = zaqar_client(server.url)
        queue = client.queue("popped", force_create=True)
        with profiled(KEY) as prof:
            queue.post([{"body": {"n": n}, "ttl": 120} for n in range(3)])
            producer = idmap.trace_id_from_base_id(prof.get_base_id())
        with profiled(KEY) as prof:
            listed = list(queue.messages(echo=True))
            popped = queue.pop(count=3)
            consumer = idmap.trace_id_from_base_id(prof.get_base_id())
        assert len(listed) == 3 and len(list(popped)) == 3
        receiver.wait_for(lambda s: s.trace_id == consumer
                          and s.attributes.get("messaging.operation.name") == "pop")
        spans = receiver.spans()
    send = next(s for s in spans if s.trace_id == producer and s.name == "send popped")
    for operation in ("list", "pop"):
        span = next(s for s in spans if s.trace_id == consumer and
                    s.attributes.get("messaging.operation.name") == operation)
        assert span.kind == "CONSUMER"
        assert [(t, sp) for t, sp, _ in span.links] == [(producer, send.span_id)]
