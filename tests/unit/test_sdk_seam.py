"""zaqar_otel._sdk: one interface, two paths (the fast one and the SDK's
own), chosen by [opentelemetry] fast_path / OTEL_ZAQAR_FAST_PATH; auto
takes the fast path only on a tested SDK release whose spans match."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from zaqar_otel import _sdk, settings
from zaqar_otel._sdk import fast, loggers, stock
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.export.processor import CountingExporter


@pytest.fixture(autouse=True)
def _fresh_check() -> Iterator[None]:
    fast.check.cache_clear()
    yield
    fast.check.cache_clear()


def test_off_is_the_stock_path_and_says_which_setting() -> None:
    option = "[opentelemetry] fast_path"
    for source, why in ((option, f"{option} = off"),
                        ("OTEL_ZAQAR_FAST_PATH", "OTEL_ZAQAR_FAST_PATH=off")):
        loaded = settings.Settings(enabled=True, fast_path="off",
                                   fast_path_source=source)
        assert _sdk.choose(loaded) == _sdk.Path(False, why)
        assert _sdk.choose(loaded).describe() == f"stock ({why})"


def test_auto_takes_the_fast_path_on_this_tested_sdk() -> None:
    path = _sdk.choose(settings.Settings(enabled=True))
    assert path.fast, path.why
    assert "a tested release" in path.why
    assert path.describe().startswith("fast (opentelemetry-sdk 1.45.")


def test_auto_takes_the_stock_path_on_an_untested_release(
        monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"opentelemetry-sdk": "1.46.0", "opentelemetry-api": "1.46.0"}
    monkeypatch.setattr(fast.metadata, "version", versions.__getitem__)
    path = _sdk.choose(settings.Settings(enabled=True))
    assert path == _sdk.Path(False, "opentelemetry-sdk 1.46.0 is not a release "
                                    "the fast path was tested with (1.45.x)")


def test_auto_takes_the_stock_path_when_a_span_differs_from_the_sdks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The behavioural check: a fast path that records one thing otherwise
    than the SDK (here, an event's timestamp) is not taken."""
    from zaqar_otel._sdk.fast import recorder

    real = recorder.Span.add_event

    def off_by_one(self: Any, name: str, attributes: Any = None,
                   timestamp: int | None = None) -> None:
        real(self, name, attributes, None if timestamp is None else timestamp + 1)

    monkeypatch.setattr(recorder.Span, "add_event", off_by_one)
    path = _sdk.choose(settings.Settings(enabled=True))
    assert not path.fast
    assert path.why.endswith("span 'child' differs from the SDK's")


def test_auto_takes_the_stock_path_when_the_encoding_differs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from zaqar_otel._sdk.fast import otlp_encoding

    real = otlp_encoding.SpanEncoder.encode
    monkeypatch.setattr(otlp_encoding.SpanEncoder, "encode",
                        lambda self, spans: real(self, spans) + b"\x00")
    path = _sdk.choose(settings.Settings(enabled=True))
    assert not path.fast
    assert "OTLP encoding" in path.why


def test_the_stock_path_is_the_sdks_own_objects(receiver: OTLPReceiver) -> None:
    conf = settings.Settings(enabled=True, exporter_args={
        "endpoint": receiver.traces_url})
    provider, drops = _sdk.tracer_provider(conf, _sdk.Path(False, "off"))
    assert type(provider) is sdk_trace.TracerProvider
    processors = provider._active_span_processor._span_processors
    assert [type(p) for p in processors] == [stock.GuardedSpanProcessor]
    assert type(processors[0].processor) is BatchSpanProcessor
    assert type(processors[0].processor.span_exporter) is CountingExporter
    assert drops is not None
    provider.shutdown()


def test_the_stock_processors_failures_never_reach_the_request(
        caplog: pytest.LogCaptureFixture) -> None:
    """The SDK's on_end runs inside span.end() and does not catch: a failure
    there is logged once and counted, never raised into the request."""
    from zaqar_otel.export.processor import DropCounter

    class Broken(BatchSpanProcessor):
        def on_end(self, span: Any) -> None:
            raise RuntimeError("broken")

    drops = DropCounter("test")
    broken = Broken(CountingExporter(stock.ConsoleSpanExporter(), drops))
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(stock.GuardedSpanProcessor(broken, drops))
    tracer = provider.get_tracer("t")
    with caplog.at_level(logging.ERROR, logger=stock.LOG.name):
        for _ in range(3):
            tracer.start_span("s").end()
    assert drops.by_type["processor_failed"] == 3
    assert sum("handing a span to the exporter failed" in r.getMessage()
               for r in caplog.records) == 1
    provider.shutdown()


