"""The fast path: the same spans as the SDK's, for less CPU.

What it is made of (see each module): ``recorder`` (the SDK's
TracerProvider with a leaner span), ``processor`` (the batch processor that
encodes each span as it ends), ``otlp_encoding`` (OTLP protobuf written
directly, byte for byte the SDK encoder's), ``otlp_http`` / ``otlp_grpc``
(the SDK's exporters sending those bytes), and ``layout`` (every private
of the SDK they read, each checked).

They are written against the SDK's private layout, so ``check()`` lets them
run only where they were tested and behave: an ``opentelemetry-sdk`` (and
``-api``) release of ``TESTED`` (what the breadth runs pin), and spans made
at start-up through the fast path equal to the SDK's own made by the same
calls, field by field (name, ids, parent, kind, attributes, events, links,
status, times, resource, scope, dropped counts) and byte for byte through
the SDK's OTLP encoder and ours. Anything else: the stock path::

    usable, why = check()
    provider, drops = tracer_provider(settings, resource=..., sampler=...)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from zaqar_otel import settings as settings_module
from zaqar_otel._sdk import layout, stock
from zaqar_otel.export.processor import DropCounter

#: The ``opentelemetry-sdk`` / ``-api`` releases (major, minor) the fast
#: path was tested with: 1.45.0 to 1.45.2 (tests/breadth pins them).
TESTED = ((1, 45),)
TESTED_TEXT = "1.45.x"
_DISTRIBUTIONS = ("opentelemetry-sdk", "opentelemetry-api")


@functools.cache
def check() -> tuple[bool, str]:
    """Whether the fast path may run here, and why (one phrase): checked
    once per process, on first use."""
    found = {}
    for name in _DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            return False, f"{name} is not installed as a distribution"
        if layout.release(found[name]) not in TESTED:
            return False, (f"{name} {found[name]} is not a release the fast "
                           f"path was tested with ({TESTED_TEXT})")
    try:
        problem = _differs_from_sdk()
    except Exception as exc:  # a probe failing is a difference too
        problem = f"the start-up check raised {type(exc).__name__}"
    sdk = f"opentelemetry-sdk {found['opentelemetry-sdk']}"
    if problem:
        return False, f"{sdk}: {problem}"
    return True, f"{sdk}, a tested release; its spans match the SDK's"


def tracer_provider(conf: settings_module.Settings, **provider_args: Any
                    ) -> tuple[TracerProvider, DropCounter | None]:
    """``recorder.TracerProvider`` with ``span_processor(conf)``; its counts
    (None for ``exporter = none``)."""
    from zaqar_otel._sdk.fast import recorder

    # shutdown_on_exit=False: as the stock path's.
    provider = recorder.TracerProvider(shutdown_on_exit=False, **provider_args)
    processor = span_processor(conf)
    if processor is None:
        return provider, None
    provider.add_span_processor(processor)
    return provider, processor.drops


def span_exporter(conf: settings_module.Settings) -> Any:
    """``stock.span_exporter`` with zaqar-otel's OTLP exporters."""
    return stock.span_exporter(conf, _exporter_classes)


def span_processor(conf: settings_module.Settings) -> Any:
    """The batch processor that encodes spans as they end, feeding
    ``span_exporter(conf)``; None for ``exporter = none``."""
    from zaqar_otel._sdk.fast.processor import CountingBatchSpanProcessor
    from zaqar_otel._sdk.loggers import quiet_drop_lines

    exporter = span_exporter(conf)
    if exporter is None:
        return None
    made = CountingBatchSpanProcessor(
        exporter, DropCounter(stock.destination(conf)),
        max_batch_bytes=conf.max_export_batch_bytes,
        max_queue_bytes=conf.max_queue_bytes, **conf.batch_args)
    quiet_drop_lines(made.counts_full_queue)
    return made


def _exporter_classes() -> tuple[Any, Any]:
    from zaqar_otel._sdk.fast import otlp_grpc, otlp_http

    return otlp_http.OTLPSpanExporter, otlp_grpc.OTLPSpanExporter


# -- the start-up check --------------------------------------------------------


