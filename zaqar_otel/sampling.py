"""Who gets traced: the trust rules of invariant 3 as one decision per request.

* A verified OSProfiler signature: always traced, under the caller's span.
* An inbound ``traceparent``: always the parent, but its sampled flag starts a
  trace only with ``honor_w3c_sampled``; otherwise ``sample_ratio`` decides,
  from the trace id, so every service using the same ratio agrees.
* Nothing: ``sample_ratio`` decides.

The decision is written into the parent's sampled flag: an untraced request
without a parent gets an unsampled stand-in parent, so whatever parent-based
sampler the TracerProvider has drops every span below it; a traced one gets a
context marker that ``RequestSampler`` reads. Spans below a request follow it
and never roll the dice again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import (
    _SUPPRESS_INSTRUMENTATION_KEY,
    Context,
    create_key,
    get_value,
    set_value,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from zaqar_otel import bridge

_ROOT_DECISION = create_key("zaqar_otel.request_root_sampled")
_IDS = RandomIdGenerator()
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_UNSAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)


def _ratio_hit(trace_id: int, ratio: float) -> bool:
    # TraceIdRatioBased's rule (low 64 bits under a bound): consistent
    # with any other service sampling the same trace id at the same ratio.
    bound = TraceIdRatioBased.get_bound_for_rate(ratio)
    return trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < bound


def decide(
    context: Context, sample_ratio: float, honor_w3c_sampled: bool
) -> tuple[Context, bool]:
    """The request's parent context with the decision written in, and it."""
    parent = trace.get_current_span(context).get_span_context()
    if not parent.is_valid:
        if random.random() < sample_ratio:  # noqa: S311 - sampling, not security
            return set_value(_ROOT_DECISION, True, context), True
        parent = trace.SpanContext(
            _IDS.generate_trace_id(), _IDS.generate_span_id(), is_remote=False)
        sampled = False
    elif bridge.verified_trace_info(context) is not None:
        sampled = True
    elif honor_w3c_sampled and parent.trace_flags.sampled:
        sampled = True
    else:
        sampled = _ratio_hit(parent.trace_id, sample_ratio)
    if sampled != parent.trace_flags.sampled:
        parent = trace.SpanContext(
            parent.trace_id, parent.span_id, is_remote=parent.is_remote,
            trace_flags=_SAMPLED if sampled else _UNSAMPLED,
            trace_state=parent.trace_state)
    return trace.set_span_in_context(trace.NonRecordingSpan(parent), context), sampled


def untraced(parent: Context) -> Context:
    """The context an untraced request runs in: the unsampled parent, and
    instrumentation suppressed, so the database instrumentors skip the
    spans they would start (and drop) for every command and statement."""
    return set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, parent)


def traced_root(context: Context | None = None) -> Context:
    """A parent context for a new trace that must be sampled (a delivery of a
    traced post): no span, the root decision already taken."""
    return set_value(_ROOT_DECISION, True, context or Context())


def root_decision(context: Context | None) -> bool:
    """Whether ``decide`` chose to trace a request that has no parent."""
    return bool(get_value(_ROOT_DECISION, context))


class _RequestRoot(Sampler):
    """Roots: the request's decision, else (work outside requests) the ratio."""

    def __init__(self, sample_ratio: float) -> None:
        self._ratio = TraceIdRatioBased(sample_ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if root_decision(parent_context):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"ZaqarRequestRoot{{{self._ratio.get_description()}}}"


def RequestSampler(sample_ratio: float) -> Sampler:  # noqa: N802 - a factory
    """Parent-based sampler that follows the middleware's decisions."""
    return ParentBased(root=_RequestRoot(sample_ratio))
