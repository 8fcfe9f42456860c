"""The hand-written OTLP encoder against the SDK's, and the exporter using it.

Spans come from the real SDK; the reference is the SDK's own encoder
(``encode_spans(...).SerializePartialToString()``); what the exporter sends
is decoded by the OTLP receiver, as a collector would.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import NonRecordingSpan, TraceFlags, TraceState

from zaqar_otel._sdk.fast import otlp_encoding, recorder
from zaqar_otel._sdk.fast.otlp_encoding import SpanEncoder
from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter
from zaqar_otel.demo.receiver import OTLPReceiver, decode_request


def _provider(kept: InMemorySpanExporter, resource: dict[str, Any],
              provider_class: type[TracerProvider] = TracerProvider,
              **limits: int) -> TracerProvider:
    provider = provider_class(resource=Resource(resource, "https://schema/r"),
                              span_limits=SpanLimits(**limits))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return provider


INT64 = st.integers(-(1 << 63), (1 << 63) - 1)
SCALARS = st.one_of(st.text(max_size=20), st.booleans(), INT64,
                    st.floats(allow_nan=True), st.integers())  # beyond int64 too
VALUES = st.one_of(SCALARS, st.lists(st.text(max_size=5), max_size=3),
                   st.lists(INT64, max_size=3), st.lists(st.booleans(), max_size=3),
                   st.lists(st.floats(), max_size=3))
ATTRIBUTES = st.dictionaries(st.text(max_size=12), VALUES, max_size=6)
KINDS = st.sampled_from(list(SpanKind))


@st.composite
def span_specs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "name": draw(st.text(max_size=30)),
        "kind": draw(KINDS),
        "attributes": draw(ATTRIBUTES),
        "events": draw(st.lists(st.tuples(st.text(max_size=8), ATTRIBUTES),
                                max_size=2)),
        "links": draw(st.lists(st.tuples(st.integers(1, (1 << 128) - 1),
                                         st.integers(1, (1 << 64) - 1),
                                         st.booleans(), ATTRIBUTES), max_size=2)),
        "parent": draw(st.sampled_from([None, "local", "remote"])),
        "trace_state": draw(st.booleans()),
        "status": draw(st.sampled_from([None, "ok", "error"])),
        "description": draw(st.text(max_size=10)),
        "scope": draw(st.sampled_from([("a", None, None), ("b", "1.0", "https://s"),
                                       ("c", "2", None)])),
    }


def _record(specs: list[dict[str, Any]], providers: list[TracerProvider]) -> None:
    for n, spec in enumerate(specs):
        provider = providers[n % len(providers)]
        name, version, schema = spec["scope"]
        tracer = provider.get_tracer(name, version, schema,
                                     attributes={"scope.n": n % 2} if version else None)
        context = None
        if spec["parent"]:
            state = TraceState([("vendor", "v1")]) if spec["trace_state"] else None
            parent = SpanContext(0xABC, 0xDEF, spec["parent"] == "remote",
                                 TraceFlags(1), state)
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        links = [Link(SpanContext(t, s, remote, TraceFlags(1)), attrs)
                 for t, s, remote, attrs in spec["links"]]
        span = tracer.start_span(spec["name"], context, spec["kind"],
                                 spec["attributes"], links)
        for event, attrs in spec["events"]:
            span.add_event(event, attrs)
        if spec["status"] == "ok":
            span.set_status(Status(StatusCode.OK))
        elif spec["status"] == "error":
            span.set_status(Status(StatusCode.ERROR, spec["description"]))
        span.end()


@pytest.mark.parametrize("provider_class", [TracerProvider,
                                            recorder.TracerProvider])
@settings(max_examples=300, deadline=None)
@given(st.lists(span_specs(), min_size=1, max_size=8))
def test_same_bytes_as_the_sdk_encoder(provider_class: type[TracerProvider],
                                       specs: list[dict[str, Any]]) -> None:
    """Any span the SDK records, or zaqar_otel._sdk.fast.recorder's provider: ids,
    parents (local and remote), trace state, kinds, every attribute type,
    events, links, status, dropped counts, several resources and scopes.
    Out-of-range ints are dropped by both, the span kept."""
    kept = InMemorySpanExporter()
    providers = [_provider(kept, {"service.name": "one"}, provider_class,
                           max_attributes=4, max_events=1, max_links=1),
                 _provider(kept, {"service.name": "two", "n": 2}, provider_class)]
    logging.disable(logging.CRITICAL)  # both encoders log each dropped attribute
    try:
        _record(specs, providers)
        encoder = SpanEncoder()
        ours = encoder.encode(kept.get_finished_spans())
        again = encoder.encode(kept.get_finished_spans())  # names, sets kept
        without_memo = SpanEncoder(memo_size=0).encode(kept.get_finished_spans())
        # Encoded as they ended, one span in three left to the batch.
        spans = kept.get_finished_spans()
        early = SpanEncoder()
        pieces = [s if n % 3 == 1 else early.encoded(s) for n, s in enumerate(spans)]
        from_pieces = early.encode(pieces)
        sdk = encode_spans(kept.get_finished_spans()).SerializePartialToString()
    finally:
        logging.disable(logging.NOTSET)
    assert ours == sdk
    assert again == sdk
    assert without_memo == sdk
    assert from_pieces == sdk


def test_attributes_kept_from_one_batch_do_not_mix_types_or_places() -> None:
    """The memo of encoded attributes: True, 1 and 1.0 under one key stay a
    bool, an int and a float; the same pair on a span, an event and the
    resource is encoded for each place."""
    kept = InMemorySpanExporter()
    provider = _provider(kept, {"flag": True})
    tracer = provider.get_tracer("t")
    encoder = SpanEncoder()
    for value in (True, 1, 1.0, True):
        span = tracer.start_span("s", attributes={"flag": value})
        span.add_event("e", {"flag": value})
        span.end()
    spans = decode_request(encoder.encode(kept.get_finished_spans()))
    values = [s.attributes["flag"] for s in spans]
    assert [type(v) for v in values] == [bool, int, float, bool]
    assert [e[1]["flag"] for s in spans for e in s.events] == values
    assert all(s.resource == {"flag": True} for s in spans)
    sdk = encode_spans(kept.get_finished_spans()).SerializePartialToString()
    assert encoder.encode(kept.get_finished_spans()) == sdk


def test_attribute_sets_kept_from_one_batch_do_not_mix_types() -> None:
    """The memo of a span's whole attribute set: equal sets of values of
    other types (True and 1, 0.0 and -0.0, (True,) and (1,)) each encode as
    themselves, in one batch and the next."""
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}, recorder.TracerProvider).get_tracer("t")
    for value in (True, 1, True, 0.0, -0.0, 0.0, (True,), (1,), (True,), "1", 1):
        tracer.start_span("s", attributes={"a": "same", "v": value}).end()
    encoder = SpanEncoder()
    for _ in range(2):
        spans = kept.get_finished_spans()
        assert encoder.encode(spans) == encode_spans(spans).SerializePartialToString()


@settings(max_examples=100, deadline=None)
@given(st.lists(VALUES, min_size=2, max_size=12),
       st.sampled_from([TracerProvider, recorder.TracerProvider]))
def test_sets_that_differ_only_in_their_last_attribute_encode_as_the_sdks(
        lasts: list[Any], provider_class: type[TracerProvider]) -> None:
    """A server span's request id or an operation's message ids, set last
    and new on every request: the rest of the set is encoded once and kept,
    the last attribute every time, of any type, out-of-range ints dropped."""
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}, provider_class).get_tracer("t")
    head = {"http.method": "GET", "net.host.port": 8888, "http.flavor": "1.1",
            "ok": True}
    for last in [*lasts, "req-1", ("a", "b"), "req-2"]:
        span = tracer.start_span("GET /v2/queues", attributes=head)
        span.set_attribute("openstack.request_id", last)
        span.end()
    spans = kept.get_finished_spans()
    encoder = SpanEncoder()
    logging.disable(logging.CRITICAL)  # both encoders log each dropped attribute
    try:
        sdk = encode_spans(spans).SerializePartialToString()
        assert encoder.encode(spans) == sdk
        assert encoder.encode(spans) == sdk
        early = SpanEncoder()
        assert early.encode([early.encoded(span) for span in spans]) == sdk
    finally:
        logging.disable(logging.NOTSET)
    assert encoder._heads  # the kept head served


def test_attributes_seen_once_are_not_kept() -> None:
    """Request ids, each on one span only, neither fill the memo of
    encoded attributes (which would clear it, and with it the attributes
    that repeat) nor the memo of attribute sets."""
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}, recorder.TracerProvider).get_tracer("t")
    for n in range(3000):
        tracer.start_span("GET", attributes={
            "http.method": "GET", "openstack.request_id": f"req-{n}"}).end()
    encoder = SpanEncoder()
    spans = kept.get_finished_spans()
    assert encoder.encode(spans) == encode_spans(spans).SerializePartialToString()
    assert len(encoder._memo) < 10 and len(encoder._blocks) < 10


def test_a_span_class_with_its_own_properties_is_read_through_them() -> None:
    """The short way reads an SDK span's fields; a ReadableSpan subclass that
    answers otherwise is read through its properties, as the SDK's encoder
    reads it."""
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}).get_tracer("t")
    tracer.start_span("field name", attributes={"a": 1}).end()
    (span,) = kept.get_finished_spans()

    class Renamed(ReadableSpan):
        @property
        def name(self) -> str:
            return "property name"

    renamed = Renamed(name=span.name, context=span.context, parent=span.parent,
                      resource=span.resource, attributes=span.attributes,
                      kind=span.kind, start_time=span.start_time,
                      end_time=span.end_time,
                      instrumentation_scope=span.instrumentation_scope)
    assert otlp_encoding.by_field(type(span)) and not otlp_encoding.by_field(Renamed)
    body = SpanEncoder().encode([renamed, span])
    assert body == encode_spans([renamed, span]).SerializePartialToString()
    assert [s.name for s in decode_request(body)] == ["property name", "field name"]


def test_the_exporters_encoder_pauses_every_few_dozen_spans(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The export thread lets the request threads have the GIL between
    chunks of a batch; the bytes are the same."""
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}).get_tracer("t")
    for n in range(100):
        tracer.start_span(f"s{n}", attributes={"n": n}).end()
    spans = kept.get_finished_spans()
    slept: list[float] = []
    monkeypatch.setattr(otlp_encoding.time, "sleep", slept.append)
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    body = exporter._encoder.encode(spans)
    assert body == SpanEncoder().encode(spans)
    every = otlp_encoding.EXPORT_PAUSE_EVERY
    assert slept == [otlp_encoding.EXPORT_PAUSE] * (100 // every)


@pytest.mark.parametrize("memo_size", [otlp_encoding._MEMO_MAX, 10, 0])
def test_the_memo_is_bounded(memo_size: int) -> None:
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}).get_tracer("t")
    encoder = SpanEncoder(memo_size=memo_size)
    for batch in range(3):
        for n in range(2000):
            tracer.start_span("s", attributes={"id": f"{batch}-{n}",
                                               "long": "x" * 300 + str(n)}).end()
        spans = kept.get_finished_spans()
        body = encoder.encode(spans)
        assert body == encode_spans(spans).SerializePartialToString()
        kept.clear()
    assert len(encoder._memo) <= memo_size