def _differs_from_sdk() -> str | None:
    """What differs between spans made through the fast path and the SDK's
    own, made by the same calls (None: nothing)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk import trace as sdk_trace

    from zaqar_otel._sdk.fast import recorder
    from zaqar_otel._sdk.fast.otlp_encoding import SpanEncoder

    with _quiet(*_PROBE_LOGGERS):  # the limits' lines, which the probe meets
        ours = _probe_spans(recorder.TracerProvider)
        theirs = _probe_spans(sdk_trace.TracerProvider)
    if [s.is_recording() for s in ours[1]] != [s.is_recording() for s in theirs[1]]:
        return "a span is recorded where the SDK's is not, or the reverse"
    if len(ours[0]) != len(theirs[0]):
        return "the fast path ended another number of spans"
    for mine, sdk in zip(ours[0], theirs[0], strict=True):
        if _fields(mine) != _fields(sdk):
            return f"span {sdk.name!r} differs from the SDK's"
    sdk_bytes = encode_spans(theirs[0]).SerializeToString()
    if encode_spans(ours[0]).SerializeToString() != sdk_bytes:
        return "the SDK's encoder reads its spans otherwise"
    if SpanEncoder().encode(ours[0]) != sdk_bytes:
        return "its OTLP encoding differs from the SDK's"
    encoder = SpanEncoder()
    if encoder.encode([encoder.encoded(s) for s in ours[0]]) != sdk_bytes:
        return "its OTLP encoding as spans end differs from the SDK's"
    return None


#: What the SDK logs as the probe meets its limits (a value cut, the oldest
#: attribute dropped, a change of an ended span): not news at start-up.
_PROBE_LOGGERS = ("opentelemetry.attributes", "opentelemetry.sdk.trace")


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    nothing = logging.Filter("\0")  # no logger has this name: drops every record
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(nothing)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(nothing)


def _probe_spans(provider_class: type) -> tuple[list[Any], list[Any]]:
    """The spans a provider of ``provider_class`` ends for a fixed series of
    calls (ids and times fixed), and the spans it started."""
    from opentelemetry import context as context_api
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, id_generator, sampling
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    class Ids(id_generator.IdGenerator):
        def __init__(self) -> None:
            self.next = itertools.count(0x1000)

        def generate_span_id(self) -> int:
            return next(self.next)

        def generate_trace_id(self) -> int:
            return next(self.next) << 64

    exporter = InMemorySpanExporter()
    provider = provider_class(
        resource=Resource({"service.name": "zaqar-otel-check"}),
        sampler=sampling.ParentBased(sampling.TraceIdRatioBased(1.0)),
        id_generator=Ids(), shutdown_on_exit=False,
        span_limits=SpanLimits(max_span_attributes=6, max_events=3, max_links=2,
                               max_attributes=6, max_event_attributes=4,
                               max_link_attributes=4, max_attribute_length=16,
                               max_span_attribute_length=12))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("zaqar_otel.check", "1", schema_url="https://s")
    started = []
    remote = trace.SpanContext(7 << 64, 9, True, trace.TraceFlags(1))
    root = tracer.start_span(
        "root", trace.set_span_in_context(trace.NonRecordingSpan(remote)),
        kind=SpanKind.SERVER, attributes={"a": "x" * 20, "b": 1, "c": True},
        start_time=10)
    started.append(root)
    inside = trace.set_span_in_context(root)
    child = tracer.start_span(
        "child", inside, kind=SpanKind.CLIENT,
        links=[trace.Link(remote, {"k": "v"})], start_time=11)
    started.append(child)
    child.set_attribute("d", 2.5)
    child.set_attributes({"e": "short", "f": ("a", "b")})
    child.add_event("bare", timestamp=12)
    child.add_event("with", {"x": 1, "y": "z" * 20}, timestamp=13)
    for n in range(8):  # beyond the attribute count limit: the oldest dropped
        child.set_attribute(f"n{n}", n)
    child.set_status(Status(StatusCode.ERROR, "went wrong"))
    child.end(end_time=14)
    child.set_attribute("late", 1)  # refused on an ended span, by both
    unsampled = trace.SpanContext(8 << 64, 10, True, trace.TraceFlags(0))
    started.append(tracer.start_span("unsampled", trace.set_span_in_context(
        trace.NonRecordingSpan(unsampled))))
    token = context_api.attach(inside)
    try:
        current = tracer.start_span("current", links=[Link(remote)], start_time=15)
    finally:
        context_api.detach(token)
    started.append(current)
    current.end(end_time=16)
    root.end(end_time=17)
    provider.shutdown()
    return list(exporter.get_finished_spans()), started


def _fields(span: Any) -> tuple[Any, ...]:
    def attributes(found: Any) -> Any:
        return sorted((k, repr(v)) for k, v in (found or {}).items())

    status = span.status
    return (
        span.name, tuple(span.context), span.parent and tuple(span.parent),
        span.kind, attributes(span.attributes), list(span.attributes or {}),
        [(e.name, attributes(e.attributes), e.timestamp) for e in span.events],
        [(tuple(link.context), attributes(link.attributes)) for link in span.links],
        status.status_code, status.description, span.start_time, span.end_time,
        span.dropped_attributes, span.dropped_events, span.dropped_links,
        attributes(span.resource.attributes), span.resource.schema_url,
        span.instrumentation_scope)
