"""What the cost levers of a traced request (issue 13) must not change."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry import context as context_api
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
    patches = patching.Patches()
    operations.capture_rendered(patches)
    server = tracer.start_span("server")
    token = context.attach(trace.set_span_in_context(server))
    try:
        client = falcon.testing.TestClient(app, headers={"X-Project-ID": "p"})
        client.simulate_post("/v2/queues/q/messages")
        client.simulate_get("/v2/queues/q/messages")
        client.simulate_post("/v2/queues/q/claims")
    finally:
        context.detach(token)
        patches.undo()
    spans = {s.attributes["messaging.operation.name"]: s
             for s in exporter.get_finished_spans()}
    assert spans["post"].attributes["zaqar.message.ids"] == ("1", "2")
    assert spans["list"].attributes["messaging.message.id"] == "7"
    assert spans["claim"].attributes["zaqar.message.ids"] == ("c1", "c2")
    assert len(parsed) == 1 and '"c1"' in parsed[0]  # the claim's body only


def test_a_request_without_trace_headers_is_not_extracted_but_gets_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The propagators the entry knows (the default ones and baggage) find
    nothing in a request without traceparent, baggage or X-Trace-Info: the
    same empty context, without their work; any header of theirs, or any
    other propagator, extracts."""
    from opentelemetry import propagate
    from opentelemetry.instrumentation.wsgi import wsgi_getter
    from opentelemetry.propagators.composite import CompositePropagator

    from zaqar_otel.entry import wsgi_middleware
    from zaqar_otel.hook import propagators
    from zaqar_otel.propagation import codec

    textmap = propagators.textmap("tracecontext,baggage,osprofiler", ("k",))
    monkeypatch.setattr(propagate, "get_global_textmap", lambda: textmap)
    calls: list[Any] = []
    real_extract = CompositePropagator.extract

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real_extract(self, *args, **kwargs)

    monkeypatch.setattr(CompositePropagator, "extract", counted)
    extract = wsgi_middleware.Extractor()
    plain = {"REQUEST_METHOD": "GET", "HTTP_TRACESTATE": "a=b",
             "HTTP_X_TRACE_HMAC": "0"}
    assert extract(plain) == real_extract(textmap, plain,
                                                          getter=wsgi_getter)
    assert calls == []
    signed = codec.encode("7d4b0e6c-0000-4000-8000-000000000001",
                          "7d4b0e6c-0000-4000-8000-000000000002", "k")
    for environ in ({"HTTP_TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
                    {"HTTP_BAGGAGE": "k=v"},
                    {"HTTP_X_TRACE_INFO": signed["X-Trace-Info"],
                     "HTTP_X_TRACE_HMAC": signed["X-Trace-HMAC"]}):
        ours = _view(extract(environ))
        assert ours == _view(real_extract(textmap, environ, getter=wsgi_getter))
        assert ours != {}
    assert len(calls) == 3  # ours only: the reference calls the real one
    other = CompositePropagator([*textmap._propagators, _Other()])
    monkeypatch.setattr(propagate, "get_global_textmap", lambda: other)
    assert extract(plain) == {"other": True}


def _view(extracted: Any) -> dict[str, Any]:
    """A context's values, spans by their span context (spans compare by
    identity)."""
    return {k: v.get_span_context() if isinstance(v, trace.Span) else v
            for k, v in extracted.items()}


class _Other:
    """A propagator of the operator's: it may read anything."""

    fields: set[str] = set()

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        from opentelemetry.context import set_value
        return set_value("other", True, context)

    def inject(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.mark.parametrize("url", ["http://collector.example:4318/v1/traces",
                                 "http://127.0.0.1:4318/v1/traces"])
def test_the_environment_requests_reads_per_request_is_read_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any, url: str) -> None:
    """Proxies (and no_proxy), a CA bundle, netrc credentials: a request of
    the exporter's session gets the same settings as with trust_env."""
    import requests

    from zaqar_otel._sdk.fast.otlp_http import OTLPSpanExporter, read_environment_once

    netrc = tmp_path / "netrc"
    netrc.write_text("machine collector.example login u password p\n")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("NETRC", str(netrc))
    trusting = requests.Session()
    expected = trusting.merge_environment_settings(url, {}, None, None, None)
    expected_auth = requests.utils.get_netrc_auth(url)
    session = requests.Session()
    read_environment_once(session, url)
    assert not session.trust_env
    assert session.merge_environment_settings(url, {}, None, None, None) == expected
    assert session.auth == expected_auth
    prepared = session.prepare_request(requests.Request("POST", url))
    assert prepared.headers.get("Authorization") == trusting.prepare_request(
        requests.Request("POST", url)).headers.get("Authorization")
    from zaqar_otel._sdk import layout

    # Given a session, every SDK the range admits posts through it.
    given = requests.Session()
    exporter = OTLPSpanExporter(endpoint=url, session=given)
    assert layout.http_session(exporter) is given and not given.trust_env
    assert given.merge_environment_settings(url, {}, None, None, None) == expected
    # Without one, SDK 1.45.0 posts through urllib3 (no session, nothing
    # read per request) and 1.45.1+ through a session of its own, but to a
    # plain http:// collector that no proxy or netrc entry applies to
    # (127.0.0.1 here): zaqar-otel's kept-alive connection.
    exporter = OTLPSpanExporter(endpoint=url)
    made = layout.http_session(exporter)
    transport = type(exporter._client._transport).__name__
    if transport == "Urllib3HTTPTransport":
        assert made is None
    elif "127.0.0.1" in url:
        assert made is None and transport == "Connection"
    else:
        assert made is not None and not made.trust_env
        assert made.merge_environment_settings(url, {}, None, None, None) == expected


class _Url:
    """An SQLAlchemy URL's parts the instrumentation reads."""

    def __init__(self, host: str | None, port: int | None, database: str | None,
                 username: str | None = None) -> None:
        self.host, self.port = host, port
        self.database, self.username = database, username


class _Conn:
    def __init__(self, url: _Url) -> None:
        self.engine = type("E", (), {"url": url})()


def _cursor(**connection: Any) -> Any:
    info = connection.pop("info", None)
    conn = type("C", (), dict(connection, info=info))()
    return type("Cur", (), {"connection": conn})()


def _pg_info(dbname: str, host: str, port: int) -> Any:
    return type("I", (), {"dbname": dbname, "host": host, "port": port})()


@pytest.mark.parametrize(("vendor", "url", "cursor"), [
    ("sqlite", _Url(None, None, "/var/lib/zaqar/zaqar.sqlite"), _cursor()),
    ("mysql", _Url("db.example", 3306, "zaqar", "zaqar"), _cursor(db=b"zaqar")),
    ("mysql", _Url("db.example", None, "zaqar"), _cursor(database="other")),
    ("postgresql", _Url("db.example", 5432, "zaqar"),
     _cursor(info=_pg_info("zaqar", "h", 5432))),
    ("postgresql", _Url(None, None, "zaqar"),
     _cursor(info=_pg_info("zaqar", "/run/pg", 5432))),
    ("postgresql", _Url(None, None, "zaqar"), _cursor()),
])
@pytest.mark.parametrize("modes", [("DEFAULT", "DEFAULT"), ("DATABASE", "HTTP"),
                                   ("DATABASE_DUP", "HTTP_DUP")])
def test_statement_spans_are_the_instrumentations(
        vendor: str, url: _Url, cursor: Any, modes: tuple[str, str]) -> None:
    """The statement path in fewer steps: for each kind of database and URL,
    the same span (name, kind, attributes in order, parent) as the
    instrumentation's own _before_cur_exec, first and again."""
    from opentelemetry.instrumentation._semconv import _StabilityMode
    from opentelemetry.instrumentation.sqlalchemy import engine as engine_module

    from zaqar_otel._sdk import sqlalchemy_hooks
    from zaqar_otel.backends import sql

    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    original = engine_module.EngineTracer._before_cur_exec
    lean = sqlalchemy_hooks.statement_listener(original, sql._statement_hooks())
    engine_tracer = object.__new__(engine_module.EngineTracer)
    engine_tracer.tracer = tracer
    engine_tracer.vendor = vendor
    engine_tracer.enable_commenter = False
    engine_tracer._sem_conv_opt_in_mode_db = _StabilityMode[modes[0]]
    engine_tracer._sem_conv_opt_in_mode_http = _StabilityMode[modes[1]]
    engine_tracer._leading_comment_remover = __import__("re").compile(r"^/\*.*?\*/")
    conn = _Conn(url)
    statements = ['SELECT "Queues".id FROM "Queues" WHERE "Queues".name = ?',
                  "INSERT INTO q (a) VALUES (?)"]
    seen = []
    for before in (original, lean, lean, original):
        for statement in statements:
            context = type("Ctx", (), {})()
            parent = tracer.start_span("trace point")
            token = context_api.attach(trace.set_span_in_context(parent))
            try:
                assert before(engine_tracer, conn, cursor, statement, None,
                              context, False) == (statement, None)
            finally:
                context_api.detach(token)
            context._otel_span.end()
            parent.end()
        spans = [s for s in exporter.get_finished_spans() if s.name != "trace point"]
        seen.append([(s.name, s.kind, list((s.attributes or {}).items()),
                      s.parent is not None) for s in spans])
        exporter.clear()
    assert seen[0] == seen[3]
    # The stable db.operation.name comes from the SQLAlchemy statement
    # object, never parsed from the text (backends/sql.py): a statement
    # executed without one, as here, has none; every other field is the
    # instrumentation's.
    expected = seen[0] if modes[0] == "DEFAULT" else [
        (name, kind, [(k, v) for k, v in attributes if k != "db.operation.name"],
         parented) for name, kind, attributes, parented in seen[0]]
    assert seen[1] == seen[2] == expected
    assert all(parented for *_, parented in seen[0])
