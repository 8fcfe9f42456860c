"""How an API request enters a trace, the same for WSGI and websocket.

``Entry.begin`` takes the caller's extracted context, asks ``sampling`` for
the decision, and for a traced request starts the SERVER span (a root of the
caller's OSProfiler trace, or a child of the caller), makes it current, and
initializes OSProfiler's per-thread profiler with ids that map back to it,
so Zaqar's ``trace_cls`` trace points nest under it and outgoing OSProfiler
headers continue the same trace. Set-up builds one per process::

    entry = Entry(tracer, hmac_key="KEY")
    span, token = entry.begin(extracted, describe)
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Token
from dataclasses import dataclass
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from osprofiler import profiler

from zaqar_otel import patching, sampling, tracepoints
from zaqar_otel.propagation import idmap, propagator
from zaqar_otel.propagation.codec import TraceInfo

#: Why a request is traced: "osprofiler" (a verified signature),
#: "traceparent" (honoured sampled flag) or "sample_ratio"; a collector's
#: tail sampling can keep every trace someone asked for.
ORIGIN_ATTRIBUTE = "zaqar_otel.trace_origin"

#: What ``Entry.begin`` returns: the span (None untraced), the token to detach.
Begun = tuple[trace.Span | None, Token[Context]]


@dataclass(frozen=True)
class Entry:
    """How an API request enters a trace, WSGI or websocket.

    :param tracer: where the SERVER span is started.
    :param hmac_key: key OSProfiler signs with when the request brought
        none (a W3C or sampled request).
    :param sample_ratio: see ``[opentelemetry] sample_ratio``.
    :param honor_w3c_sampled: see ``[opentelemetry] honor_w3c_sampled``.
    """

    tracer: trace.Tracer
    hmac_key: str
    sample_ratio: float = 0.0
    honor_w3c_sampled: bool = False

    def __post_init__(self) -> None:
        # Roots of OSProfiler traces take the caller's base_id as trace id.
        tracepoints.use_osprofiler_ids(self.tracer)

    def begin(
        self,
        extracted: context.Context,
        describe: Callable[[], tuple[str, dict[str, Any]]],
    ) -> tuple[trace.Span | None, Token[Context]]:
        """The entry of one request.

        Decides from the ``extracted`` caller context; a traced request gets a
        SERVER span named and described by ``describe()`` (called only then),
        made current, and OSProfiler's profiler with ids that map back to it.
        Returns the span (None when untraced) and the token to detach at the
        end.
        """
        if profiler.get() is not None:
            # Left over on this thread by a request that did not clean up.
            profiler.clean()
        decision = sampling.decide(extracted, self.sample_ratio,
                                   self.honor_w3c_sampled)
        if not decision.sampled:
            # The unsampled parent keeps spans below this request from starting
            # traces of their own; instrumentors skip them at all.
            return None, context.attach(sampling.untraced(decision.parent))
        name, attributes = describe()
        attributes[ORIGIN_ATTRIBUTE] = decision.origin
        if decision.root_trace_id is not None:
            span = tracepoints.start_root(
                self.tracer, decision.root_trace_id, name,
                context=decision.parent, kind=SpanKind.SERVER, attributes=attributes)
        else:
            span = self.tracer.start_span(name, context=decision.parent,
                                          kind=SpanKind.SERVER, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span, decision.parent))
        _init_profiler(span, propagator.verified_trace_info(extracted), self.hmac_key)
        return span, token


def _init_profiler(span: trace.Span, inbound: TraceInfo | None,
                   hmac_key: str) -> None:
    """OSProfiler's profiler for this thread, with ids that map to ``span``.

    Zaqar's trace points then nest under it, and outgoing OSProfiler headers
    continue the caller's trace with its exact base_id.
    """
    own = span.get_span_context()
    same_trace = inbound is not None and inbound.trace_id == own.trace_id
    base_id = (inbound.base_id if same_trace and inbound else
               idmap.base_id_from_trace_id(own.trace_id))
    profiler.init(
        inbound.hmac_key if inbound else hmac_key,
        base_id=base_id,
        parent_id=idmap.uuid_from_span_id(own.trace_id, own.span_id))


def end_span(span: trace.Span, log_failure: patching.FailureLog) -> None:
    """``span.end()`` that never raises into the request."""
    # span.end() runs the span processors, which the SDK does not guard.
    try:
        span.end()
    except Exception:
        log_failure()
