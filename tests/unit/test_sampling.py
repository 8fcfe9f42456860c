"""Who gets traced: sampling.decide and request_sampler with the real SDK."""

from __future__ import annotations

import random
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.sampling import Sampler, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import (
    TraceContextTextMapPropagator,
)

from zaqar_otel.propagation import codec, propagator
from zaqar_otel.sampling import decide, request_sampler, root_decision

KEY = "key"
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


def osprofiler_context(key: str = KEY) -> tuple[Context, str, str]:
    """Context extracted from headers a caller signed with ``key``."""
    base_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    headers = codec.encode(base_id, parent_id, key)
    return propagator.OSProfilerPropagator([KEY]).extract(headers), base_id, parent_id


def traceparent_context(
    sampled: bool, trace_id: int = TRACE_ID, span_id: int = SPAN_ID
) -> Context:
    """Context extracted from an inbound W3C traceparent."""
    flags = "01" if sampled else "00"
    carrier = {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-{flags}"}
    return TraceContextTextMapPropagator().extract(carrier)


def pair(*args: object) -> tuple[Context, bool]:
    """(parent context, sampled) of ``decide(*args)``."""
    decision = decide(*args)  # type: ignore[arg-type]
    return decision.parent, decision.sampled


def parent_of(context: Context) -> trace.SpanContext:
    return trace.get_current_span(context).get_span_context()


def recording_provider(sampler: Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


# -- verified OSProfiler ------------------------------------------------------


def test_verified_osprofiler_is_sampled_even_with_ratio_zero() -> None:
    """`--os-profile KEY` always gets its trace, under the caller's span."""
    ctx, base_id, parent_id = osprofiler_context()
    decided, sampled = pair(ctx, 0.0, False)
    assert sampled
    parent = parent_of(decided)
    assert parent.trace_flags.sampled
    assert parent.trace_id == uuid.UUID(base_id).int
    assert parent.span_id == uuid.UUID(parent_id).int & (2**64 - 1)
    assert propagator.verified_trace_info(decided) is not None


def test_verified_osprofiler_request_spans_are_recorded() -> None:
    """The SERVER span of a signed request is exported in the caller's trace."""
    ctx, base_id, _ = osprofiler_context()
    decided, _ = pair(ctx, 0.0, False)
    provider, exporter = recording_provider(request_sampler(0.0))
    provider.get_tracer("t").start_span("GET /v2/queues", context=decided).end()
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == uuid.UUID(base_id).int
    assert span.parent is not None and span.parent.span_id == parent_of(ctx).span_id


def test_forged_osprofiler_header_is_not_sampled() -> None:
    """A header signed with another key counts as nothing: ratio 0 drops it."""
    ctx, _, _ = osprofiler_context(key="not-the-key")
    assert not parent_of(ctx).is_valid
    _, sampled = pair(ctx, 0.0, False)
    assert not sampled


# -- W3C traceparent ----------------------------------------------------------


def test_sampled_traceparent_alone_does_not_force_tracing() -> None:
    """honor_w3c_sampled = false: an unsigned sampled flag starts nothing."""
    decided, sampled = pair(traceparent_context(sampled=True), 0.0, False)
    assert not sampled
    parent = parent_of(decided)
    assert not parent.trace_flags.sampled
    assert (parent.trace_id, parent.span_id) == (TRACE_ID, SPAN_ID)


def test_unsampled_traceparent_keeps_the_callers_trace_id() -> None:
    """Spans below an untraced request still carry the caller's trace id."""
    decided, _ = pair(traceparent_context(sampled=True), 0.0, False)
    provider, exporter = recording_provider(request_sampler(1.0))
    span = provider.get_tracer("t").start_span("GET", context=decided)
    span.end()
    assert not span.is_recording()
    assert span.get_span_context().trace_id == TRACE_ID
    assert exporter.get_finished_spans() == ()
    # What goes out downstream continues the caller's trace.
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    assert carrier["traceparent"].split("-")[1] == f"{TRACE_ID:032x}"


def test_honored_traceparent_is_sampled() -> None:
    """honor_w3c_sampled = true: a sampled traceparent starts a trace."""
    decided, sampled = pair(traceparent_context(sampled=True), 0.0, True)
    assert sampled
    provider, exporter = recording_provider(request_sampler(0.0))
    provider.get_tracer("t").start_span("GET", context=decided).end()
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None and span.parent.span_id == SPAN_ID


def test_honor_does_not_sample_an_unsampled_traceparent() -> None:
    """honor_w3c_sampled only follows a set flag; it does not invent one."""
    _, sampled = pair(traceparent_context(sampled=False), 0.0, True)
    assert not sampled


def test_ratio_one_samples_a_traceparent_under_the_caller() -> None:
    """sample_ratio = 1 traces every request, keeping the caller as parent."""
    decided, sampled = pair(traceparent_context(sampled=False), 1.0, False)
    assert sampled
    parent = parent_of(decided)
    assert parent.trace_flags.sampled
    assert (parent.trace_id, parent.span_id) == (TRACE_ID, SPAN_ID)


def test_ratio_decision_is_not_steered_by_the_callers_trace_id() -> None:
    """Ids a TraceIdRatioBased sampler always keeps (low 64 bits zero) are
    kept at the ratio like any others: the caller picks the id, not the cost."""
    rng = random.Random(1234)
    ratio = 0.01
    reference = TraceIdRatioBased(ratio)
    chosen = [(rng.getrandbits(64) << 64) | 1 for _ in range(2000)]
    assert all(reference.should_sample(None, t, "x").decision.is_sampled()
               for t in chosen)
    kept = sum(decide(traceparent_context(sampled=False, trace_id=t), ratio,
                      False).sampled for t in chosen)
    assert kept < 60  # expected 20; TraceIdRatioBased would keep all 2000


def test_a_kept_trace_id_replayed_is_drawn_again() -> None:
    """No fixed function of the caller's id decides: one id seen kept and
    sent again is kept at the ratio, not every time."""
    ctx = traceparent_context(sampled=False, trace_id=TRACE_ID)
    outcomes = [decide(ctx, 0.5, False).sampled for _ in range(400)]
    assert 120 < sum(outcomes) < 280


def test_osprofiler_root_caller_gives_a_root_of_its_base_id() -> None:
    """`openstack --os-profile` sends parent_id == base_id and exports no span:
    the request's span is a root of trace UUID(base_id).int, as osprofiler's
    own driver makes it."""
    base_id = str(uuid.uuid4())
    headers = codec.encode(base_id, base_id, KEY)
    ctx = propagator.OSProfilerPropagator([KEY]).extract(headers)
    decision = decide(ctx, 0.0, False)
    assert decision.sampled and decision.origin == "osprofiler"
    assert decision.root_trace_id == uuid.UUID(base_id).int
    assert not parent_of(decision.parent).is_valid
    assert root_decision(decision.parent)
    # The verified header stays in the context, to sign outgoing calls.
    assert propagator.verified_trace_info(decision.parent).base_id == base_id


# -- no parent ----------------------------------------------------------------


def test_ratio_one_without_parent_marks_a_root() -> None:
    """A root chosen by the request is recorded even if roots are otherwise 0."""
    decided, sampled = pair(Context(), 1.0, False)
    assert sampled
    assert root_decision(decided)
    assert not parent_of(decided).is_valid
    provider, exporter = recording_provider(request_sampler(0.0))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET", context=decided):
        with tracer.start_as_current_span("redis_message_controller"):
            pass
    assert [s.name for s in exporter.get_finished_spans()] == [
        "redis_message_controller", "GET"]


def test_ratio_zero_without_parent_drops_the_request() -> None:
    """An untraced request's spans are dropped even by an always-on root rule."""
    decided, sampled = pair(Context(), 0.0, False)
    assert not sampled
    assert not root_decision(decided)
    stand_in = parent_of(decided)
    assert stand_in.is_valid and not stand_in.trace_flags.sampled
    provider, exporter = recording_provider(request_sampler(1.0))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET", context=decided) as server:
        with tracer.start_as_current_span("child") as child:
            assert not server.is_recording() and not child.is_recording()
    assert exporter.get_finished_spans() == ()


def test_no_parent_decisions_differ_per_request() -> None:
    """Without a parent each request rolls once: a ratio of 0.5 mixes."""
    outcomes = {decide(Context(), 0.5, False).sampled for _ in range(200)}
    assert outcomes == {True, False}


# -- request_sampler outside requests -----------------------------------------


@pytest.mark.parametrize(("ratio", "recorded"), [(0.0, False), (1.0, True)])
def test_request_sampler_uses_ratio_for_spans_outside_requests(
    ratio: float, recorded: bool
) -> None:
    """Background work (no request context) is sampled at sample_ratio."""
    provider, exporter = recording_provider(request_sampler(ratio))
    provider.get_tracer("t").start_span("gc").end()
    assert len(exporter.get_finished_spans()) == int(recorded)


def test_request_sampler_ratio_uses_the_trace_id() -> None:
    """Background roots follow TraceIdRatioBased's rule on the trace id."""
    sampler = request_sampler(0.5)
    low, high = 1, (1 << 64) - 1
    assert sampler.should_sample(None, low, "gc").decision.is_sampled()
    assert not sampler.should_sample(None, high, "gc").decision.is_sampled()


def test_request_sampler_follows_a_sampled_local_parent() -> None:
    """Children of a traced span are kept whatever the ratio."""
    provider, exporter = recording_provider(request_sampler(0.0))
    tracer = provider.get_tracer("t")
    decided, _ = pair(Context(), 1.0, False)
    with tracer.start_as_current_span("root", context=decided):
        tracer.start_span("child").end()
    assert len(exporter.get_finished_spans()) == 2
    assert "ZaqarRequestRoot" in request_sampler(0.0).get_description()