def test_kept_span_names_are_bounded() -> None:
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}).get_tracer("t")
    encoder = SpanEncoder()
    for n in range(3 * otlp_encoding._NAMES_MAX):
        tracer.start_span(f"GET /v2/queues/q{n}").end()
    spans = kept.get_finished_spans()
    assert encoder.encode(spans) == encode_spans(spans).SerializePartialToString()
    assert 0 < len(encoder._names) <= otlp_encoding._NAMES_MAX


def test_a_lone_surrogate_costs_a_character_not_the_batch() -> None:
    """The SDK's encoder fails the whole batch on a string that cannot be
    UTF-8; here the character is replaced and the other spans go out."""
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}).get_tracer("t")
    tracer.start_span("GET /v2/queues/\ud800", attributes={"k": "a\udfffb"}).end()
    tracer.start_span("fine").end()
    with pytest.raises(UnicodeEncodeError):
        encode_spans(kept.get_finished_spans()).SerializePartialToString()
    first, second = decode_request(SpanEncoder().encode(kept.get_finished_spans()))
    assert first.name == "GET /v2/queues/?" and first.attributes == {"k": "a?b"}
    assert second.name == "fine"


def test_floats_and_extreme_ints_round_trip() -> None:
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}).get_tracer("t")
    values = {"min": -(1 << 63), "max": (1 << 63) - 1, "neg": -1, "inf": math.inf,
              "zero": 0.0, "list": (1.5, -2.5)}
    tracer.start_span("s", attributes=values).end()
    (span,) = decode_request(SpanEncoder().encode(kept.get_finished_spans()))
    assert span.attributes == values


