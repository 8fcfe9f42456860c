"""The pure parts of messaging spans: operations, message ids, links."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from zaqar_otel.messaging import operations

_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)


def _producer(trace_id: int, span_id: int) -> trace.SpanContext:
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=_SAMPLED)


def test_operation_of_names_message_and_claim_routes() -> None:
    assert operations.operation_of("POST", "/v2/queues/{queue_name}/messages") == (
        "send", "post", SpanKind.PRODUCER)
    assert operations.operation_of("DELETE", "/v2/queues/{queue_name}/messages",
                                  pop=True) == ("receive", "pop", SpanKind.CONSUMER)
    assert operations.operation_of("DELETE", "/v2/queues/{queue_name}/messages")[1] == (
        "delete")
    assert operations.operation_of("GET", "/v2/queues") is None
    assert operations.operation_of("GET", None) is None


def test_ids_in_every_body_shape() -> None:
    assert operations.ids_in({"resources": ["/v2/queues/q/messages/a1",
                                           "/v2/queues/q/messages/b2"]}) == ["a1", "b2"]
    assert operations.ids_in({"messages": [{"id": "x"}, {"nope": 1}, "junk"]}) == ["x"]
    assert operations.ids_in({"message_ids": ["w1"]}) == ["w1"]
    assert operations.ids_in({"messages": {"messages": [{"id": "n"}]}}) == ["n"]
    assert operations.ids_in({"id": "one", "body": {}}) == ["one"]
    assert operations.ids_in(["not", "a", "dict"]) == []
    assert operations.ids_in({"id": "no-body"}) == []


def test_one_link_per_producing_span_and_the_cap() -> None:
    span = TracerProvider().get_tracer("t").start_span("receive q")
    operation = operations.Operation(span)
    post = _producer(1, 10)
    operation.add_links([post, post, post])  # three messages of one post
    operation.add_links([post, _producer(1, 11)])
    assert [(c.trace_id, c.span_id) for c in operation.links] == [(1, 10), (1, 11)]
    operation.add_links([_producer(2, n) for n in range(1, 100)])
    assert len(operation.links) == operations.MAX_LINKS
    span.end()
    assert len(span.links) == operations.MAX_LINKS
    assert span.links[0].attributes["zaqar.same_trace"] is False


def test_describe_sets_ids_or_the_count() -> None:
    provider = TracerProvider()
    one = provider.get_tracer("t").start_span("s")
    operations.describe(one, 201, {"resources": ["/m/a"]})
    many = provider.get_tracer("t").start_span("s")
    operations.describe(many, 200, {"messages": [{"id": str(i)} for i in range(12)]})
    failed = provider.get_tracer("t").start_span("s")
    operations.describe(failed, 503, {"messages": [{"id": "x"}]})
    assert one.attributes["messaging.message.id"] == "a"
    assert many.attributes["messaging.batch.message_count"] == 12
    assert "zaqar.message.ids" not in many.attributes  # more than MAX_IDS
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert "messaging.message.id" not in failed.attributes


# -- operations measured, traced or not ------------------------------------------


def test_operations_are_measured_from_what_zaqar_rendered() -> None:
    """A falcon app answering as Zaqar's resources do (``utils.to_json``):
    counts and ages come from the rendered objects, untraced."""
    import falcon
    import falcon.testing
    from zaqar.transport import utils

    from zaqar_otel import patching
    from zaqar_otel.messaging import operations

    class Messages:
        def on_post(self, req: Any, resp: Any, queue_name: str) -> None:
            resp.text = utils.to_json({"resources": ["/m/1", "/m/2", "/m/3"]})
            resp.status = falcon.HTTP_201

        def on_get(self, req: Any, resp: Any, queue_name: str) -> None:
            resp.text = utils.to_json({"messages": [{"id": "1", "age": 5, "body": {}}]})

        def on_delete(self, req: Any, resp: Any, queue_name: str) -> None:
            resp.status = falcon.HTTP_204

    class Claims:
        def on_post(self, req: Any, resp: Any, queue_name: str) -> None:
            if queue_name == "empty":
                resp.status = falcon.HTTP_204
                return
            resp.text = utils.to_json({"messages": [
                {"id": "1", "age": 0, "body": {}}, {"id": "2", "age": 12, "body": {}}]})
            resp.status = falcon.HTTP_201

    class Stats:
        def on_get(self, req: Any, resp: Any, queue_name: str) -> None:
            resp.text = utils.to_json({"messages": [{"id": "x", "age": 99}]})

    calls: list[tuple[Any, ...]] = []

    class Recorded:
        def operation(self, *args: Any) -> None:
            calls.append(args[:5] + args[6:8])

    app = falcon.App(middleware=[operations.MessagingSpans(None, metrics=Recorded())])
    app.req_options.auto_parse_qs_csv = True  # as Zaqar's driver sets it
    app.add_route("/v2/queues/{queue_name}/messages", Messages())
    app.add_route("/v2/queues/{queue_name}/claims", Claims())
    app.add_route("/v2/queues/{queue_name}/stats", Stats())
    patches = patching.Patches()
    operations.capture_rendered(patches)
    try:
        client = falcon.testing.TestClient(app, headers={"X-Project-ID": "p"})
        client.simulate_post("/v2/queues/q/messages")
        client.simulate_get("/v2/queues/q/stats")  # rendered, not an operation
        client.simulate_post("/v2/queues/empty/claims")  # 204: nothing stale
        client.simulate_post("/v2/queues/q/claims")
        client.simulate_get("/v2/queues/q/messages")
        client.simulate_delete("/v2/queues/q/messages", query_string="ids=1,2")
        client.simulate_delete("/v2/queues/q/messages", params={"pop": "1"})
        routed = client.simulate_get("/v2/queues/q/messages")
    finally:
        patches.undo()
    assert calls == [
        ("send", "post", "q", "p", 201, 3, []),
        ("receive", "claim", "empty", "p", 204, 0, []),
        ("receive", "claim", "q", "p", 201, 2, [0, 12]),
        ("receive", "list", "q", "p", 200, 1, [5]),
        ("settle", "delete", "q", "p", 204, 2, []),
        ("receive", "pop", "q", "p", 204, 0, []),
        ("receive", "list", "q", "p", 200, 1, [5]),
    ]
    assert routed.status_code == 200


def test_methods_a_client_makes_up_are_not_kept() -> None:
    """Any token is a method to a WSGI server (Zaqar answers 405): those
    are not kept by the per-template memo, HTTP's own are."""
    import falcon.testing

    operation_of = operations.RouteOperations()
    before = dict(operation_of.kept)
    template = "/v2/queues/{queue_name}/messages"
    for i in range(50):
        req = falcon.testing.create_req(method=f"X{i}" * 1000,
                                        path="/v2/queues/q/messages")
        req.uri_template = template
        assert operation_of(req) is None
    req = falcon.testing.create_req(method="POST", path="/v2/queues/q/messages")
    req.uri_template = template
    assert operation_of(req) is not None
    added = set(operation_of.kept) - set(before)
    assert added <= {("POST", template)}
