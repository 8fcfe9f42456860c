"""An SDK laid out differently from 1.45: the fast paths turn themselves off
with one log line, and spans still reach a real collector through the SDK's
own code, never counted as dropped."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc import exporter as grpc_mixin
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_sdk
from opentelemetry.exporter.otlp.proto.http import _common
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from zaqar_otel import sampling, settings
from zaqar_otel._sdk import fast, layout
from zaqar_otel._sdk.fast import otlp_encoding
from zaqar_otel._sdk.fast.otlp_grpc import OTLPSpanExporter as GrpcExporter
from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter as HttpExporter
from zaqar_otel._sdk.fast.processor import CountingBatchSpanProcessor
from zaqar_otel.demo.receiver import OTLPReceiver

LOGGER = layout.__name__


@pytest.fixture
def our_encoder_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if zaqar-otel's encoder is called: the SDK's must be."""
    def refuse(self: object, spans: object) -> bytes:
        raise AssertionError("zaqar-otel's encoder ran on a mismatched SDK")

    monkeypatch.setattr(otlp_encoding.SpanEncoder, "encode", refuse)


def _export_two(span_processor: CountingBatchSpanProcessor) -> None:
    provider = TracerProvider()
    provider.add_span_processor(span_processor)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER):
        tracer.start_span("child").end()
    provider.shutdown()


def test_the_known_layout_is_found() -> None:
    """The sanity half: on this SDK every look-up succeeds."""
    exporter = HttpExporter(endpoint="http://127.0.0.1:9/v1/traces")
    assert layout.http_parts(exporter) is not None
    assert layout.grpc_translates(GrpcExporter)
    assert layout.exporter_endpoint(exporter) == "http://127.0.0.1:9/v1/traces"


def test_http_export_without_the_sdk_helper_goes_through_the_sdk(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        receiver: OTLPReceiver, our_encoder_unused: None) -> None:
    # As if the SDK had moved its size check: its own export still has it
    # (imported by name), zaqar-otel's look-up does not find it.
    monkeypatch.delattr(_common, "_is_request_too_large")
    conf = settings.Settings(enabled=True, hmac_keys=("k",),
                             exporter_args={"endpoint": receiver.traces_url})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        span_processor = fast.span_processor(conf)
    assert span_processor is not None
    assert sum("laid out differently" in r.getMessage() for r in caplog.records) == 1
    assert "OTLP/HTTP export encodes with the SDK's encoder" in caplog.text
    _export_two(span_processor)
    child, parent = receiver.wait_for(count=2)
    assert child.parent_span_id == parent.span_id
    assert span_processor.drops.total == 0


def test_http_exporter_missing_a_private_part_is_detected() -> None:
    exporter = HttpExporter(endpoint="http://127.0.0.1:9/v1/traces")
    del exporter._client
    assert layout.http_parts(exporter) is None


def test_grpc_export_without_translate_data_uses_the_sdk_encoder(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        our_encoder_unused: None) -> None:
    for cls in (grpc_sdk.OTLPSpanExporter, grpc_mixin.OTLPExporterMixin):
        monkeypatch.delattr(cls, "_translate_data")
    with OTLPReceiver(protocol="grpc") as receiver:
        conf = settings.Settings(
            enabled=True, hmac_keys=("k",), exporter="otlp_grpc",
            exporter_args={"endpoint": receiver.endpoint, "insecure": True})
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            span_processor = fast.span_processor(conf)
        assert span_processor is not None
        assert "OTLP/gRPC export encodes with the SDK's encoder" in caplog.text
        _export_two(span_processor)
        child, parent = receiver.wait_for(count=2)
    assert child.parent_span_id == parent.span_id
    assert span_processor.drops.total == 0


def test_a_processor_without_the_known_queue_counts_nothing_wrongly(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        receiver: OTLPReceiver) -> None:
    monkeypatch.setattr(layout, "batch_queue", lambda processor: None)
    conf = settings.Settings(enabled=True, hmac_keys=("k",),
                             exporter_args={"endpoint": receiver.traces_url})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        span_processor = fast.span_processor(conf)
    assert span_processor is not None and not span_processor.counts_full_queue
    assert "full queue" in caplog.text
    _export_two(span_processor)
    assert len(receiver.wait_for(count=2)) == 2
    assert span_processor.drops.total == 0


def test_a_processor_whose_on_end_is_not_known_ends_spans_its_own_way(
        monkeypatch: pytest.MonkeyPatch, receiver: OTLPReceiver) -> None:
    conf = settings.Settings(enabled=True, hmac_keys=("k",),
                             exporter_args={"endpoint": receiver.traces_url})
    known = fast.span_processor(conf)
    assert known is not None and known._emits
    monkeypatch.setattr(layout, "batch_emit", lambda processor: None)
    span_processor = fast.span_processor(conf)
    assert span_processor is not None and not span_processor._emits
    _export_two(span_processor)
    assert len(receiver.wait_for(count=2)) == 2