# -- the exporter -----------------------------------------------------------------


def _two_spans() -> list[ReadableSpan]:
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {"service.name": "zaqar"}).get_tracer("t")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER):
        tracer.start_span("child", attributes={"db.system": "redis"}).end()
    return list(kept.get_finished_spans())


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_the_exporter_sends_what_a_collector_decodes(
        receiver: OTLPReceiver, compression: str | None) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression

    exporter = OTLPSpanExporter(
        endpoint=receiver.traces_url,
        compression=Compression(compression) if compression else None)
    assert exporter.export(_two_spans()) is SpanExportResult.SUCCESS
    child, parent = receiver.wait_for(count=2)
    assert (child.name, parent.name) == ("child", "parent")
    assert child.parent_span_id == parent.span_id
    assert child.attributes == {"db.system": "redis"}
    assert parent.resource["service.name"] == "zaqar"
    exporter.shutdown()
    assert exporter.export(_two_spans()) is SpanExportResult.FAILURE


def test_the_exporter_reports_a_refusing_collector(receiver: OTLPReceiver) -> None:
    receiver.mode = "error"
    exporter = OTLPSpanExporter(endpoint=receiver.traces_url, timeout=2)
    assert exporter.export(_two_spans()) is SpanExportResult.FAILURE


def test_an_oversized_batch_is_split_and_a_span_too_large_alone_is_refused(
        receiver: OTLPReceiver) -> None:
    """Beyond max_request_size the batch is split; a span too large on its
    own is refused (counted for the processor's drop line), not sent."""
    exporter = OTLPSpanExporter(endpoint=receiver.traces_url, max_request_size=64)
    # Not a failure to retry: the processor counts them as dropped.
    assert exporter.export(_two_spans()) is SpanExportResult.SUCCESS
    assert exporter.take_refused() == 2
    assert exporter.take_refused() == 0
    assert receiver.spans() == []


