"""zaqar_otel._sdk.fast.recorder's spans against the SDK's: the same operations on a
span of each kind must leave the same span, field by field and byte for byte
through the SDK's OTLP encoder, whatever the limits, values and parents."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import NonRecordingSpan, TraceFlags, TraceState

from zaqar_otel._sdk import events, layout
from zaqar_otel._sdk.attributes import KeptAttributes
from zaqar_otel._sdk.fast import recorder
from zaqar_otel._sdk.fast.otlp_encoding import SpanEncoder


class CountingIds(IdGenerator):
    """The same ids, in the same order, for each provider."""

    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return 0x1000 + self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return 0x5000_0000 + self.n

    def is_trace_id_random(self) -> bool:
        return True


def _pair(limits: dict[str, int | None],
          sampler: Callable[[], sampling.Sampler] | None = None,
          ) -> list[tuple[sdk_trace.TracerProvider, InMemorySpanExporter]]:
    out = []
    for cls in (sdk_trace.TracerProvider, recorder.TracerProvider):
        kept = InMemorySpanExporter()
        provider = cls(resource=Resource({"service.name": "s"}),
                       sampler=sampler() if sampler else
                       sampling.ParentBased(sampling.ALWAYS_ON),
                       id_generator=CountingIds(), span_limits=SpanLimits(**limits),
                       shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(kept))
        out.append((provider, kept))
    return out


# Mostly what Zaqar's spans carry (a few str keys, plain values), so that
# repeats, limits and order are hit; now and then whatever the API accepts.
PLAIN_KEYS = st.sampled_from(["a", "b", "c"])
KEYS = st.one_of(PLAIN_KEYS, PLAIN_KEYS, PLAIN_KEYS, st.sampled_from(["", "k" * 3]),
                 st.integers(0, 2), st.text(max_size=3))
PLAIN = st.one_of(st.text(max_size=8), st.booleans(), st.integers(-3, 3),
                  st.floats(allow_nan=False))
OTHER = st.one_of(st.integers(-(1 << 70), 1 << 70), st.none(), st.binary(max_size=3),
                  st.lists(st.text(max_size=4), max_size=3),
                  st.lists(st.integers(-5, 5), max_size=3), st.tuples(st.booleans()),
                  st.builds(object),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
VALUES = st.one_of(PLAIN, PLAIN, PLAIN, OTHER)
ATTRIBUTES = st.one_of(st.dictionaries(PLAIN_KEYS, PLAIN, max_size=3),
                       st.dictionaries(KEYS, VALUES, max_size=5))
SET = st.tuples(st.just("set"), KEYS, VALUES)
# _sdk.events.add: a shared part and an event's own, plain values, no key in
# both (the Redis command events' shape: six shared, a duration of its own).
SHARED = st.dictionaries(st.sampled_from(["s1", "s2", "a"]), PLAIN, max_size=4)
OWN = st.dictionaries(st.sampled_from(["o1", "o2"]), PLAIN, max_size=2)
OPERATIONS = st.lists(st.one_of(
    SET, SET, SET, SET,
    st.tuples(st.just("set_many"), ATTRIBUTES),
    st.tuples(st.just("event"), st.text(max_size=5), ATTRIBUTES,
              st.integers(1, 1 << 60)),
    st.tuples(st.just("link"), st.integers(0, 3), ATTRIBUTES),
    st.tuples(st.just("shared"), st.text(max_size=5), SHARED, OWN,
              st.integers(1, 1 << 60)),
    st.tuples(st.just("status"), st.sampled_from(list(StatusCode)),
              st.sampled_from([None, "boom"]), st.booleans()),
    st.tuples(st.just("rename"), st.text(max_size=5)),
    st.tuples(st.just("exception"), st.integers(1, 1 << 60)),
), max_size=12)
LIMITS = st.fixed_dictionaries({}, optional={
    "max_span_attributes": st.integers(0, 4),
    "max_span_attribute_length": st.integers(0, 5),
    "max_events": st.integers(0, 2),
    "max_links": st.integers(0, 2),
    "max_attributes": st.integers(0, 3),
    "max_attribute_length": st.integers(0, 5),
})
PARENTS = st.sampled_from([None, "local", "remote", "local-off", "remote-off",
                           "random", "state"])


def _parent_context(parent: str | None) -> Any:
    if parent is None:
        return None
    flags = TraceFlags(0 if parent.endswith("-off") else 1)
    if parent == "random":
        flags = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
    state = TraceState([("vendor", "v1")]) if parent == "state" else None
    sc = SpanContext(0xABC, 0xDEF, parent.startswith("remote"), flags, state)
    return trace.set_span_in_context(NonRecordingSpan(sc))


def _apply(span: trace.Span, operations: list[tuple[Any, ...]], end: bool) -> None:
    for op, *args in operations:
        if op == "set":
            span.set_attribute(*args)
        elif op == "set_many":
            span.set_attributes(*args)
        elif op == "event":
            name, attributes, timestamp = args
            span.add_event(name, attributes, timestamp)
        elif op == "shared":
            name, shared, own, timestamp = args
            events.add(span, name, timestamp, events.Shared(shared.items()),
                       tuple(own.items()))
        elif op == "link":
            n, attributes = args
            span.add_link(SpanContext(n, n, False, TraceFlags(1)) if n else
                          SpanContext(0, 0, False), attributes)
        elif op == "status":
            code, description, as_object = args
            if as_object:
                span.set_status(Status(code, description))
            else:
                span.set_status(code, description)
        elif op == "rename":
            span.update_name(*args)
        elif op == "exception":
            try:
                raise ValueError("queue gone")
            except ValueError as exc:
                span.record_exception(exc, {"extra": 1}, timestamp=args[0])
    if end:
        span.end(end_time=1 << 62)


def _fields(span: ReadableSpan) -> dict[str, Any]:
    def attrs(a: Any) -> list[tuple[str, Any]]:
        return list((a or {}).items())

    return {
        "type": isinstance(span, ReadableSpan),
        "name": span.name, "context": span.context, "parent": span.parent,
        "kind": span.kind, "start": span.start_time, "end": span.end_time,
        "attributes": attrs(span.attributes),
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, e.timestamp, attrs(e.attributes), e.dropped_attributes)
                   for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(link.context, attrs(link.attributes), link.dropped_attributes)
                  for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource, "scope": span.instrumentation_scope,
    }


def _case(limits: dict[str, int | None] | None = None,
          start: dict[str, Any] | None = None,
          *operations: tuple[Any, ...]) -> Any:
    return example(limits=limits or {}, parent="local", kind=SpanKind.CLIENT,
                   start_attributes=start or {}, start_links=[],
                   operations=list(operations))


@settings(max_examples=600, deadline=None)
# What the fast paths must get right, every run: a key set again moves last,
# the oldest goes when full, long strings are cut, odd values clean.
@_case(None, None, ("set", "a", 1), ("set", "b", 1), ("set", "a", 2))
@_case({"max_span_attributes": 2}, None, ("set", "a", 1), ("set", "b", 2),
       ("set", "c", 3), ("set", "a", 4))
@_case({"max_span_attributes": 2}, {"a": 1, "b": 2, "c": 3}, ("set", "b", 5))
@_case({"max_span_attribute_length": 2}, None, ("set", "b", "abcdef"),
       ("set_many", {"c": "long", "d": 1}))
@_case({"max_span_attribute_length": 2}, {"a": "xyz"}, ("set", "b", 1))
@_case({"max_span_attributes": 0}, {"a": 1}, ("set", "b", 2))
@_case(None, {"a": [1, 2], "": 1}, ("set", "b", None), ("set", 3, "x"),
       ("set_many", {"c": (True,), "d": "ok"}), ("event", "e", {"x": 1}, 5),
       ("link", 1, {"y": 2}))
# Events: a plain list, then the SDK's BoundedList once one is dropped.
@_case({"max_events": 2}, None, ("event", "e1", {}, 1),
       ("shared", "HGET", {"s1": "HGET ?"}, {"o1": 0.5}, 2),
       ("event", "e3", {"x": 1}, 3))
@_case({"max_events": 0}, None, ("shared", "HGET", {"s1": "HGET ?"}, {"o1": 0.5}, 2))
# Message ids: a list or tuple of str kept plain, as a tuple, each cut.
@_case({"max_span_attribute_length": 2}, {"ids": ["abc", "d"]},
       ("set", "b", ["xyz", "q"]), ("set", "c", ("a", 1)), ("set", "a", []))
# A shared event: its own double from a kept prefix; cut, or over the count.
@_case(None, None, ("shared", "HGET", {"s1": "HGET ?", "a": 1}, {"o1": 0.25}, 7),
       ("shared", "SET", {"s1": "x"}, {"o1": -0.0, "o2": True}, 8))
@_case({"max_attribute_length": 2}, None,
       ("shared", "n", {"s1": "long"}, {"o1": 1.5}, 9),
       ("shared", "n", {"s1": "ab"}, {"o1": "xyz"}, 9))
@_case({"max_attributes": 1}, None,
       ("shared", "n", {"s1": 1, "s2": 2}, {"o1": 0.5}, 9))
@given(limits=LIMITS, parent=PARENTS, kind=st.sampled_from(list(SpanKind)),
       start_attributes=ATTRIBUTES, start_links=st.lists(
           st.tuples(st.integers(0, 3), ATTRIBUTES), max_size=2),
       operations=OPERATIONS)
def test_the_same_operations_make_the_same_span(
        limits: dict[str, int | None], parent: str | None, kind: SpanKind,
        start_attributes: dict[Any, Any], start_links: list[tuple[int, Any]],
        operations: list[tuple[Any, ...]]) -> None:
    spans = []
    logging.disable(logging.CRITICAL)  # the SDK warns of every drop
    try:
        for provider, kept in _pair(limits):
            tracer = provider.get_tracer("t", "1.0", "https://schema",
                                         attributes={"scope": "x"})
            links = [Link(SpanContext(n, n, True, TraceFlags(1)) if n else
                          SpanContext(0, 0, False), a) for n, a in start_links]
            span = tracer.start_span("op", _parent_context(parent), kind,
                                     start_attributes, links, start_time=12345)
            # The same kind of span: recording or not, alike.
            _apply(span, operations, end=True)
            _apply(span, operations[:2], end=False)  # after the end: refused
            spans.append((span, kept.get_finished_spans()))
    finally:
        logging.disable(logging.NOTSET)
    (sdk_span, sdk_kept), (our_span, our_kept) = spans
    assert type(our_span) is (recorder.Span if isinstance(sdk_span, sdk_trace.Span)
                              else type(sdk_span))
    assert not sdk_span.is_recording() and not our_span.is_recording()
    assert sdk_span.get_span_context() == our_span.get_span_context()
    assert len(sdk_kept) == len(our_kept)
    for theirs, ours in zip(sdk_kept, our_kept, strict=True):
        assert _fields(ours) == _fields(theirs)
    if sdk_kept:
        logging.disable(logging.CRITICAL)
        try:
            sdk_bytes = encode_spans(sdk_kept).SerializePartialToString()
            assert encode_spans(our_kept).SerializePartialToString() == sdk_bytes
            assert SpanEncoder().encode(our_kept) == sdk_bytes
            assert SpanEncoder().encode(our_kept) == SpanEncoder().encode(sdk_kept)
        except (ValueError, TypeError, UnicodeEncodeError):
            pass  # a value the SDK's encoder refuses: both refuse it
        finally:
            logging.disable(logging.NOTSET)  # the tests after this one log


@settings(max_examples=300, deadline=None)
@_case({"max_span_attribute_length": 2}, {"a": "xyz", "b": 1}, ("set", "c", 1))
@_case({"max_span_attributes": 1}, {"a": 1, "b": 2})
@_case(None, {"a": "x", "b": True}, ("set", "a", "y"))
@_case(None, {"a": [1, 2]}, ("set_many", {"c": 1}))
@given(limits=LIMITS, parent=st.just("local"), kind=st.just(SpanKind.INTERNAL),
       start_attributes=ATTRIBUTES, start_links=st.just([]), operations=OPERATIONS)
def test_spans_started_with_one_kept_set_are_those_started_with_its_dict(
        limits: dict[str, int | None], parent: str, kind: SpanKind,
        start_attributes: dict[Any, Any], start_links: list[Any],
        operations: list[tuple[Any, ...]]) -> None:
    """A trace point starts every span with one ``KeptAttributes``, checked
    once and its encoded bytes kept: each span is the one the SDK makes
    from the same dict, byte for byte, also the one changed after it
    started and those after it."""
    kept_set = KeptAttributes(start_attributes)
    spans = []
    logging.disable(logging.CRITICAL)
    try:
        for provider, kept in _pair(limits):
            tracer = provider.get_tracer("t")
            given_set = (kept_set if type(provider) is recorder.TracerProvider
                         else dict(start_attributes))
            for changed in (False, True, False):
                span = tracer.start_span("tp", _parent_context(parent), kind,
                                         given_set, start_time=12345)
                _apply(span, operations if changed else [], end=True)
            spans.append(kept.get_finished_spans())
    finally:
        logging.disable(logging.NOTSET)
    sdk_kept, our_kept = spans
    assert [_fields(s) for s in our_kept] == [_fields(s) for s in sdk_kept]
    assert dict(kept_set) == start_attributes  # never changed by a span
    logging.disable(logging.CRITICAL)
    try:
        sdk_bytes = encode_spans(sdk_kept).SerializePartialToString()
        encoder = SpanEncoder()  # one encoder: the kept bytes serve the later spans
        assert encoder.encode(our_kept) == sdk_bytes
        assert encoder.encode(our_kept) == sdk_bytes
    except (ValueError, TypeError, UnicodeEncodeError):
        pass  # a value the SDK's encoder refuses: both refuse it
    finally:
        logging.disable(logging.NOTSET)


def test_a_kept_set_refuses_changes_and_copies_as_a_dict() -> None:
    import copy
    import pickle

    kept_set = KeptAttributes({"a": 1})
    for change in (lambda: kept_set.__setitem__("b", 2), lambda: kept_set.update(b=2),
                   lambda: kept_set.pop("a"), kept_set.clear, kept_set.popitem,
                   lambda: kept_set.setdefault("b", 2),
                   lambda: kept_set.__delitem__("a")):
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert kept_set == {"a": 1}
    for copied in (dict(kept_set), copy.copy(kept_set),
                   pickle.loads(pickle.dumps(kept_set))):
        assert type(copied) is dict and copied == {"a": 1}


class _Decide(sampling.Sampler):
    """Not ParentBased: every decision is asked of the sampler."""

    def __init__(self, decision: sampling.Decision) -> None:
        self.decision = decision
        self.asked = 0

    def should_sample(self, parent_context: Any, trace_id: int, name: str,
                      kind: Any = None, attributes: Any = None, links: Any = None,
                      trace_state: Any = None) -> sampling.SamplingResult:
        self.asked += 1
        return sampling.SamplingResult(self.decision, {"sampler": "said so"},
                                       TraceState([("s", str(self.asked))]))

    def get_description(self) -> str:
        return "decide"


@pytest.mark.parametrize("decision", list(sampling.Decision))
def test_any_other_sampler_is_asked_as_the_sdk_asks_it(
        decision: sampling.Decision) -> None:
    out = []
    for provider, kept in _pair({}, lambda: _Decide(decision)):
        tracer = provider.get_tracer("t")
        parent = tracer.start_span("root", start_time=1)
        child = tracer.start_span("child", trace.set_span_in_context(parent),
                                  attributes={"own": 1}, start_time=2)
        child.end(3)
        parent.end(4)
        out.append((child.get_span_context(), child.is_recording(),
                    [_fields(s) for s in kept.get_finished_spans()],
                    provider.sampler.asked))  # type: ignore[attr-defined]
    assert out[0] == out[1]


def test_processors_get_the_ended_span_and_it_refuses_changes(
        caplog: pytest.LogCaptureFixture) -> None:
    (_, _), (provider, kept) = _pair({})
    tracer = provider.get_tracer("t")
    assert type(tracer) is recorder.Tracer
    span = tracer.start_span("s", attributes={"a": 1})
    assert type(span) is recorder.Span
    span.end()
    (ended,) = kept.get_finished_spans()
    assert ended is span
    with caplog.at_level(logging.WARNING):
        span.set_attribute("b", 2)
        span.set_attributes({"c": 3})
        span.add_event("late")
        span.set_status(StatusCode.ERROR)
        span.end()
    assert dict(span.attributes or {}) == {"a": 1} and span.events == ()
    assert span.status.status_code is StatusCode.UNSET
    assert [r.getMessage() for r in caplog.records] == [
        "Setting attribute on ended span.", "Setting attribute on ended span.",
        "Tried calling _add_event on an ended span.",
        "Tried calling set_status on an ended span.", "Calling end() on an ended span."]


class _Watching(sdk_trace.SpanProcessor):
    """A processor that does something at start and at ending."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.calls.append(f"start {span.name}")

    def _on_ending(self, span: Any) -> None:
        self.calls.append(f"ending {span.name}")

    def on_end(self, span: ReadableSpan) -> None:
        self.calls.append(f"end {span.name}")


