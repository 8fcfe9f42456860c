"""What the cost levers of a traced request (issue 13) must not change."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from zaqar_otel import patching
from zaqar_otel.messaging import operations


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_operation_ids_come_from_what_zaqar_rendered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Traced, metrics off: the ids of a post, a listing and a claim come
    from the objects Zaqar rendered, the body is not parsed again; an answer
    rendered another way is still parsed."""
    import falcon
    import falcon.testing
    from zaqar.transport import utils

    class Messages:
        def on_post(self, req: Any, resp: Any, queue_name: str) -> None:
            resp.text = utils.to_json({"resources": ["/m/1", "/m/2"]})
            resp.status = falcon.HTTP_201

        def on_get(self, req: Any, resp: Any, queue_name: str) -> None:
            resp.text = utils.to_json({"messages": [{"id": "7", "age": 1, "body": {}}]})

    class Claims:
        def on_post(self, req: Any, resp: Any, queue_name: str) -> None:
            # Not through to_json: only the body says which messages.
            resp.text = ('{"messages": [{"id": "c1", "body": {}}, '
                         '{"id": "c2", "body": {}}]}')
            resp.status = falcon.HTTP_201

    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    app = falcon.App(middleware=[operations.MessagingSpans(tracer)])
    app.add_route("/v2/queues/{queue_name}/messages", Messages())
    app.add_route("/v2/queues/{queue_name}/claims", Claims())
    parsed: list[str] = []
    real_loads = operations.json.loads

    def loads(text: str) -> Any:
        parsed.append(text)
        return real_loads(text)

    monkeypatch.setattr(operations.json, "loads", loads)
    operations.capture_rendered()
    server = tracer.start_span("server")
    token = context.attach(trace.set_span_in_context(server))
    try:
        client = falcon.testing.TestClient(app, headers={"X-Project-ID": "p"})
        client.simulate_post("/v2/queues/q/messages")
        client.simulate_get("/v2/queues/q/messages")
        client.simulate_post("/v2/queues/q/claims")
    finally:
        context.detach(token)
        patching.unpatch_all()
    spans = {s.attributes["messaging.operation.name"]: s
             for s in exporter.get_finished_spans()}
    assert spans["post"].attributes["zaqar.message.ids"] == ("1", "2")
    assert spans["list"].attributes["messaging.message.id"] == "7"
    assert spans["claim"].attributes["zaqar.message.ids"] == ("c1", "c2")
    assert len(parsed) == 1 and '"c1"' in parsed[0]  # the claim's body only
