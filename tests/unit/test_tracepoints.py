"""OSProfiler trace points as OTel spans, driven by real osprofiler."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanKind, StatusCode
from osprofiler import notifier, profiler

from zaqar_otel.propagation import codec, idmap
from zaqar_otel.tracepoints import (
    Notifier,
    OSProfilerIdGenerator,
    TracePoints,
    direct_trace,
    use_osprofiler_ids,
)

KEY = "key"
LOW64 = (1 << 64) - 1


@profiler.trace_cls("redis_message_controller", hide_args=True)
class MessageController:
    """Stands for Zaqar's redis MessageController (trace_cls like Zaqar's)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider

    def post(self, body: str) -> str:
        if self.provider is not None:
            # What redis-py's instrumentor does inside the controller call.
            tracer = self.provider.get_tracer("redis-instrumentor")
            with tracer.start_as_current_span("LPUSH", kind=SpanKind.CLIENT):
                pass
        return body

    def list(self, queue: QueueController) -> str:
        return queue.get("q")

    def fail(self) -> None:
        raise ValueError("queue q is gone")


@profiler.trace_cls("redis_queue_controller", hide_args=True)
class QueueController:
    def get(self, name: str) -> str:
        return name


@profiler.trace_cls("restart", hide_args=False, hide_result=False)
class LeakyController:
    """Records args and results in osprofiler's payloads (hide_args=False)."""

    def put(self, body: str, *, meta: str) -> str:
        return body + meta


@profiler.trace_cls("pooling_catalog", hide_args=True)
class Catalog:
    def lookup(self, controller: MessageController, body: str) -> str:
        return controller.post(body)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def payloads() -> list[dict[str, Any]]:
    """What the forward callable (another osprofiler driver) receives."""
    return []


@pytest.fixture
def bridge_notifier(
    provider: TracerProvider, payloads: list[dict[str, Any]]
) -> Iterator[Notifier]:
    """Our Notifier installed as osprofiler's, restored afterwards."""
    previous = notifier.get()
    profiler.clean()
    installed = Notifier(provider.get_tracer("zaqar_otel"), forward=payloads.append)
    notifier.set(installed)
    yield installed
    notifier.set(previous)
    profiler.clean()


def install(provider: TracerProvider, **kwargs: Any) -> Notifier:
    """Replace the fixture's notifier (its finalizer still restores)."""
    installed = Notifier(provider.get_tracer("zaqar_otel"), **kwargs)
    notifier.set(installed)
    return installed


def serve(provider: TracerProvider, call: Callable[[], Any]) -> trace.Span:
    """A request: SERVER span made current, osprofiler inited from its ids."""
    server = provider.get_tracer("middleware").start_span(
        "POST /v2/queues/q/messages", kind=SpanKind.SERVER)
    sc = server.get_span_context()
    try:
        with trace.use_span(server, end_on_exit=True):
            profiler.init(KEY, base_id=idmap.base_id_from_trace_id(sc.trace_id),
                          parent_id=idmap.uuid_from_span_id(sc.trace_id, sc.span_id))
            call()
    finally:
        profiler.clean()
    return server


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def no_trace_point_open(installed: Notifier, exporter: InMemorySpanExporter) -> bool:
    """No trace point span of ``installed`` is left open in this context: a
    stray stop ends none."""
    before = len(exporter.get_finished_spans())
    installed({"name": "stray-stop", "info": {}})
    return len(exporter.get_finished_spans()) == before