def test_every_processor_is_called_as_by_the_sdk() -> None:
    """A lone batch processor is called directly; a second processor, added
    later, and a processor with its own start and ending steps get every
    call they get from the SDK."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = recorder.TracerProvider(shutdown_on_exit=False)
    kept = InMemorySpanExporter()
    batch = BatchSpanProcessor(kept, schedule_delay_millis=600_000)
    provider.add_span_processor(batch)
    processors = provider._active_span_processor
    assert isinstance(processors, recorder.SpanProcessors)
    assert processors.quiet_one is batch
    tracer = provider.get_tracer("t")
    tracer.start_span("one").end()
    watching = _Watching()
    provider.add_span_processor(watching)
    assert processors.quiet_one is None
    tracer.start_span("two").end()
    batch.force_flush()
    assert [s.name for s in kept.get_finished_spans()] == ["one", "two"]
    assert watching.calls == ["start two", "ending two", "end two"]

    alone = recorder.TracerProvider(shutdown_on_exit=False)
    only = _Watching()
    alone.add_span_processor(only)
    assert alone._active_span_processor.quiet_one is None  # type: ignore[attr-defined]
    alone.get_tracer("t").start_span("three").end()
    assert only.calls == ["start three", "ending three", "end three"]
    batch.shutdown()


def test_quiet_processors_are_the_sdks_empty_steps() -> None:
    """A processor whose on_start and _on_ending are the SDK's own (empty
    in the tested releases) is quiet; one that overrides either is not."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class Ending(BatchSpanProcessor):
        def _on_ending(self, span: Any) -> None:
            pass

    assert layout.quiet_processor(BatchSpanProcessor)
    assert layout.quiet_processor(sdk_trace.SpanProcessor)
    assert not layout.quiet_processor(_Watching)
    assert not layout.quiet_processor(Ending)
    assert not layout.quiet_processor(object)