@pytest.mark.parametrize(("opt_in", "described"), [
    (None, "http: default, database: default"),
    ("http,database", "http: stable, database: stable"),
    ("http/dup, database/dup", "http: dup, database: dup"),
    ("database", "http: default, database: stable"),
    ("http,http/dup,database/dup", "http: dup, database: dup"),
    ("nonsense", "http: default, database: default"),
])
def test_conventions_are_the_instrumentations_modes(
        monkeypatch: pytest.MonkeyPatch, opt_in: str | None, described: str) -> None:
    """Read through the contrib's own _semconv (its parsing, its precedence
    of /dup), with its schema URL."""
    from opentelemetry.instrumentation import _semconv

    stability = _semconv._OpenTelemetrySemanticConventionStability
    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(stability, "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING", {})
    if opt_in is None:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    else:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    found = layout.conventions()
    assert found.describe() == described
    http = stability._get_opentelemetry_stability_opt_in_mode(
        _semconv._OpenTelemetryStabilitySignalType.HTTP)
    assert found.http_mode is http
    assert found.schema_url == _semconv._get_schema_url(http)


def test_without_the_contribs_semconv_module_the_old_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    from zaqar_otel.entry import http_attributes, wsgi_middleware
    from zaqar_otel.entry.lifecycle import Entry

    # A contrib whose private module no longer has what is read:
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation._semconv",
                        types.ModuleType("_semconv"))
    found = layout.conventions()
    assert found is layout.OLD_CONVENTIONS and found.http_mode is None
    assert layout.stable_conventions() is layout.STABLE_CONVENTIONS
    monkeypatch.undo()
    # Such a layout's server spans: the wsgi instrumentation's own default
    # names, computed for each request.
    kept = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampling.request_sampler(1.0))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    app = wsgi_middleware.TracingMiddleware(
        lambda environ, start: (start("200 OK", []), [b"ok"])[1],
        Entry(provider.get_tracer("t"), "key", sample_ratio=1.0),
        lambda method, path: "/v2/queues",
        http=http_attributes.HttpAttributes(found))
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v2/queues",
               "RAW_URI": "/v2/queues?secret=1", "QUERY_STRING": "secret=1",
               "wsgi.url_scheme": "http", "SERVER_NAME": "z", "SERVER_PORT": "80"}
    assert list(app(environ, lambda *args: None)) == [b"ok"]
    (span,) = kept.get_finished_spans()
    assert span.name == "GET /v2/queues" and span.kind is SpanKind.SERVER
    assert span.attributes["http.method"] == "GET"  # the default (old) names
    assert span.attributes["http.target"] == "/v2/queues"  # no query
    assert "http.request.method" not in span.attributes