def starts(payloads: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Start payloads by trace point name (the name osprofiler sent)."""
    return {p["name"][: -len("-start")]: p for p in payloads
            if p["name"].endswith("-start")}


# -- one request --------------------------------------------------------------


def test_span_names_are_not_truncated(
    provider: TracerProvider, exporter: InMemorySpanExporter, bridge_notifier: Notifier
) -> None:
    """`redis_message_controller`, not osprofiler's `redis_message_controlle`."""
    serve(provider, lambda: (MessageController().post("m"),
                             LeakyController().put("a", meta="b")))
    names = set(by_name(exporter))
    assert {"redis_message_controller", "restart"} <= names


def test_span_carries_the_method_name(
    provider: TracerProvider, exporter: InMemorySpanExporter, bridge_notifier: Notifier
) -> None:
    """code.function.name says which controller method ran."""
    serve(provider, lambda: MessageController().post("m"))
    span = by_name(exporter)["redis_message_controller"]
    function = span.attributes["code.function.name"]
    assert isinstance(function, str) and function.endswith("MessageController.post")
    assert span.attributes["osprofiler.name"] == "redis_message_controller"
    assert span.kind == SpanKind.INTERNAL


def test_instrumentor_span_nests_under_the_trace_point(
    provider: TracerProvider, exporter: InMemorySpanExporter, bridge_notifier: Notifier
) -> None:
    """A redis command issued by the controller is the controller span's child."""
    server = serve(provider, lambda: MessageController(provider).post("m"))
    spans = by_name(exporter)
    controller, command = spans["redis_message_controller"], spans["LPUSH"]
    assert controller.parent is not None
    assert controller.parent.span_id == server.get_span_context().span_id
    assert command.parent is not None
    assert command.parent.span_id == controller.context.span_id
    assert no_trace_point_open(bridge_notifier, exporter)


def test_nested_trace_points_nest(
    provider: TracerProvider, exporter: InMemorySpanExporter, bridge_notifier: Notifier
) -> None:
    """A controller calling another controller gives parent and child spans."""
    serve(provider, lambda: MessageController().list(QueueController()))
    spans = by_name(exporter)
    outer, inner = spans["redis_message_controller"], spans["redis_queue_controller"]
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id


def test_span_ids_are_osprofiler_ids(
    provider: TracerProvider, exporter: InMemorySpanExporter,
    bridge_notifier: Notifier, payloads: list[dict[str, Any]],
) -> None:
    """Span id = low 64 bits of the trace point uuid; trace id = the server's."""
    server = serve(provider, lambda: MessageController(provider).list(
        QueueController()))
    spans, sent = by_name(exporter), starts(payloads)
    assert set(sent) == {"redis_message_controller", "redis_queue_controller"}
    trace_id = server.get_span_context().trace_id
    for name, payload in sent.items():
        span = spans[name]
        assert span.context.span_id == uuid.UUID(payload["trace_id"]).int & LOW64
        assert span.context.trace_id == trace_id
        assert uuid.UUID(payload["base_id"]).int == trace_id
        # The OTel parent is the span OSProfiler names as parent.
        assert span.parent is not None
        assert span.parent.span_id == uuid.UUID(payload["parent_id"]).int & LOW64
    assert len({s.context.span_id for s in spans.values()}) == len(spans)


def test_exception_is_recorded_and_propagates(
    provider: TracerProvider, exporter: InMemorySpanExporter, bridge_notifier: Notifier
) -> None:
    """A failing controller call: ERROR span with an exception event, error raised."""
    with pytest.raises(ValueError, match="queue q is gone"):
        serve(provider, lambda: MessageController().fail())
    span = by_name(exporter)["redis_message_controller"]
    assert span.status.status_code == StatusCode.ERROR
    (event,) = [e for e in span.events if e.name == "exception"]
    assert str(event.attributes["exception.type"]).endswith("ValueError")
    assert event.attributes["exception.message"] == "queue q is gone"
    assert no_trace_point_open(bridge_notifier, exporter)


# -- privacy ------------------------------------------------------------------


def exported_text(span: ReadableSpan) -> str:
    """Everything an exporter would send for this span, as one string."""
    parts = [span.name, repr(dict(span.attributes or {})),
             str(span.status.description)]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes or {}))]
    return "\n".join(parts)


def test_call_args_and_results_never_exported(
    provider: TracerProvider, exporter: InMemorySpanExporter,
    bridge_notifier: Notifier, payloads: list[dict[str, Any]],
) -> None:
    """Message bodies passed to controllers reach neither spans nor forward."""
    body, meta = f"body-{uuid.uuid4()}", f"meta-{uuid.uuid4()}"
    seen: list[dict[str, Any]] = []
    previous = notifier.get()

    def spy(payload: dict[str, Any]) -> None:
        seen.append(payload)
        previous(payload)

    notifier.set(spy)
    result: list[str] = []
    serve(provider, lambda: result.append(LeakyController().put(body, meta=meta)))
    assert result == [body + meta]
    # osprofiler did record them: the test would catch a leak.
    assert body in repr(seen) and meta in repr(seen)
    spans = exporter.get_finished_spans()
    assert any(s.name == "restart" for s in spans)
    for span in spans:
        text = exported_text(span)
        assert body not in text and meta not in text, span.name
    assert body not in repr(payloads) and meta not in repr(payloads)