def test_an_sdk_laid_out_otherwise_keeps_its_own_tracers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "_span_layout", [False])
    provider = recorder.TracerProvider(shutdown_on_exit=False)
    assert type(provider.get_tracer("t")) is sdk_trace.Tracer


def test_this_sdk_is_the_layout_recording_was_written_for() -> None:
    """On a new SDK release this fails first: check recorder.Span against
    the SDK's Span.__init__, then update layout.SPAN_FIELDS."""
    assert layout.span_layout_known()
    assert layout.follows_parent(sampling.ParentBased(sampling.ALWAYS_OFF))
    assert not layout.follows_parent(sampling.ParentBased(
        sampling.ALWAYS_ON, local_parent_not_sampled=sampling.ALWAYS_ON))
    assert not layout.follows_parent(sampling.ALWAYS_ON)


def test_an_event_without_attributes_is_the_sdks() -> None:
    """A BEGIN event (no attributes): empty, nothing dropped, and as
    unchangeable as the SDK's, though one empty set serves every event."""
    events = []
    for provider, kept in _pair({"max_event_attributes": 3}):
        for _ in range(2):
            span = provider.get_tracer("t").start_span("s")
            span.add_event("BEGIN", None, 7)
            span.add_event("BEGIN", {}, 8)
            span.end()
        for span in kept.get_finished_spans():
            for event in span.events:
                assert (event.name, dict(event.attributes or {}),
                        event.dropped_attributes) == ("BEGIN", {}, 0)
                with pytest.raises(TypeError):
                    event.attributes["x"] = 1  # type: ignore[index]
        events.append([(e.name, e.timestamp) for s in kept.get_finished_spans()
                       for e in s.events])
    assert events[0] == events[1] == [("BEGIN", 7), ("BEGIN", 8)] * 2


