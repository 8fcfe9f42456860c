"""Subscription deliveries (webhooks, mail) as traces linked to their post.

Zaqar's notifier hands each delivery to a thread pool, where it outlives the
request that posted the messages. Each delivery of a traced post becomes its
own trace: a PRODUCER span ``deliver <queue>`` with a span link to the
``send`` operation that triggered it. With ``[profiler] trace_requests`` the
webhook's HTTP call is a child of that span and carries ``traceparent`` to
the subscriber, never signed OSProfiler headers: a subscriber is a third
party, and a signed header would let it make Zaqar trace its requests. The
subscriber's URL is exported as its scheme, host and port only
(``redact.origin``, also the webhook call's ``url.full``)::

    instrument_notifier(tracer, patches)
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind

from zaqar_otel import patching, redact, sampling
from zaqar_otel.messaging import operations
from zaqar_otel.propagation import propagator

# (posting span, subscription) of the delivery being submitted in this thread.
_submitting: contextvars.ContextVar[tuple[trace.SpanContext, dict[str, Any]] | None] = (
    contextvars.ContextVar("zaqar_otel_submitting", default=None))


class _TracingExecutor:
    """Zaqar's executor; submissions of traced posts run in a delivery span."""

    def __init__(self, executor: Any, tracer: trace.Tracer) -> None:
        self._executor = executor
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._executor, name)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        submitting = _submitting.get()
        if submitting is None:
            # A delivery of an untraced post: its webhook call must carry no
            # trace headers (the pool thread is outside the request's
            # suppression, so the requests instrumentor would inject).
            return self._executor.submit(functools.partial(_untraced, fn),
                                         *args, **kwargs)
        producer, subscription = submitting
        return self._executor.submit(
            functools.partial(_deliver, self._tracer, producer, subscription, fn),
            *args, **kwargs)


def _deliver(tracer: trace.Tracer, producer: trace.SpanContext,
             subscription: dict[str, Any], fn: Callable[..., Any],
             *args: Any, **kwargs: Any) -> Any:
    queue = operations.queue_name(subscription.get("source"))
    attributes = {
        "messaging.system": operations.SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "deliver",
        # Scheme, host and port only: Slack, Teams and Discord webhooks keep
        # their secret in the path, others in ;token= or the query; a mailto
        # subscriber is its scheme alone (no address).
        "zaqar.subscriber": redact.origin(str(subscription.get("subscriber", ""))),
    }
    if queue:
        attributes["messaging.destination.name"] = queue
    # A trace of its own (the post's request is long over), sampled because
    # the post was, linked to the post.
    span = tracer.start_span(
        f"deliver {queue}" if queue else "deliver", context=sampling.traced_root(),
        kind=SpanKind.PRODUCER,
        attributes=attributes, links=[trace.Link(producer, {"zaqar.link": "post"})])
    # The subscriber is a third party: traceparent, never a signed header
    # it could replay to make Zaqar trace its own requests.
    token = context.attach(
        propagator.without_signature(trace.set_span_in_context(span)))
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        redact.record_error(span, exc)
        raise
    finally:
        context.detach(token)
        span.end()


def _untraced(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    token = context.attach(sampling.untraced(context.Context()))
    try:
        return fn(*args, **kwargs)
    finally:
        context.detach(token)


def _posting_span() -> trace.SpanContext | None:
    operation = operations.current()
    span = operation.span if operation else trace.get_current_span()
    found = span.get_span_context()
    return found if found.is_valid and found.trace_flags.sampled else None


def instrument_notifier(tracer: trace.Tracer, patches: patching.Patches) -> None:
    """Wrap ``zaqar.notification.notifier.NotifierDriver`` (idempotent)."""
    from zaqar.notification import notifier

    def with_tracing_executor(init: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            init(self, *args, **kwargs)
            self.executor = _TracingExecutor(self.executor, tracer)

        return __init__

    def remembering_the_post(execute: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(execute)
        def _execute(self: Any, s_type: str, subscription: dict[str, Any],
                     *args: Any, **kwargs: Any) -> Any:
            producer = _posting_span()
            if producer is None:
                return execute(self, s_type, subscription, *args, **kwargs)
            token = _submitting.set((producer, subscription))
            try:
                return execute(self, s_type, subscription, *args, **kwargs)
            finally:
                _submitting.reset(token)

        return _execute

    patches.patch(notifier.NotifierDriver, "__init__", with_tracing_executor)
    patches.patch(notifier.NotifierDriver, "_execute", remembering_the_post)