def test_forward_gets_payloads_without_values(
    provider: TracerProvider, bridge_notifier: Notifier,
    payloads: list[dict[str, Any]],
) -> None:
    """Another osprofiler driver gets every payload, less args/kwargs/result."""
    serve(provider, lambda: LeakyController().put("a", meta="b"))
    names = [p["name"] for p in payloads]
    assert names == ["restart-start", "restart-stop"]
    for payload in payloads:
        function = payload.get("info", {}).get("function", {})
        assert not {"args", "kwargs", "result"} & set(function)
        assert {"base_id", "parent_id", "trace_id"} <= set(payload)
    assert payloads[0]["info"]["function"]["name"].endswith("LeakyController.put")


# -- skipped trace points -----------------------------------------------------


def test_skipped_prefix_makes_no_span_and_children_nest_above(
    provider: TracerProvider, exporter: InMemorySpanExporter,
    bridge_notifier: Notifier, payloads: list[dict[str, Any]],
) -> None:
    """trace_pooling off: no pooling_* span; controller spans nest under server."""
    quiet = install(provider, forward=payloads.append, skip_prefixes=("pooling_",))
    server = serve(provider, lambda: Catalog().lookup(MessageController(provider),
                                                      "m"))
    spans = by_name(exporter)
    assert set(spans) == {"POST /v2/queues/q/messages", "redis_message_controller",
                          "LPUSH"}
    controller = spans["redis_message_controller"]
    assert controller.parent is not None
    assert controller.parent.span_id == server.get_span_context().span_id
    assert spans["LPUSH"].parent is not None
    assert spans["LPUSH"].parent.span_id == controller.context.span_id
    # The forward driver still hears about the skipped trace point.
    assert "pooling_catalog-start" in [p["name"] for p in payloads]
    assert no_trace_point_open(quiet, exporter)


# -- concurrency --------------------------------------------------------------


