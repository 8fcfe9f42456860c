"""osprofiler itself is the oracle: its headers in, our headers through its WSGI."""

import uuid

import pytest
import webob
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from osprofiler import _utils as osp_utils
from osprofiler import notifier, profiler, web

from zaqar_otel.propagation import codec, propagator

KEY = "interop-key"


@pytest.fixture
def osp_profiler():
    """osprofiler initialised the way `openstack --os-profile KEY` does."""
    profiler.clean()
    yield profiler.init(KEY)
    profiler.clean()


@pytest.fixture
def osp_notifications():
    """Every notification osprofiler's WSGI middleware emits."""
    seen: list[dict] = []
    previous = notifier.get()
    notifier.set(seen.append)
    yield seen
    notifier.set(previous)


def extracted(headers: dict) -> trace.SpanContext:
    ctx = propagator.OSProfilerPropagator(["unused", KEY]).extract(headers)
    return trace.get_current_span(ctx).get_span_context()


def test_client_headers_at_the_root_extract_to_osprofilers_ids(osp_profiler):
    headers = web.get_trace_id_headers()
    sc = extracted(headers)
    assert sc.trace_id == osp_utils.uuid_to_int128(osp_profiler.get_base_id())
    assert sc.span_id == osp_utils.shorten_id(osp_profiler.get_id())


def test_headers_from_inside_a_trace_point_extract_to_that_point(osp_profiler):
    with profiler.Trace("client-call"):
        headers = web.get_trace_id_headers()
        sc = extracted(headers)
        assert osp_profiler.get_id() != osp_profiler.get_base_id()
        assert sc.span_id == osp_utils.shorten_id(osp_profiler.get_id())
        assert format(sc.span_id, "x") == osp_profiler.get_shorten_id(
            osp_profiler.get_id())
    assert sc.trace_id == osp_utils.uuid_to_int128(osp_profiler.get_base_id())


def test_our_headers_pass_osprofilers_wsgi_middleware(osp_notifications):
    """A real WSGI request through osprofiler.web.WsgiMiddleware."""
    seen_by_app: dict = {}

    def app(environ, start_response):
        p = profiler.get()
        seen_by_app.update(base=p.get_base_id(), parent=p.get_parent_id())
        start_response("204 No Content", [])
        return [b""]

    provider = TracerProvider()
    tracer = provider.get_tracer(__name__)
    middleware = web.WsgiMiddleware(app, hmac_keys=f"other,{KEY}", enabled=True)
    with tracer.start_as_current_span("caller") as span:
        request = webob.Request.blank("/v2/queues")
        propagator.OSProfilerPropagator([KEY]).inject(request.headers)
        response = request.get_response(middleware)
    assert response.status_int == 204

    ours = span.get_span_context()
    # osprofiler's own id conversions (the ones its OTLP driver exports with)
    # give back our trace id and the id of the span that injected.
    assert osp_utils.uuid_to_int128(seen_by_app["base"]) == ours.trace_id
    assert osp_utils.shorten_id(seen_by_app["parent"]) == ours.span_id
    start = next(n for n in osp_notifications if n["name"] == "wsgi-start")
    assert osp_utils.shorten_id(start["parent_id"]) == ours.span_id
    assert osp_utils.uuid_to_int128(start["base_id"]) == ours.trace_id


def test_forged_headers_do_not_start_osprofiler_either(osp_notifications):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    middleware = web.WsgiMiddleware(app, hmac_keys=KEY, enabled=True)
    request = webob.Request.blank("/")
    request.headers.update(codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), "x"))
    assert request.get_response(middleware).body == b"ok"
    assert osp_notifications == []
    assert extracted(dict(request.headers)).is_valid is False


def test_signed_pack_and_our_encode_are_byte_identical():
    base_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    info, sig = osp_utils.signed_pack({"base_id": base_id, "parent_id": parent_id},
                                      KEY)
    assert codec.encode(base_id, parent_id, KEY) == {
        "X-Trace-Info": info.decode(), "X-Trace-HMAC": sig}
    unpacked = osp_utils.signed_unpack(info, sig, [KEY])
    assert codec.decode(info, sig, [KEY]) == codec.TraceInfo(
        unpacked["base_id"], unpacked["parent_id"], unpacked["hmac_key"])
