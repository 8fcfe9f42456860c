"""zaqar_otel/backends/redis_commands.py against a real Redis: each command
and pipeline an event of the span that sent it, with the statement, never
an argument; errors named; nothing while no span records; undone whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_client
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from zaqar_otel import patching
from zaqar_otel._sdk import events as sdk_events
from zaqar_otel._sdk import layout
from zaqar_otel._sdk.fast import recorder
from zaqar_otel._sdk.fast.otlp_encoding import SpanEncoder
from zaqar_otel.backends import redis_commands
from zaqar_otel.demo.processes import RedisServer

SECRET = "a-message-body-never-exported"
PROVIDERS = {"sdk": sdk_trace.TracerProvider, "fast": recorder.TracerProvider}


@pytest.fixture(params=list(PROVIDERS))
def traced(request: pytest.FixtureRequest
           ) -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = PROVIDERS[request.param]()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    patches = patching.Patches()
    redis_commands.instrument(layout.OLD_CONVENTIONS, patches)
    try:
        yield provider.get_tracer("t"), exporter
    finally:
        patches.undo()
        provider.shutdown()


def _events(exporter: InMemorySpanExporter) -> list[Any]:
    (span,) = exporter.get_finished_spans()
    return list(span.events)


def test_a_command_is_an_event_of_the_span_that_sent_it(
        redis: RedisServer, traced: tuple[Any, InMemorySpanExporter]) -> None:
    tracer, exporter = traced
    with redis_client.Redis.from_url(redis.url) as client:
        with tracer.start_as_current_span("storage call") as span:
            client.set("key", SECRET)
            assert client.get("key") == SECRET.encode()
        start, end = span.start_time, span.end_time
    events = _events(exporter)
    assert [e.name for e in events] == ["SET", "GET"]
    first = dict(events[0].attributes)
    duration = first.pop(redis_commands.DURATION)
    assert first == {
        "db.statement": "SET ? ?", "db.redis.args_length": 3, "db.system": "redis",
        "db.redis.database_index": 0, "net.peer.name": "127.0.0.1",
        "net.peer.port": redis.port, "net.transport": "ip_tcp"}
    assert 0 < duration < (end - start) / 1e9
    assert start <= events[0].timestamp <= events[1].timestamp <= end
    assert SECRET not in repr([dict(e.attributes) for e in events])


def test_a_pipeline_is_one_event(
        redis: RedisServer, traced: tuple[Any, InMemorySpanExporter]) -> None:
    tracer, exporter = traced
    with redis_client.Redis.from_url(redis.url) as client:
        with tracer.start_as_current_span("storage call"):
            pipe = client.pipeline()
            pipe.hset("h", "body", SECRET)
            pipe.hgetall("h")
            assert pipe.execute()[1] == {b"body": SECRET.encode()}
    (event,) = _events(exporter)
    assert event.name == "HSET HGETALL"
    assert event.attributes["db.statement"] == "HSET ? ? ?\nHGETALL ?"
    assert event.attributes["db.redis.pipeline_length"] == 2
    assert SECRET not in repr(dict(event.attributes))


def test_an_error_is_named_and_raised_unchanged(
        redis: RedisServer, traced: tuple[Any, InMemorySpanExporter]) -> None:
    tracer, exporter = traced
    with redis_client.Redis.from_url(redis.url) as client:
        client.set("text", "not a number")
        with tracer.start_as_current_span("storage call"):
            with pytest.raises(redis_client.ResponseError):
                client.incr("text")
    (event,) = _events(exporter)
    assert event.name == "INCRBY"
    assert event.attributes["error.type"] == "ResponseError"


def test_the_exporter_sends_the_events_as_the_sdks_encoder_would(
        redis: RedisServer, traced: tuple[Any, InMemorySpanExporter]) -> None:
    """Byte for byte through zaqar-otel's encoder and the SDK's, on either
    path; on the fast one, the commands of one statement share their
    attributes (one tuple, encoded once)."""
    tracer, exporter = traced
    with redis_client.Redis.from_url(redis.url) as client:
        client.set("text", "not a number")
        with tracer.start_as_current_span("storage call"):
            client.get("text")
            client.get("other")
            pipe = client.pipeline()
            pipe.get("text")
            pipe.exists("other")
            pipe.execute()
            with pytest.raises(redis_client.ResponseError):
                client.incr("text")
    spans = exporter.get_finished_spans()
    gets = _events(exporter)[:2]
    assert [e.name for e in _events(exporter)] == ["GET", "GET", "GET EXISTS", "INCRBY"]
    sdk_bytes = encode_spans(spans).SerializePartialToString()
    encoder = SpanEncoder()
    assert encoder.encode(spans) == sdk_bytes
    assert encoder.encode(spans) == sdk_bytes  # with the shared parts kept
    if isinstance(spans[0], recorder.Span):
        assert all(isinstance(e, sdk_events.SharedEvent) for e in gets)
        assert gets[0].shared is gets[1].shared


def test_no_recording_span_no_event_and_the_same_answers(
        redis: RedisServer, traced: tuple[Any, InMemorySpanExporter]) -> None:
    tracer, exporter = traced
    with redis_client.Redis.from_url(redis.url) as client:
        client.set("key", "value")
        assert client.get("key") == b"value"
        pipe = client.pipeline()
        pipe.get("key")
        assert pipe.execute() == [b"value"]
    assert exporter.get_finished_spans() == ()


def test_stable_conventions_name_the_attributes_as_the_instrumentation_does(
        redis: RedisServer) -> None:
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    patches = patching.Patches()
    redis_commands.instrument(layout.STABLE_CONVENTIONS, patches)
    try:
        with redis_client.Redis.from_url(redis.url) as client:
            with provider.get_tracer("t").start_as_current_span("call"):
                client.get("key")
    finally:
        patches.undo()
    (event,) = _events(exporter)
    attributes = dict(event.attributes)
    attributes.pop(redis_commands.DURATION)
    assert attributes == {
        "db.query.text": "GET ?", "db.redis.args_length": 2,
        "db.system.name": "redis", "server.address": "127.0.0.1",
        "server.port": redis.port, "network.transport": "tcp"}


def test_undo_puts_redis_py_back() -> None:
    from redis import client

    before = (redis_client.Redis.execute_command, client.Pipeline.execute,
              client.Pipeline.immediate_execute_command)
    patches = patching.Patches()
    redis_commands.instrument(layout.OLD_CONVENTIONS, patches)
    assert redis_client.Redis.execute_command is not before[0]
    patches.undo()
    assert (redis_client.Redis.execute_command, client.Pipeline.execute,
            client.Pipeline.immediate_execute_command) == before