def test_a_resource_without_the_known_slot_keeps_working_after_a_fork(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from zaqar_otel._sdk import resource

    monkeypatch.setattr(layout, "resource_attributes_replaceable",
                        lambda r: False)
    made = resource.for_process("zaqar")
    before = made.attributes[resource.SERVICE_INSTANCE_ID]
    monkeypatch.setattr(made, "_pid", -1)  # as seen from a forked worker
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert made.attributes[resource.SERVICE_INSTANCE_ID] == before
        hash(made)
    assert caplog.text.count("keeps its parent's service.instance.id") == 1


def test_the_bridge_names_the_propagator_its_entry_point_loads() -> None:
    from importlib.metadata import EntryPoint

    from zaqar_otel import OSProfilerPropagator

    old = EntryPoint(name="osprofiler", value="zaqar_otel.bridge:OSProfilerPropagator",
                     group="opentelemetry_propagator")
    assert old.load() is OSProfilerPropagator


def test_another_runtime_context_reads_the_current_span_through_the_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import context as context_api
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    assert layout.current_context_slot() is not None

    class OwnRuntime(ContextVarsRuntimeContext):
        """A runtime context of a process's own (OTEL_PYTHON_CONTEXT)."""

    monkeypatch.setattr(context_api, "_RUNTIME_CONTEXT", OwnRuntime())
    assert layout.current_context_slot() is None


def test_the_current_span_reader_agrees_with_the_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import context as context_api
    from opentelemetry import trace as trace_api
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    span = trace_api.NonRecordingSpan(trace_api.SpanContext(1, 2, False))
    slot = layout.current_context_slot()
    assert slot is not None
    reader = layout.current_span_reader()
    assert reader() is trace_api.INVALID_SPAN
    token = context_api.attach(trace_api.set_span_in_context(span))
    try:
        assert reader() is span is trace_api.get_current_span()
    finally:
        context_api.detach(token)
    token = context_api.attach(context_api.set_value(slot[1], "not a span"))
    try:  # what the API says of a value that is not a span
        assert reader() is trace_api.get_current_span() is trace_api.INVALID_SPAN
    finally:
        context_api.detach(token)

    class OwnRuntime(ContextVarsRuntimeContext):
        """A runtime context of a process's own (OTEL_PYTHON_CONTEXT)."""

    monkeypatch.setattr(context_api, "_RUNTIME_CONTEXT", OwnRuntime())
    assert layout.current_span_reader() is trace_api.get_current_span


def test_a_span_context_laid_out_otherwise_is_made_by_the_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import opentelemetry.trace as trace_api

    make = layout.local_span_context_maker()
    assert make is not None
    made = make(1, 2, None, None)
    assert made == trace_api.SpanContext(1, 2, False) and made.is_valid
    assert not make(0, 2, None, None).is_valid

    original = trace_api.SpanContext

    class Wider(original):
        """An API whose SpanContext keeps one field more."""

        def __new__(cls, *args: Any, **kwargs: Any) -> Wider:
            base = original.__new__(original, *args, **kwargs)
            return tuple.__new__(cls, (*base, "more"))

    monkeypatch.setattr(trace_api, "SpanContext", Wider)
    assert layout.local_span_context_maker() is None


def test_the_grpc_stub_is_wrapped_where_this_sdk_makes_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """This SDK makes its gRPC stub where ours wraps it (to split refused
    requests); without that method the look-up says so."""
    assert layout.grpc_stub_made_here(GrpcExporter)
    with OTLPReceiver(protocol="grpc") as receiver:
        exporter = GrpcExporter(endpoint=receiver.endpoint, insecure=True)
        assert type(exporter._client).__name__ == "_SplittingStub"
        exporter.shutdown()
    for cls in (GrpcExporter, grpc_sdk.OTLPSpanExporter, grpc_mixin.OTLPExporterMixin):
        if "_initialize_channel_and_stub" in vars(cls):
            monkeypatch.delattr(cls, "_initialize_channel_and_stub")
    assert not layout.grpc_stub_made_here(GrpcExporter)

def test_the_suppression_check_in_one_step_is_the_apis(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``suppression_slot``: the fast read agrees with
    ``is_instrumentation_enabled`` for either key, and a check that reads
    another key (another release) turns it off."""
    from opentelemetry import context as context_api
    from opentelemetry.instrumentation import utils

    slot = layout.suppression_slot()
    assert slot is not None
    variable, keys = slot
    for key in (None, *keys, "another"):
        ctx = context_api.Context()
        if key is not None:
            ctx = context_api.set_value(key, True, ctx)
        token = context_api.attach(ctx)
        try:
            fast = not any(variable.get().get(k) for k in keys)
            assert fast is utils.is_instrumentation_enabled(), key
        finally:
            context_api.detach(token)
    monkeypatch.setattr(utils, "is_instrumentation_enabled",
                        lambda: not context_api.get_value("another"))
    assert layout.suppression_slot() is None


def test_an_untraced_request_calls_past_a_wrapper_and_a_traced_one_through_it(
) -> None:
    """``instrumentors.skip_when_suppressed`` in front of a wrapt wrapper, as
    the Redis instrumentation puts on ``Redis.execute_command``: the same
    result either way; the wrapper runs only when not suppressed; undone."""
    import wrapt
    from opentelemetry import context as context_api

    from zaqar_otel import sampling
    from zaqar_otel.backends import instrumentors

    class Client:
        def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            return (self, args, kwargs)

    class Child(Client):
        pass

    seen: list[Any] = []

    def traced(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        seen.append(instance)
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(Client, "execute_command", traced)
    wrapper = Client.__dict__["execute_command"]
    undo = instrumentors.skip_when_suppressed((Client, "execute_command"))
    assert Client.__dict__["execute_command"] is not wrapper
    client = Child()
    assert client.execute_command("GET", "k", x=1) == (client, ("GET", "k"), {"x": 1})
    assert seen == [client]  # not suppressed: through the wrapper
    token = context_api.attach(sampling.untraced(context_api.Context()))
    try:
        assert client.execute_command("GET", "k") == (client, ("GET", "k"), {})
    finally:
        context_api.detach(token)
    assert seen == [client]  # suppressed: past it
    assert Client.execute_command.__name__ == "execute_command"
    undo()
    assert Client.__dict__["execute_command"] is wrapper


def test_an_on_end_that_hands_spans_elsewhere_is_not_taken_as_emit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """batch_emit is seen on a probe of what BatchSpanProcessor.on_end does,
    not by its text: an on_end that no longer hands a sampled span to emit
    (or hands it an unsampled one) leaves the processor its own on_end."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    conf = settings.Settings(enabled=True, hmac_keys=("k",), exporter="console")
    layout._on_end_emits.cache_clear()
    monkeypatch.setattr(BatchSpanProcessor, "on_end",
                        lambda self, span: self._batch_processor.emit(span))
    assert not layout._on_end_emits()  # the unsampled one emitted too
    layout._on_end_emits.cache_clear()
    monkeypatch.setattr(BatchSpanProcessor, "on_end", lambda self, span: None)
    made = fast.span_processor(conf)
    assert made is not None and not made._emits
    made.shutdown()
    monkeypatch.undo()
    layout._on_end_emits.cache_clear()
    made = fast.span_processor(conf)
    assert made is not None and made._emits
    made.shutdown()


def test_osprofilers_thread_local_is_read_directly_only_when_get_reads_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from osprofiler import profiler

    from zaqar_otel import tracepoints

    tracepoints._profiler_lookup.cache_clear()
    try:
        assert tracepoints._profiler_lookup() is not profiler.get
        tracepoints._profiler_lookup.cache_clear()
        monkeypatch.setattr(profiler, "get", lambda: None)  # keeps it elsewhere
        assert tracepoints._profiler_lookup() is profiler.get
    finally:
        tracepoints._profiler_lookup.cache_clear()


def test_an_export_thread_laid_out_otherwise_runs_on_in_a_uwsgi_master(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        receiver: OTLPReceiver) -> None:
    """In a uwsgi master forking without at-fork hooks, a batch processor
    whose thread is not laid out as known is left running (a warning says
    which uwsgi options avoid a hung worker), and exports as before."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from zaqar_otel.hook import prefork
    from zaqar_otel.hook.state import Running

    known = BatchSpanProcessor(HttpExporter(endpoint=receiver.traces_url))
    assert layout.stop_batch_thread(known, 5.0)  # the sanity half
    assert not known._batch_processor._worker_thread.is_alive()
    known.shutdown()
    processor = BatchSpanProcessor(HttpExporter(endpoint=receiver.traces_url),
                                   schedule_delay_millis=50)
    monkeypatch.setattr(processor._batch_processor, "_at_fork_reinit", None)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    state = Running(settings.Settings(enabled=True), provider=provider,
                    owns_provider=True)
    with caplog.at_level(logging.WARNING):
        assert prefork.stop_threads(state) is False
    assert "set lazy-apps or py-call-uwsgi-fork-hooks" in caplog.text
    assert processor._batch_processor._worker_thread.is_alive()
    provider.get_tracer("t").start_span("after").end()
    assert [s.name for s in receiver.wait_for(count=1)] == ["after"]
    provider.shutdown()


def test_the_current_span_switch_agrees_with_the_api(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``enter`` makes a span current as ``attach(set_span_in_context())``
    does, ``leave`` puts back what was; a token of another context goes to
    the API's ``detach``, which logs it and raises nothing."""
    import contextvars

    from opentelemetry import context as context_api
    from opentelemetry import trace as trace_api
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    enter, leave = layout.current_span_switch()
    assert leave is not context_api.detach  # the one-step pair, on this API
    outer = trace_api.NonRecordingSpan(trace_api.SpanContext(1, 2, False))
    inner = trace_api.NonRecordingSpan(trace_api.SpanContext(1, 3, False))
    before = context_api.get_current()
    token = context_api.attach(context_api.set_value("k", "v"))
    try:
        with_value = context_api.get_current()
        first = enter(outer)
        assert trace_api.get_current_span() is outer
        assert context_api.get_current() == trace_api.set_span_in_context(
            outer, with_value)
        assert context_api.get_value("k") == "v"
        second = enter(inner)
        assert trace_api.get_current_span() is inner
        leave(second)
        assert trace_api.get_current_span() is outer
        leave(first)
        assert context_api.get_current() is with_value
        foreign = contextvars.copy_context().run(enter, inner)
        with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
            leave(foreign)
        assert "Failed to detach context" in caplog.text
        assert context_api.get_current() is with_value
    finally:
        context_api.detach(token)
    assert context_api.get_current() is before

    class OwnRuntime(ContextVarsRuntimeContext):
        """A runtime context of a process's own (OTEL_PYTHON_CONTEXT)."""

    monkeypatch.setattr(context_api, "_RUNTIME_CONTEXT", OwnRuntime())
    stock_enter, stock_leave = layout.current_span_switch.__wrapped__()
    assert stock_leave is context_api.detach
    token = stock_enter(outer)
    assert trace_api.get_current_span() is outer
    stock_leave(token)
    assert trace_api.get_current_span() is trace_api.INVALID_SPAN