@pytest.mark.parametrize("fast_lookups", [True, False], ids=["fast", "api"])
@pytest.mark.parametrize("parent", ["ours", "local-off", "remote", "remote-off",
                                    "random", "state", "invalid", None])
def test_a_parent_in_the_current_context_is_the_sdks(
        monkeypatch: pytest.MonkeyPatch, fast_lookups: bool,
        parent: str | None) -> None:
    """The parent read from the current context (one step, or the API's
    calls when _sdk.layout does not know its layout) and the span context made
    for the child (one tuple, or SpanContext(...)) are the SDK's."""
    if not fast_lookups:
        monkeypatch.setattr(recorder, "_CURRENT_SPAN", None)
        monkeypatch.setattr(recorder, "_LOCAL_CONTEXT", None)
        monkeypatch.setattr(recorder, "_layout_read", True)
    else:
        recorder._read_layout()
        assert recorder._CURRENT_SPAN is not None
        assert recorder._LOCAL_CONTEXT is not None
    out, parents = [], []
    for provider, kept in _pair({}):
        tracer = provider.get_tracer("t")
        if parent == "ours":
            outer: Any = tracer.start_span("outer", start_time=1)
        elif parent == "invalid":
            outer = trace.INVALID_SPAN
        elif parent is None:
            outer = None
        else:
            outer = trace.get_current_span(_parent_context(parent))
        token = (context_api.attach(trace.set_span_in_context(outer))
                 if outer is not None else None)
        try:
            child = tracer.start_span("child", attributes={"a": 1}, start_time=2)
            grandchild = tracer.start_span(
                "grandchild", trace.set_span_in_context(child), start_time=3)
        finally:
            if token is not None:
                context_api.detach(token)
        grandchild.end(4)
        child.end(5)
        contexts = [s.get_span_context() for s in (child, grandchild)]
        out.append(([(tuple(c), type(c)) for c in contexts],
                    [s.is_recording() for s in (child, grandchild)],
                    [_fields(s) for s in kept.get_finished_spans()]))
        parents.append(outer.get_span_context() if outer is not None else None)
    assert out[0] == out[1]
    finished = out[1][2]
    if parent in ("ours", "remote", "random", "state"):  # sampled: both kept
        assert [f["name"] for f in finished] == ["grandchild", "child"]
        assert finished[1]["parent"] == parents[1]
        assert finished[1]["context"].trace_id == parents[1].trace_id
    elif parent in ("local-off", "remote-off"):
        assert finished == []
    else:  # no parent: the child is a root
        assert finished[1]["parent"] is None


