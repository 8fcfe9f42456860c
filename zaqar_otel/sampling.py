"""Who gets traced: the trust rules of invariant 3 as one decision per request.

* A verified OSProfiler signature: always traced. Under the caller's span,
  except when the caller is the root of its OSProfiler trace
  (``parent_id == base_id``, what ``openstack --os-profile`` sends): that
  caller exports no span, so the request's span is a root of trace
  ``UUID(base_id).int``, where osprofiler's own OTLP driver puts it.
* An inbound ``traceparent``: always the parent, but its sampled flag starts a
  trace only with ``honor_w3c_sampled``; otherwise ``sample_ratio`` decides.
* Nothing: ``sample_ratio`` decides, by a random draw.

The caller chooses its trace id, so the ratio is never applied to it:
``TraceIdRatioBased`` keeps every id whose low 64 bits are small, so a
client could make every request it sends cost a full trace. Nor is any
fixed function of it used (a keyed hash, say): a client that learns one kept
id (a traced post's webhook delivery shows it) would replay it on every
request. Each request without a verified parent is decided by a random
draw of the server's. The price: requests of one W3C-only trace that reach
several Zaqar workers are each drawn alone, so such a trace may be kept in
part. Whole traces come from signed OSProfiler headers, or from
``honor_w3c_sampled`` where the callers are trusted.

The decision is written into the parent's sampled flag: an untraced request
without a parent gets an unsampled stand-in parent, so whatever parent-based
sampler the TracerProvider has drops every span below it; a traced root gets
a context marker that ``request_sampler``'s sampler reads. Spans below a
request follow it and never roll the dice again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import (
    Context,
    create_key,
    get_value,
    set_value,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision as SdkDecision,
)
from opentelemetry.sdk.trace.sampling import (
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from zaqar_otel._sdk import layout
from zaqar_otel.propagation import propagator

_ROOT_DECISION = create_key("zaqar_otel.request_root_sampled")
_IDS = RandomIdGenerator()
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_UNSAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)

#: ``Decision.origin`` values: why a request is traced.
OSPROFILER, TRACEPARENT, SAMPLE_RATIO = "osprofiler", "traceparent", "sample_ratio"


def _drawn(ratio: float) -> bool:
    return random.random() < ratio  # noqa: S311 - sampling, not security


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's sampling decision.

    :param parent: the context to start the request's span in (the decision
        written into its sampled flag, or the root marker).
    :param sampled: whether the request is traced.
    :param origin: why it is traced (``OSPROFILER``, ``TRACEPARENT``,
        ``SAMPLE_RATIO``), None when it is not.
    :param root_trace_id: the trace id a root span must take (an OSProfiler
        root caller's ``base_id``), else None: the SDK picks it.
    """

    parent: Context
    sampled: bool
    origin: str | None = None
    root_trace_id: int | None = None


# An untraced request without a parent (most of them): one stand-in parent,
# made once, unsampled, and the context it runs in. Its ids are never seen:
# no span below it is exported, log lines name sampled spans only, and
# instrumentation is suppressed under it (no outgoing header carries them).
# Made anew per request, they cost about 20 k instructions a request.
_STAND_IN = trace.SpanContext(_IDS.generate_trace_id(), _IDS.generate_span_id(),
                              is_remote=False)
_NO_PARENT = trace.set_span_in_context(trace.NonRecordingSpan(_STAND_IN), Context())
_NO_PARENT_UNTRACED = layout.suppressed(_NO_PARENT)
_NOT_SAMPLED = Decision(_NO_PARENT, False)


def decide(
    context: Context, sample_ratio: float, honor_w3c_sampled: bool
) -> Decision:
    """The decision for a request whose extracted caller context is ``context``."""
    if not context:
        # Nothing extracted (most untraced requests): no parent, no signature.
        if sample_ratio > 0 and _drawn(sample_ratio):
            return Decision(set_value(_ROOT_DECISION, True, context), True,
                            SAMPLE_RATIO)
        return _NOT_SAMPLED
    parent = trace.get_current_span(context).get_span_context()
    info = propagator.verified_trace_info(context)
    if info is not None and info.parent_id == info.base_id:
        # No span of the caller exists: a root of the caller's trace.
        root = trace.set_span_in_context(trace.INVALID_SPAN, context)
        return Decision(set_value(_ROOT_DECISION, True, root), True, OSPROFILER,
                        info.trace_id)
    if not parent.is_valid:
        if _drawn(sample_ratio):
            return Decision(set_value(_ROOT_DECISION, True, context), True,
                            SAMPLE_RATIO)
        parent = trace.SpanContext(
            _IDS.generate_trace_id(), _IDS.generate_span_id(), is_remote=False)
        sampled, origin = False, None
    elif info is not None:
        sampled, origin = True, OSPROFILER
    elif honor_w3c_sampled and parent.trace_flags.sampled:
        sampled, origin = True, TRACEPARENT
    else:
        sampled = _drawn(sample_ratio)
        origin = SAMPLE_RATIO if sampled else None
    if sampled != parent.trace_flags.sampled:
        parent = trace.SpanContext(
            parent.trace_id, parent.span_id, is_remote=parent.is_remote,
            trace_flags=_SAMPLED if sampled else _UNSAMPLED,
            trace_state=parent.trace_state)
    return Decision(trace.set_span_in_context(trace.NonRecordingSpan(parent), context),
                    sampled, origin)


def untraced(parent: Context) -> Context:
    """The context an untraced request runs in: the unsampled parent, and
    instrumentation suppressed, so the database instrumentors skip the
    spans they would start (and drop) for every command and statement."""
    if parent is _NO_PARENT:
        return _NO_PARENT_UNTRACED  # made once
    return layout.suppressed(parent)


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
            return SamplingResult(SdkDecision.RECORD_AND_SAMPLE, attributes)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"ZaqarRequestRoot{{{self._ratio.get_description()}}}"


def request_sampler(sample_ratio: float) -> Sampler:
    """The SDK's parent-based sampler, its roots following the entry's
    decisions (``decide``), else ``sample_ratio``."""
    return ParentBased(root=_RequestRoot(sample_ratio))