@pytest.mark.parametrize("early", [False, True], ids=["spans", "encoded at end"])
def test_the_grpc_exporter_sends_what_a_collector_decodes(early: bool) -> None:
    from zaqar_otel._sdk.fast.otlp_grpc import OTLPSpanExporter as GrpcExporter

    with OTLPReceiver(protocol="grpc") as receiver:
        exporter = GrpcExporter(endpoint=receiver.endpoint, insecure=True)
        assert exporter.early_encoder is not None
        spans: list[Any] = _two_spans()
        if early:
            spans = [exporter.early_encoder.encoded(s) for s in spans]
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        child, parent = receiver.wait_for(count=2)
        exporter.shutdown()
    assert (child.name, parent.name) == ("child", "parent")
    assert child.parent_span_id == parent.span_id
    assert child.attributes == {"db.system": "redis"}


def test_an_unexportable_attribute_is_dropped_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}).get_tracer("t")
    for _ in range(5):
        tracer.start_span("s", attributes={"huge": 1 << 70, "ok": 1}).end()
    encoder = SpanEncoder()
    with caplog.at_level(logging.WARNING, logger="zaqar_otel._sdk.fast.otlp_encoding"):
        spans = decode_request(encoder.encode(kept.get_finished_spans()))
        encoder.encode(kept.get_finished_spans())
    assert [s.attributes for s in spans] == [{"ok": 1}] * 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "attribute huge is not exported" in lines[0], lines


def test_zero_and_minus_zero_keep_their_sign() -> None:
    """0.0 == -0.0: a memo keyed on the value would send one for the other."""
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {}).get_tracer("t")
    for value in (0.0, -0.0, 0.0, -0.0):
        tracer.start_span("s", attributes={"ratio": value}).end()
    encoder = SpanEncoder()
    spans = kept.get_finished_spans()
    encoder.encode(spans)  # the memo as a long-running exporter has it
    body = encoder.encode(spans)
    assert body == encode_spans(spans).SerializePartialToString()
    signs = [math.copysign(1, s.attributes["ratio"]) for s in decode_request(body)]
    assert signs == [1, -1, 1, -1]


def _sized_spans(count: int, size: int) -> list[ReadableSpan]:
    kept = InMemorySpanExporter()
    tracer = _provider(kept, {"service.name": "zaqar"}).get_tracer("t")
    for i in range(count):
        tracer.start_span(f"s{i}", attributes={"v": "x" * size}).end()
    return list(kept.get_finished_spans())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_request_the_collector_refuses_as_too_large_is_split(protocol: str) -> None:
    """A receiver that refuses requests over 8 KiB (413; gRPC
    RESOURCE_EXHAUSTED): 20 spans of 1 KB arrive, in several requests; a
    span of 16 KB alone is refused and counted, not retried."""
    from zaqar_otel._sdk.fast.otlp_grpc import OTLPSpanExporter as GrpcExporter

    with OTLPReceiver(protocol, max_request_bytes=8192) as receiver:  # type: ignore[arg-type]
        exporter: Any = (OTLPSpanExporter(endpoint=receiver.traces_url)
                         if protocol == "http" else
                         GrpcExporter(endpoint=receiver.endpoint, insecure=True,
                                      timeout=5))
        spans = _sized_spans(20, 1000)
        pieces = [exporter.early_encoder.encoded(s) for s in spans]
        assert exporter.export(pieces) is SpanExportResult.SUCCESS
        assert exporter.take_refused() == 0
        assert sorted(s.name for s in receiver.wait_for(count=20)) == sorted(
            s.name for s in spans)
        huge = _sized_spans(1, 16000)
        assert exporter.export([*huge, *spans[:2]]) is SpanExportResult.SUCCESS
        assert exporter.take_refused() == 1
        exporter.shutdown()
    assert len(receiver.spans()) == 22  # the two beside the refused one too