def test_the_fast_path_is_zaqar_otels_recorder() -> None:
    from zaqar_otel._sdk.fast import recorder

    conf = settings.Settings(enabled=True, exporter="none")
    provider, drops = _sdk.tracer_provider(conf, _sdk.Path(True, "checked"))
    assert type(provider) is recorder.TracerProvider and drops is None
    tracer = provider.get_tracer("t")
    assert type(tracer.start_span("s")) is recorder.Span


def _same_calls(provider: sdk_trace.TracerProvider) -> None:
    tracer = provider.get_tracer("zaqar_otel", "1")
    remote = trace.SpanContext(0xABC << 64, 0xDEF, True, trace.TraceFlags(1))
    with tracer.start_as_current_span(
            "request", trace.set_span_in_context(trace.NonRecordingSpan(remote)),
            kind=SpanKind.SERVER, attributes={"http.route": "/v2/queues"}):
        with tracer.start_as_current_span(
                "claim", links=[Link(remote, {"messaging.operation": "receive"})]
                ) as span:
            span.add_event("begin", {"n": 1})
            span.set_attribute("messaging.batch.message_count", 3)
        token = "s3cr3t"
        with pytest.raises(ValueError), tracer.start_as_current_span("fails"):
            raise ValueError(f"url: /hook?token={token}")
        unset = tracer.start_span("status")
        unset.set_status(Status(StatusCode.ERROR, f"GET /?token={token}"))
        unset.end()


def _received(receiver: OTLPReceiver, fast_path: bool) -> list[tuple[Any, ...]]:
    conf = settings.Settings(enabled=True, exporter_args={
        "endpoint": receiver.traces_url}, batch_args={"schedule_delay_millis": 60_000})
    provider, _ = _sdk.tracer_provider(
        conf, _sdk.Path(fast_path, "test"),
        id_generator=stock_ids(), sampler=sdk_trace.sampling.ALWAYS_ON)
    _same_calls(provider)
    assert provider.force_flush()
    provider.shutdown()
    spans = receiver.wait_for(count=4)
    receiver.clear()
    exception_events = [e for s in spans for e in s.events if e[0] == "exception"]
    assert exception_events and all("s3cr3t" not in repr(e) for e in exception_events)
    return sorted((s.name, s.trace_id, s.span_id, s.parent_span_id, s.kind,
                   s.attributes, s.status_code, s.status_message,
                   tuple((name, {k: v for k, v in attributes.items()
                                 if k != "exception.stacktrace"})
                         for name, attributes in s.events), s.links, s.scope)
                  for s in spans)


def stock_ids() -> Any:
    import itertools

    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class Ids(IdGenerator):
        def __init__(self) -> None:
            self.next = itertools.count(1)

        def generate_span_id(self) -> int:
            return next(self.next)

        def generate_trace_id(self) -> int:
            return next(self.next) << 64

    return Ids()


def test_both_paths_export_the_same_spans(receiver: OTLPReceiver) -> None:
    """Names, ids, parents, kinds, attributes, status (its text scrubbed),
    events (the exception's scrubbed), links and scope, as a real receiver
    decodes them, whichever path made them."""
    fast_spans = _received(receiver, fast_path=True)
    assert [s[0] for s in fast_spans] == ["claim", "fails", "request", "status"]
    assert _received(receiver, fast_path=False) == fast_spans


def test_the_stock_exporters_are_the_sdks_and_fast_ones_zaqar_otels() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )

    conf = settings.Settings(enabled=True)
    made = stock.span_exporter(conf)
    assert type(made) is OTLPSpanExporter
    ours = fast.span_exporter(conf)
    assert type(ours) is not OTLPSpanExporter and isinstance(ours, OTLPSpanExporter)
    assert stock.destination(conf) == "http://localhost:4318/v1/traces"


@pytest.mark.parametrize("name", sorted({*loggers.SECRETS, *loggers.DROPS,
                                         loggers.ATTRIBUTES}))
def test_every_sdk_logger_filtered_is_a_module_of_this_sdk(name: str) -> None:
    """A logger is its module's name: a module the SDK renamed would log
    secrets and per-batch drop lines unfiltered, and fails here first."""
    import importlib.util

    assert importlib.util.find_spec(name) is not None, name
