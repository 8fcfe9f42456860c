"""Per-span cost of a traced method: the tracepoint bridge vs plain SDK spans.

One method of a controller-like class, called in a loop:

- unwrapped;
- wrapped by osprofiler's ``profiler.trace_cls(..., hide_args=True)`` (as
  Zaqar wraps its storage controllers) with no profiler on the thread: what
  an untraced request pays for each trace point;
- wrapped by ``trace_cls`` with ``zaqar_otel.tracepoints.Notifier`` as the
  osprofiler notifier (a traced request);
- wrapped by a plain ``tracer.start_as_current_span`` with the same name,
  kind and attributes;
- wrapped by ``trace_cls`` with osprofiler's own OTLP driver
  (``osprofiler.drivers.otlp.OTLP``) as the notifier.

The SDK cases run on a TracerProvider with a BatchSpanProcessor to a no-op
exporter, and again with the SDK's OTLP/HTTP exporter to a receiver in a
child process (osprofiler's driver always builds its own OTLP/HTTP exporter,
so it is measured that way, against the same receiver); the bridge also with
zaqar-otel's OTLP/HTTP exporter (``zaqar_otel._sdk.fast.otlp_http``), as deployed.
Every traced call makes one child span of an open parent. Cases alternate in
rounds; after each timing the processors are flushed, so export work does
not spill into the next case; the receiver's count shows whether spans were dropped.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import trace_exporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind
from oslo_config import cfg
from osprofiler import notifier, profiler
from osprofiler import opts as osprofiler_opts  # noqa: F401 - registers options
from osprofiler.drivers import otlp

from harness.receivers import ReceiverProcess
from zaqar_otel import tracepoints
from zaqar_otel._sdk.fast import otlp_http

KEY = "zaqar-otel-bench-key"
NAME = "redis_message_controller"
ANCHOR = "trace_cls + osprofiler OTLP driver, OTLP/HTTP"


class NoopExporter(SpanExporter):
    """Accepts every batch and does nothing with it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Controller:
    """Stands for a Zaqar storage controller."""

    def post(self, queue: str, messages: list[Any], project: str | None = None,
             client_uuid: str | None = None) -> list[str]:
        return ["id"] * len(messages)


def _trace_cls() -> Controller:
    cls = type("TracedController", (Controller,), {})
    return profiler.trace_cls(NAME, hide_args=True, hide_result=True)(cls)()


def _sdk_wrapped(tracer: trace.Tracer) -> Controller:
    class SpanController(Controller):
        def post(self, *args: Any, **kwargs: Any) -> list[str]:
            with tracer.start_as_current_span(
                    NAME, kind=SpanKind.INTERNAL,
                    attributes={"osprofiler.name": NAME,
                                "code.function.name": "post"}):
                return super().post(*args, **kwargs)

    return SpanController()


