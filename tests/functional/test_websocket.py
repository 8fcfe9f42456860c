"""Zaqar's websocket API, traced like WSGI (a real websocket client)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from harness.tracing import KEY, OTEL_SERVER, assert_one_tree, tracing
from harness.websocket import exchange
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.tree import render_tree
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.propagation import codec

pytestmark = pytest.mark.functional

WEBSOCKET = {"trace_websocket_transport": "true", "trace_message_links": "true"}




def _request(action: str, body: dict[str, Any],
             trace_headers: dict[str, str] | None = None) -> dict[str, Any]:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "test-project",
               **(trace_headers or {})}
    return {"action": action, "headers": headers, "body": body}


def _signed() -> tuple[dict[str, str], codec.TraceInfo]:
    headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
    info = codec.decode(headers[codec.X_TRACE_INFO], headers[codec.X_TRACE_HMAC],
                         [KEY])
    assert info is not None
    return headers, info


def test_websocket_requests_are_traced_like_wsgi_ones(receiver: OTLPReceiver) -> None:
    post_headers, post = _signed()
    claim_headers, claim = _signed()
    forged = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), "not-the-key")
    w3c_trace, w3c_span = uuid.uuid4().int, 0x0BADC0FFEE0DDF00
    requests = [
        _request("queue_create", {"queue_name": "ws"}),
        _request("message_post", {"queue_name": "ws", "messages": [
            {"body": {"n": 1}, "ttl": 120}, {"body": {"n": 2}, "ttl": 120}]},
            post_headers),
        _request("claim_create", {"queue_name": "ws", "ttl": 60, "grace": 60},
                 claim_headers),
        _request("queue_get_stats", {"queue_name": "ws"}, forged),
        _request("queue_get_stats", {"queue_name": "ws"},
                 {"traceparent": f"00-{w3c_trace:032x}-{w3c_span:016x}-01"}),
    ]
    extra = tracing(receiver, profiler=WEBSOCKET,
                    otel={"honor_w3c_sampled": "true"})
    with RedisServer() as redis:
        with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                         websocket=True) as server:
            responses = exchange(server.port, requests)
            receiver.wait_for(lambda s: s.trace_id == w3c_trace and s.kind == "SERVER")
            time.sleep(0.3)
            spans = receiver.spans()
    statuses = [r["headers"]["status"] for r in responses]
    assert statuses == [201, 201, 201, 200, 200], responses
    tree = render_tree(spans)
    # Only the three traced requests: the forged and untraced ones made nothing.
    assert {s.trace_id for s in spans} == {post.trace_id, claim.trace_id, w3c_trace}
    posting = [s for s in spans if s.trace_id == post.trace_id]
    root = assert_one_tree(posting, remote_parent=post.span_id)
    assert root.name == "websocket message_post" and root.kind == "SERVER"
    assert root.attributes["zaqar_otel.trace_origin"] == "osprofiler"
    send = next(s for s in posting if s.name == "send ws")
    assert send.parent_span_id == root.span_id and send.kind == "PRODUCER"
    assert send.attributes["messaging.batch.message_count"] == 2
    assert any(s.name == "redis_message_controller" for s in posting), tree
    claiming = [s for s in spans if s.trace_id == claim.trace_id]
    assert_one_tree(claiming, remote_parent=claim.span_id)
    receive = next(s for s in claiming if s.name == "receive ws")
    links = [(t, sp) for t, sp, _ in receive.links]
    # One link per producing span, not one per message.
    assert links == [(post.trace_id, send.span_id)]
    w3c = [s for s in spans if s.trace_id == w3c_trace]
    assert assert_one_tree(w3c, remote_parent=w3c_span).attributes[
        "zaqar_otel.trace_origin"] == "traceparent"


def test_websocket_tracing_is_off_unless_asked(receiver: OTLPReceiver) -> None:
    headers, _ = _signed()
    with RedisServer() as redis:
        with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                         extra=tracing(receiver), websocket=True) as server:
            responses = exchange(server.port, [
                _request("queue_create", {"queue_name": "quiet"}, headers)])
            time.sleep(1.0)
    assert responses[0]["headers"]["status"] == 201
    assert receiver.spans() == []


def test_a_refused_websocket_request_gets_its_server_span(
        receiver: OTLPReceiver) -> None:
    """Zaqar answers a bad request before its API handler; like a WSGI 4xx,
    it is one server span, with the status sent."""
    headers, info = _signed()
    refused = _request("no_such_action", {"queue_name": "ws"}, headers)
    with RedisServer() as redis:
        with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                         extra=tracing(receiver, profiler=WEBSOCKET),
                         websocket=True) as server:
            responses = exchange(server.port, [refused])
            [span] = receiver.wait_for(lambda s: s.trace_id == info.trace_id)
    assert responses[0]["headers"]["status"] == 400, responses
    assert span.kind == "SERVER" and span.name == "websocket _OTHER"
    assert span.parent_span_id == info.span_id
    assert span.attributes["zaqar.websocket.status"] == 400
