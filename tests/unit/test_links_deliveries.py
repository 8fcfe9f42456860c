"""The pure parts of links and deliveries, without a store or a Zaqar: the
stored span context, what is saved after a post and linked on a receive,
the lazy listing pass-through, and the delivery span of a webhook."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from zaqar_otel import patching
from zaqar_otel.messaging import deliveries, links, operations
from zaqar_otel.propagation import codec
from zaqar_otel.propagation.propagator import OSProfilerPropagator

_LOG_FAILURE = patching.FailureLog(logging.getLogger(__name__), "closing an operation")

_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)


class MemoryStore:
    """A LinkStore in a dict (the Redis and Mongo ones are tested end to end)."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple[str, int]] = {}
        self.loads: list[list[str]] = []

    def save(self, entries: Sequence[tuple[str, int]], value: str) -> None:
        for message_id, ttl in entries:
            self.saved[message_id] = (value, ttl)

    def load(self, message_ids: Sequence[str]) -> list[str | bytes | None]:
        self.loads.append(list(message_ids))
        return [self.saved.get(i, (None, 0))[0] for i in message_ids]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider.get_tracer("t")


@pytest.fixture
def signing_propagator() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(OSProfilerPropagator(["KEY"]))
    yield
    propagate.set_global_textmap(previous)


def test_a_link_value_round_trips_and_garbage_is_none() -> None:
    sc = trace.SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331,
                           is_remote=False, trace_flags=_SAMPLED)
    value = links.encode(sc)
    assert len(value) == 48
    back = links.decode(value.encode())
    assert back is not None and (back.trace_id, back.span_id) == (sc.trace_id,
                                                                  sc.span_id)
    assert back.is_remote and back.trace_flags.sampled
    for garbage in (None, "", "zz" * 24, value[:-1], "0" * 48, b"\xff" * 48):
        assert links.decode(garbage) is None


def _open(tracer: trace.Tracer, found: tuple[str, str, SpanKind]) -> Any:
    return operations.open_operation(tracer, found, "orders", "p1", None)


def test_a_traced_post_saves_its_span_beside_each_message_with_its_ttl(
        tracer: trace.Tracer) -> None:
    store = MemoryStore()
    operation, tokens = _open(tracer, ("send", "post", SpanKind.PRODUCER))
    links._after_post(store, [{"ttl": 60}, {"ttl": 300}], ["m1", "m2"])
    expected = links.encode(operation.span.get_span_context())
    operations.close_operation(operation, tokens, 201, None, _LOG_FAILURE)
    assert store.saved == {"m1": (expected, 60), "m2": (expected, 300)}


def test_an_untraced_post_saves_nothing() -> None:
    store = MemoryStore()
    links._after_post(store, [{"ttl": 60}], ["m1"])
    assert store.saved == {}


def test_a_receive_links_each_producing_span_once_and_loads_each_id_once(
        tracer: trace.Tracer, spans: InMemorySpanExporter) -> None:
    store = MemoryStore()
    post = trace.SpanContext(7, 70, is_remote=True, trace_flags=_SAMPLED)
    store.save([("m1", 60), ("m2", 60)], links.encode(post))
    operation, tokens = _open(tracer, ("receive", "claim", SpanKind.CONSUMER))
    links._link(store, operation, ["m1", "m2", "unknown"])
    links._link(store, operation, ["m1"])  # listed again: no second load
    operations.close_operation(operation, tokens, 201, None, _LOG_FAILURE)
    (received,) = spans.get_finished_spans()
    assert [(lk.context.trace_id, lk.context.span_id) for lk in received.links] == [
        (7, 70)]
    assert store.loads == [["m1", "m2", "unknown"]]


def test_a_failing_store_never_fails_the_operation(tracer: trace.Tracer) -> None:
    class Broken(MemoryStore):
        def load(self, message_ids: Sequence[str]) -> list[str | bytes | None]:
            raise ConnectionError("redis is gone")

    operation, tokens = _open(tracer, ("receive", "claim", SpanKind.CONSUMER))
    links._link(Broken(), operation, ["m1"])  # no exception
    operations.close_operation(operation, tokens, 201, None, _LOG_FAILURE)


def test_a_listing_is_passed_through_lazily_and_ids_reported_at_its_end() -> None:
    seen: list[list[str]] = []
    pages = iter([iter([{"id": "a"}, {"id": "b"}, {"no": "id"}]), "next-marker"])
    out = list(links._listing(pages, seen.append))
    assert seen == []  # nothing consumed yet: Zaqar's iterator is lazy
    assert list(out[0]) == [{"id": "a"}, {"id": "b"}, {"no": "id"}]
    assert out[1] == "next-marker"
    assert seen == [["a", "b"]]


def test_a_delivery_of_a_traced_post_is_its_own_linked_trace_without_a_signature(
        tracer: trace.Tracer, spans: InMemorySpanExporter,
        signing_propagator: None) -> None:
    post = trace.SpanContext(9, 90, is_remote=False, trace_flags=_SAMPLED)
    sent: list[dict[str, str]] = []

    def webhook() -> str:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        sent.append(carrier)
        return "delivered"

    subscription = {"source": "orders", "subscriber": "http://user:pw@hook/x?t=1"}
    assert deliveries._deliver(tracer, post, subscription, webhook) == "delivered"
    (span,) = spans.get_finished_spans()
    assert span.name == "deliver orders" and span.kind is SpanKind.PRODUCER
    assert span.parent is None and span.context.trace_id != 9
    assert [(lk.context.trace_id, lk.context.span_id) for lk in span.links] == [
        (9, 90)]
    assert "pw" not in str(span.attributes["zaqar.subscriber"])
    assert codec.X_TRACE_INFO not in sent[0]  # a third party gets no capability


def test_the_executor_runs_untraced_submissions_untraced(
        tracer: trace.Tracer, spans: InMemorySpanExporter) -> None:
    executor = deliveries._TracingExecutor(ThreadPoolExecutor(1), tracer)

    def current_is_sampled() -> bool:
        return trace.get_current_span().get_span_context().trace_flags.sampled

    token = context.attach(trace.set_span_in_context(tracer.start_span("request")))
    try:
        # No traced post is being submitted: the delivery makes no span.
        assert executor.submit(current_is_sampled).result() is False
    finally:
        context.detach(token)
    assert [s.name for s in spans.get_finished_spans()] == []
    executor.shutdown()