def test_concurrent_requests_do_not_share_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter, bridge_notifier: Notifier
) -> None:
    """8 requests at once: each ends its own spans and gets its own tree."""
    threads = 8
    barrier = threading.Barrier(threads, timeout=10)
    turns = [threading.Event() for _ in range(threads + 1)]
    servers: dict[int, trace.Span] = {}
    own_claim: dict[int, int] = {}
    ended_at_turn: dict[int, set[int]] = {}
    errors: list[BaseException] = []

    @profiler.trace_cls("redis_claim_controller", hide_args=True)
    class ClaimController:
        def create(self, queue: QueueController, index: int) -> str:
            own_claim[index] = trace.get_current_span().get_span_context().span_id
            barrier.wait()  # all 8 claim spans are open at once
            assert turns[index].wait(timeout=10)  # then leave one by one
            return queue.get("q")

    def call(index: int) -> None:
        ClaimController().create(QueueController(), index)
        ended_at_turn[index] = {s.context.span_id for s in exporter.get_finished_spans()
                                if s.name == "redis_claim_controller"}
        turns[index + 1].set()

    def request(index: int) -> None:
        try:
            servers[index] = serve(provider, lambda: call(index))
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)
            turns[index + 1].set()

    workers = [threading.Thread(target=request, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    turns[0].set()
    for worker in workers:
        worker.join(timeout=30)
    assert not errors
    # When request i returned, exactly the claim spans of requests 0..i had ended.
    for index in range(threads):
        assert ended_at_turn[index] == {own_claim[i] for i in range(index + 1)}
    spans = exporter.get_finished_spans()
    assert len(spans) == 3 * threads
    assert len({s.context.span_id for s in spans}) == len(spans)
    for server in servers.values():
        sc = server.get_span_context()
        mine = {s.name: s for s in spans if s.context.trace_id == sc.trace_id}
        assert set(mine) == {"POST /v2/queues/q/messages", "redis_claim_controller",
                             "redis_queue_controller"}
        claim, queue = mine["redis_claim_controller"], mine["redis_queue_controller"]
        assert claim.parent is not None and claim.parent.span_id == sc.span_id
        assert queue.parent is not None
        assert queue.parent.span_id == claim.context.span_id
        assert claim.start_time <= queue.start_time <= queue.end_time
        assert queue.end_time <= claim.end_time


# -- faults -------------------------------------------------------------------


def test_failing_forward_logs_once_and_spares_the_call(
    provider: TracerProvider, exporter: InMemorySpanExporter,
    bridge_notifier: Notifier, caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken forward driver: one log line, the request's result intact."""

    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("driver down")

    failing = install(provider, forward=broken)
    results: list[str] = []
    with caplog.at_level(logging.ERROR, logger="zaqar_otel.tracepoints"):
        for _ in range(3):
            serve(provider, lambda: results.append(MessageController().post("m")))
    assert results == ["m"] * 3
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("redis_message_controller") == 3
    assert no_trace_point_open(failing, exporter)


def test_unbalanced_stop_is_ignored(
    provider: TracerProvider, exporter: InMemorySpanExporter, bridge_notifier: Notifier
) -> None:
    """A stray stop payload (no matching start) is a no-op, not an error."""
    bridge_notifier({"name": "redis_message_controller-stop", "info": {}})
    assert exporter.get_finished_spans() == ()
    assert no_trace_point_open(bridge_notifier, exporter)


# -- ids ----------------------------------------------------------------------


class CountingIds(IdGenerator):
    """Predictable fallback ids, to see which generator a span used."""

    def __init__(self) -> None:
        self.next = 0

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        return 0xABC


def test_id_generator_falls_back_outside_trace_points() -> None:
    """Ordinary spans get the fallback's ids, not a trace point's."""
    ids = OSProfilerIdGenerator(CountingIds())
    assert [ids.generate_span_id() for _ in range(3)] == [1, 2, 3]
    assert ids.generate_trace_id() == 0xABC


def test_the_default_fallback_draws_as_the_sdks_random_ids(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the SDK's RandomIdGenerator behind it (the default), span ids
    are the draws it would make, from the same random source, a zero
    (invalid) drawn again."""
    import random

    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    ours, sdk = OSProfilerIdGenerator(), RandomIdGenerator()
    random.seed(7)
    expected = [sdk.generate_span_id() for _ in range(5)]
    random.seed(7)
    assert [ours.generate_span_id() for _ in range(5)] == expected
    draws = iter([0, 0, 42])
    monkeypatch.setattr(random, "getrandbits", lambda bits: next(draws))
    ours = OSProfilerIdGenerator()
    assert ours.generate_span_id() == 42


def test_ordinary_spans_keep_random_ids(
    provider: TracerProvider, exporter: InMemorySpanExporter, bridge_notifier: Notifier
) -> None:
    """Spans of the wrapped tracer outside and inside trace points stay unique."""
    tracer = use_osprofiler_ids(provider.get_tracer("zaqar_otel"))
    assert isinstance(tracer.id_generator, OSProfilerIdGenerator)  # type: ignore[attr-defined]

    @profiler.trace_cls("redis_subscription_controller", hide_args=True)
    class SubscriptionController:
        def list(self) -> None:
            tracer.start_span("inside").end()

    serve(provider, lambda: (tracer.start_span("before").end(),
                             SubscriptionController().list(),
                             tracer.start_span("after").end()))
    spans = exporter.get_finished_spans()
    assert len(spans) == 5
    assert len({s.context.span_id for s in spans}) == 5


def test_use_osprofiler_ids_is_idempotent_and_safe() -> None:
    """Wrapping twice keeps one wrapper; non-SDK tracers are left alone."""
    tracer = TracerProvider().get_tracer("t")
    use_osprofiler_ids(tracer)
    first = tracer.id_generator  # type: ignore[attr-defined]
    use_osprofiler_ids(tracer)
    assert tracer.id_generator is first  # type: ignore[attr-defined]
    noop = trace.NoOpTracer()
    assert use_osprofiler_ids(noop) is noop


def test_wrapped_tracer_keeps_the_random_trace_id_flag() -> None:
    """Roots started by the wrapped tracer still say their trace id is random."""
    assert RandomIdGenerator().is_trace_id_random()
    tracer = use_osprofiler_ids(TracerProvider().get_tracer("t"))
    span = tracer.start_span("root")
    assert span.get_span_context().trace_flags.random_trace_id


# -- trace points made directly (no other osprofiler driver) ------------------


@pytest.fixture
def direct(provider: TracerProvider) -> Iterator[TracePoints]:
    """osprofiler's ``trace`` replaced as set-up does; classes decorated
    inside the test get direct wrappers."""
    from zaqar_otel import patching

    points = TracePoints(provider.get_tracer("zaqar_otel"),
                         skip_prefixes=("pooling_",))
    previous = notifier.get()
    profiler.clean()
    patches = patching.Patches()
    patches.patch(profiler, "trace", direct_trace(points))
    seen: list[dict[str, Any]] = []
    notifier.set(seen.append)  # nothing may come through osprofiler's path
    try:
        yield points
    finally:
        patches.undo()
        notifier.set(previous)
        profiler.clean()
    assert seen == [] or points.closed


def _controllers(provider: TracerProvider) -> tuple[Any, Any, Any]:
    class Messages:
        def post(self, body: str) -> str:
            with provider.get_tracer("redis-instrumentor").start_as_current_span(
                    "LPUSH", kind=SpanKind.CLIENT):
                # What an outgoing call made here sends as OSProfiler headers.
                from osprofiler import web
                self.headers = web.get_trace_id_headers()
            return body

        def fail(self) -> None:
            raise ValueError("queue q is gone")

    class Catalog:
        def lookup(self, controller: Any, body: str) -> str:
            return controller.post(body)

    messages = profiler.trace_cls("redis_message_controller")(Messages)()
    catalog = profiler.trace_cls("pooling_catalog")(Catalog)()
    return messages, catalog, Messages


def test_direct_trace_points_make_the_notifiers_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter, direct: TracePoints
) -> None:
    """Same name, kind, attributes and nesting as through the notifier; the
    uuid on osprofiler's stack maps to the span (invariant 1), so headers
    sent from inside name it; a skipped prefix makes no span."""
    messages, catalog, _ = _controllers(provider)
    server = serve(provider, lambda: catalog.lookup(messages, "m"))
    spans = by_name(exporter)
    assert set(spans) == {"POST /v2/queues/q/messages", "redis_message_controller",
                          "LPUSH"}
    controller, command = spans["redis_message_controller"], spans["LPUSH"]
    assert controller.kind == SpanKind.INTERNAL
    assert dict(controller.attributes or {}) == {
        "osprofiler.name": "redis_message_controller",
        "code.function.name": f"{__name__}._controllers.<locals>.Messages.post"}
    assert controller.parent is not None
    assert controller.parent.span_id == server.get_span_context().span_id
    assert command.parent is not None
    assert command.parent.span_id == controller.context.span_id
    trace_id = server.get_span_context().trace_id
    assert controller.context.trace_id == trace_id
    headers = codec.decode(messages.headers["X-Trace-Info"],
                           messages.headers["X-Trace-HMAC"], [KEY])
    assert headers is not None
    assert headers.trace_id == trace_id
    assert headers.span_id == controller.context.span_id
    assert uuid.UUID(headers.parent_id).int & LOW64 == controller.context.span_id


def test_direct_trace_point_records_an_error_as_the_notifier_does(
    provider: TracerProvider, exporter: InMemorySpanExporter, direct: TracePoints
) -> None:
    messages, _, _ = _controllers(provider)
    with pytest.raises(ValueError, match="queue q is gone"):
        serve(provider, messages.fail)
    span = by_name(exporter)["redis_message_controller"]
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "ValueError"  # as osprofiler names it
    (event,) = span.events
    assert dict(event.attributes or {}) == {"exception.type": "ValueError",
                                            "exception.message": "queue q is gone"}
    assert trace.get_current_span() is trace.INVALID_SPAN  # context put back


def test_direct_trace_points_untraced_and_after_close(
    provider: TracerProvider, exporter: InMemorySpanExporter, direct: TracePoints
) -> None:
    """No profiler on the thread: the method alone. Closed (teardown): back
    through osprofiler's wrapper; a second trace is refused as osprofiler
    refuses it."""
    messages, _, cls = _controllers(provider)
    assert messages.post("m") == "m"
    assert [s.name for s in exporter.get_finished_spans()] == ["LPUSH"]
    direct.close()
    seen: list[dict[str, Any]] = []
    notifier.set(seen.append)
    serve(provider, lambda: messages.post("m"))
    assert [p["name"] for p in seen] == ["redis_message_controller-start",
                                         "redis_message_controller-stop"]
    with pytest.raises(ValueError):
        profiler.trace("again", allow_multiple_trace=False)(cls.post)