def _provider(service: str, exporter: SpanExporter) -> TracerProvider:
    # As zaqar_otel.hook.sdk builds it (not made global: osprofiler's
    # driver sets the global provider itself).
    provider = TracerProvider(resource=Resource({"service.name": service}),
                              id_generator=tracepoints.OSProfilerIdGenerator(),
                              shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class Case:
    """One way of calling ``post``; ``run(n)`` times n calls in its setting."""

    def __init__(self, target: Controller, osprofiler_notifier: Callable[..., Any]
                 | None = None, tracer: trace.Tracer | None = None,
                 provider: Any = None, service: str | None = None) -> None:
        self.target = target
        self.notifier = osprofiler_notifier
        self.tracer = tracer
        self.provider = provider
        self.service = service  # spans arrive at the receiver under this name
        self.calls = 0
        self.spans = 0  # spans this case made: one per call, one per parent

    @contextmanager
    def _setting(self) -> Iterator[None]:
        with ExitStack() as stack:
            if self.tracer is not None:  # the request's span is current
                stack.enter_context(self.tracer.start_as_current_span("request"))
            if self.notifier is not None:
                notifier.set(self.notifier)
                # Not the trace's root: the driver's spans get a parent too.
                profiler.init(KEY, base_id=str(uuid.uuid4()),
                              parent_id=str(uuid.uuid4()))
                stack.callback(profiler.clean)
            yield

    def run(self, number: int) -> tuple[float, float]:
        """(wall µs per call in the calling thread, process CPU µs per call
        including the export of its spans)."""
        post, args = self.target.post, ("queue", [{"body": 1}, {"body": 2}])
        with self._setting():
            cpu0, t0 = time.process_time(), time.perf_counter()
            for _ in range(number):
                post(*args, project="p")
            elapsed = time.perf_counter() - t0
        if self.provider is not None:
            self.provider.force_flush()
        cpu = time.process_time() - cpu0
        self.calls += number
        self.spans += number + (self.tracer is not None)
        return elapsed / number * 1e6, cpu / number * 1e6


def cases(receiver_port: int) -> dict[str, Case]:
    endpoint = f"http://127.0.0.1:{receiver_port}/v1/traces"
    noop = _provider("bench-noop", NoopExporter())
    exported = _provider("bench-notifier", trace_exporter.OTLPSpanExporter(endpoint))
    ours = _provider("bench-ours", otlp_http.OTLPSpanExporter(endpoint=endpoint))
    noop_tracer = noop.get_tracer("zaqar_otel")
    exported_tracer = exported.get_tracer("zaqar_otel")
    ours_tracer = ours.get_tracer("zaqar_otel")
    # osprofiler's driver builds its own TracerProvider, makes it global and
    # exports with OTLP/HTTP to <connection string as http>/v1/traces.
    cfg.CONF.set_override("service_name_prefix", "bench-driver", group="profiler_otlp")
    driver = otlp.OTLP(f"otlp://127.0.0.1:{receiver_port}", project="p",
                       service="s", conf=cfg.CONF)
    driver_provider = trace.get_tracer_provider()
    traced = _trace_cls()
    return {
        "unwrapped": Case(Controller()),
        "trace_cls, no profiler on the thread (untraced request)": Case(traced),
        "trace_cls, no-op notifier (osprofiler's own part)":
            Case(traced, lambda *args, **kwargs: None),
        "plain SDK span, no-op exporter":
            Case(_sdk_wrapped(noop_tracer), tracer=noop_tracer, provider=noop),
        "trace_cls + zaqar_otel Notifier, no-op exporter":
            Case(traced, tracepoints.Notifier(noop_tracer), tracer=noop_tracer,
                 provider=noop),
        "plain SDK span, OTLP/HTTP":
            Case(_sdk_wrapped(exported_tracer), tracer=exported_tracer,
                 provider=exported, service="bench-notifier"),
        "trace_cls + zaqar_otel Notifier, OTLP/HTTP":
            Case(traced, tracepoints.Notifier(exported_tracer), tracer=exported_tracer,
                 provider=exported, service="bench-notifier"),
        "trace_cls + zaqar_otel Notifier, zaqar-otel's OTLP/HTTP exporter":
            Case(traced, tracepoints.Notifier(ours_tracer), tracer=ours_tracer,
                 provider=ours, service="bench-ours"),
        ANCHOR: Case(traced, driver.notify, provider=driver_provider,
                     service="bench-driver-p-s"),
    }


Medians = dict[str, tuple[float, float]]


def measure(rounds: int = 21, number: int = 1000) -> tuple[Medians, str]:
    """Median (wall, CPU) µs per call of each case, and a line on what
    reached the receiver."""
    with ReceiverProcess() as receiver:
        funcs = cases(receiver.port)
        for case in funcs.values():  # warm-up
            case.run(number // 10)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in funcs}
        order = list(funcs)
        for r in range(rounds):
            for name in order[r % len(order):] + order[: r % len(order)]:
                samples[name].append(funcs[name].run(number))
        time.sleep(1.5)  # the receiver counts every 0.5 s
        stats = receiver.stats()
    expected: dict[str, int] = {}
    for case in funcs.values():
        if case.service:
            expected[case.service] = expected.get(case.service, 0) + case.spans
    exported = "; ".join(
        f"{svc}: {stats.get(svc, {}).get('spans', 0)} of {made} spans received"
        for svc, made in expected.items())
    notifier.set(notifier._noop_notifier)
    medians = {name: (statistics.median(w for w, _ in v),
                      statistics.median(c for _, c in v))
               for name, v in samples.items()}
    return medians, exported


def table(medians: Medians) -> str:
    plain, _ = medians["plain SDK span, no-op exporter"]
    anchor, anchor_cpu = medians[ANCHOR]
    rows = ["| case | µs/call (wall, median) | vs plain SDK span (no-op) "
            "| vs osprofiler OTLP driver | CPU µs/call incl. export "
            "| CPU vs osprofiler OTLP driver |",
            "|---|---:|---:|---:|---:|---:|"]
    rows += [f"| {name} | {us:.2f} | {us / plain:.2f}× | {us / anchor:.2f}× "
             f"| {cpu:.2f} | {cpu / anchor_cpu:.2f}× |"
             for name, (us, cpu) in medians.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    medians, exported = measure()
    print(table(medians))
    print("\n" + exported)