@pytest.mark.parametrize("provider_class", [recorder.TracerProvider,
                                            sdk_trace.TracerProvider],
                         ids=["ours", "the SDK's"])
def test_the_default_length_limit_cuts_every_value(provider_class: type) -> None:
    """zaqar-otel's default span limits (settings) on our provider and on
    the SDK's (another SDK layout, an instrumentor's spans): a 60 KB value,
    at start, set later, in an event, is cut to 8192 characters."""
    from zaqar_otel import settings as zaqar_settings

    limits = zaqar_settings._span_limits(None, zaqar_settings.sdk_numbers({}))
    kept = InMemorySpanExporter()
    provider = provider_class(span_limits=SpanLimits(**limits))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    big = "u" * 60_000
    span = provider.get_tracer("t").start_span("s", attributes={"a": big, "n": 1})
    span.set_attribute("b", big)
    span.set_attributes({"c": big, "d": "short"})
    span.add_event("exception", {"exception.stacktrace": big})
    span.end()
    (done,) = kept.get_finished_spans()
    assert {k: len(str(v)) for k, v in done.attributes.items()} == {
        "a": 8192, "n": 1, "b": 8192, "c": 8192, "d": 5}
    assert len(done.events[0].attributes["exception.stacktrace"]) == 8192


@pytest.mark.parametrize("internal_metrics", ["false", "true"])
def test_the_sdks_span_metrics_count_fast_spans_as_sdk_spans(
        monkeypatch: pytest.MonkeyPatch, internal_metrics: str) -> None:
    """With the SDK's own span metrics on, a fast span is counted live from
    its start to its end as the SDK counts its own; with them off (the
    default), neither kind records anything and a fast span keeps no call."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", internal_metrics)
    live: dict[type, list[int]] = {}
    for cls in (sdk_trace.TracerProvider, recorder.TracerProvider):
        reader = InMemoryMetricReader()
        provider = cls(meter_provider=MeterProvider(metric_readers=[reader]),
                       shutdown_on_exit=False)
        tracer = provider.get_tracer("t")
        readings = []
        for _ in range(2):
            span = tracer.start_span("s")
            readings.append(_live_spans(reader))
            if cls is recorder.TracerProvider and internal_metrics == "false":
                assert span._record_end_metrics is None  # type: ignore[attr-defined]
            span.end()
            readings.append(_live_spans(reader))
        live[cls] = readings
    assert live[recorder.TracerProvider] == live[sdk_trace.TracerProvider]
    assert live[sdk_trace.TracerProvider] == (
        [1, 0, 1, 0] if internal_metrics == "true" else [None] * 4)
    assert layout.quiet_tracer_metrics() is not None


def _live_spans(reader: Any) -> int | None:
    data = reader.get_metrics_data()
    for resource_metrics in (data.resource_metrics if data else ()):
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "otel.sdk.span.live":
                    return sum(p.value for p in metric.data.data_points)
    return None
