"""OTLP encoding cost per span: the SDK's encoder vs ``otlp_encoding``.

One batch of 512 spans recorded by the SDK, shaped like a traced request of
the Zaqar mix (server span, trace points, SQL statements, a messaging
operation; their attributes as zaqar-otel and the instrumentors set them).
The cases are alternated in rounds; the table shows the median µs per span
and the ratio to the SDK's encoder::

    python -m bench.encoding
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from zaqar_otel._sdk import resource
from zaqar_otel._sdk.fast.otlp_encoding import SpanEncoder

BATCH = 512
ANCHOR = "SDK encoder (encode_spans + serialize)"
SQL = {"db.system": "sqlite", "db.name": "zaqar.sqlite", "net.peer.name": "",
       "net.peer.port": 0}
# One request: (name, kind, attributes) of each span, innermost first.
REQUEST = (
    ("SELECT zaqar.sqlite", SpanKind.CLIENT,
     {**SQL, "db.statement": "SELECT queues.metadata FROM queues WHERE "
      "queues.project = ? AND queues.name = ?"}),
    ("sqlalchemy_queue_controller", SpanKind.INTERNAL,
     {"code.function.name": "get_metadata", "osprofiler.name": "sqlalchemy_"
      "queue_controller"}),
    ("redis_message_controller", SpanKind.INTERNAL,
     {"code.function.name": "post", "osprofiler.name": "redis_message_controller"}),
    ("send q-1", SpanKind.PRODUCER,
     {"messaging.system": "zaqar", "messaging.operation.type": "send",
      "messaging.operation.name": "send", "messaging.destination.name": "q-1",
      "messaging.batch.message_count": 2, "server.address": "127.0.0.1",
      "server.port": 8888}),
    ("POST /v2/queues/{queue_name}/messages", SpanKind.SERVER,
     {"http.request.method": "POST", "url.scheme": "http",
      "server.address": "127.0.0.1", "server.port": 8888,
      "client.address": "127.0.0.1", "network.protocol.version": "1.1",
      "http.route": "/v2/queues/{queue_name}/messages",
      "zaqar_otel.trace_origin": "osprofiler", "http.response.status_code": 201}),
)


def batch() -> list[ReadableSpan]:
    kept = InMemorySpanExporter()
    # zaqar-otel's resource, as deployed (its hash is computed once).
    provider = TracerProvider(resource=resource.for_process("zaqar"))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("zaqar_otel", "0.1.0")
    while len(kept.get_finished_spans()) < BATCH:
        for name, kind, attributes in REQUEST:
            tracer.start_span(name, kind=kind, attributes=attributes).end()
    return list(kept.get_finished_spans()[:BATCH])


def cases(spans: list[ReadableSpan]) -> dict[str, Callable[[], object]]:
    encoder, no_memo = SpanEncoder(), SpanEncoder(memo_size=0)
    return {
        ANCHOR: lambda: encode_spans(spans).SerializePartialToString(),
        "zaqar_otel SpanEncoder (otlp_http)": lambda: encoder.encode(spans),
        "zaqar_otel SpanEncoder without its attribute memo":
            lambda: no_memo.encode(spans),
        "zaqar_otel SpanEncoder + parse to a message (otlp_grpc)":
            lambda: ExportTraceServiceRequest.FromString(encoder.encode(spans)),
    }


def measure(rounds: int = 15, number: int = 5) -> dict[str, float]:
    """Median µs per span of each case."""
    spans = batch()
    funcs = cases(spans)
    # The same bytes, or the comparison is meaningless.
    reference = funcs[ANCHOR]()
    assert funcs["zaqar_otel SpanEncoder (otlp_http)"]() == reference
    assert funcs["zaqar_otel SpanEncoder without its attribute memo"]() == reference
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, func in funcs.items():
            seconds = timeit.timeit(func, number=number)
            samples[name].append(seconds / number / len(spans) * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


def table(medians: dict[str, float]) -> str:
    anchor = medians[ANCHOR]
    rows = ["| case | µs/span (median) | vs the SDK's encoder |", "|---|---:|---:|"]
    rows += [f"| {name} | {us:.2f} | {us / anchor:.2f}× |"
             for name, us in medians.items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(
        prog="python -m bench.encoding",
        description="OTLP encoding cost per span: the SDK's encoder against "
        "zaqar-otel's, on one batch of 512 spans shaped like the Zaqar mix; "
        "prints the median microseconds per span of each case (a Markdown "
        "table).").parse_args(argv)
    print(table(measure()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
