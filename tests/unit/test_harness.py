"""The test harness itself (``harness/``) and the demo parts it builds on: the
OTLP receiver (``zaqar_otel.demo.receiver``), the tree checks
(``harness.tracing``, ``zaqar_otel.demo.tree``), real servers
(``zaqar_otel.demo.processes``, ``harness.servers``)."""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pymongo
import pytest
import redis
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from harness.servers import MongoServer, require_service
from harness.tracing import assert_one_tree
from zaqar_otel.demo.processes import (
    RedisServer,
    free_port,
    service_reachable,
    wait_port,
)
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.tree import by_trace, render_tree

MS = 1_000_000


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests and gRPC both honour *_proxy variables; loopback must stay local.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def provider_for(rcv: OTLPReceiver, compression: str) -> TracerProvider:
    if rcv.protocol == "http":
        exporter = HttpExporter(
            endpoint=rcv.traces_url,
            compression=Compression(compression),
            timeout=5,
        )
    else:
        exporter = GrpcExporter(
            endpoint=rcv.endpoint,
            insecure=True,
            compression=grpc.Compression.Gzip
            if compression == "gzip"
            else grpc.Compression.NoCompression,
            timeout=5,
        )
    provider = TracerProvider(resource=Resource.create({"service.name": "infra"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("http", "none"), ("http", "gzip"), ("grpc", "none"), ("grpc", "gzip")],
)
def test_sdk_spans_decode_from_the_wire(protocol: str, compression: str) -> None:
    with OTLPReceiver(protocol) as rcv:
        provider = provider_for(rcv, compression)
        tracer = provider.get_tracer("infra.scope")
        with tracer.start_as_current_span(
            "parent",
            kind=SpanKind.SERVER,
            attributes={
                "s": "text",
                "i": 7,
                "f": 1.5,
                "b": True,
                "ss": ["a", "b"],
                "ii": [1, 2],
            },
        ) as parent:
            linked = parent.get_span_context()
            with tracer.start_as_current_span(
                "child", kind=SpanKind.CLIENT, links=[trace.Link(linked, {"l": 1})]
            ) as child:
                child.add_event("evt", {"e": "v"})
                child.set_status(trace.StatusCode.ERROR, "boom")
        spans = rcv.wait_for(count=2)
        provider.shutdown()

    assert len(rcv.raw) == 2 and rcv.requests == 2
    by_name = {s.name: s for s in spans}
    p, c = by_name["parent"], by_name["child"]
    ctx = parent.get_span_context()
    assert (p.trace_id, p.span_id, p.parent_span_id) == (
        ctx.trace_id,
        ctx.span_id,
        None,
    )
    assert p.trace_id_hex == f"{ctx.trace_id:032x}" and len(p.span_id_hex) == 16
    assert c.parent_span_id == p.span_id and c.trace_id == p.trace_id
    assert (p.kind, c.kind) == ("SERVER", "CLIENT")
    assert p.attributes == {
        "s": "text",
        "i": 7,
        "f": 1.5,
        "b": True,
        "ss": ("a", "b"),
        "ii": (1, 2),
    }
    assert (p.status_code, c.status_code, c.status_message) == (
        "UNSET",
        "ERROR",
        "boom",
    )
    assert c.events == (("evt", {"e": "v"}),)
    assert c.links == ((ctx.trace_id, ctx.span_id, {"l": 1}),)
    assert p.resource["service.name"] == "infra" and p.scope == "infra.scope"
    assert p.start_ns <= c.start_ns <= c.end_ns <= p.end_ns
    assert assert_one_tree(spans) == p


def test_remote_parent_is_accepted_only_when_named() -> None:
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    with OTLPReceiver("http") as rcv:
        provider = provider_for(rcv, "none")
        ctx = trace.set_span_in_context(NonRecordingSpan(remote))
        with provider.get_tracer("t").start_as_current_span("server", context=ctx):
            pass
        spans = rcv.wait_for(lambda s: s.name == "server")
        provider.shutdown()
    assert spans[0].trace_id == 0xABC and spans[0].parent_span_id == 0xDEF
    assert assert_one_tree(spans, remote_parent=0xDEF).name == "server"
    with pytest.raises(AssertionError, match="not in the list"):
        assert_one_tree(spans)


def span(
    name: str,
    span_id: int,
    parent: int | None,
    start: int,
    end: int,
    trace_id: int = 1,
) -> ReceivedSpan:
    """A hand-made span; times in ms."""
    return ReceivedSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind="INTERNAL",
        start_ns=start * MS,
        end_ns=end * MS,
        attributes={},
        status_code="UNSET",
        status_message="",
        events=(),
        links=(),
        resource={},
        scope="s",
    )


GOOD = [
    span("root", 1, None, 0, 10),
    span("b", 3, 1, 5, 9),
    span("a", 2, 1, 1, 4),
    span("a.1", 4, 2, 2, 3),
    span("late by slack", 5, 1, 1, 11),  # 1 ms clock slack is allowed
]


def test_good_tree_passes_and_renders_by_start_time() -> None:
    assert assert_one_tree(GOOD).name == "root"
    assert render_tree(GOOD).splitlines() == (
        [
            "root [INTERNAL] 10.00ms",
            "  a [INTERNAL] 3.00ms",
            "    a.1 [INTERNAL] 1.00ms",
            "  late by slack [INTERNAL] 10.00ms",
            "  b [INTERNAL] 4.00ms",
        ]
    )
    assert list(by_trace(GOOD)) == [1]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ([span("dup", 2, 1, 1, 2)], "duplicate span id"),
        ([span("root2", 9, None, 0, 1)], "2 roots"),
        ([span("orphan", 9, 77, 1, 2)], "not in the list"),
        ([span("outside", 9, 1, 5, 12)], "is not inside root"),
        ([span("other", 9, 1, 1, 2, trace_id=2)], "2 trace ids"),
    ],
)
def test_bad_trees_are_rejected_with_a_rendering(
    extra: list[ReceivedSpan], problem: str
) -> None:
    with pytest.raises(AssertionError, match=problem) as err:
        assert_one_tree(GOOD + extra)
    assert "  a [INTERNAL] 3.00ms" in str(err.value)


def test_parent_cycle_is_rendered_not_lost() -> None:
    cycle = [span("x", 1, 2, 0, 1), span("y", 2, 1, 0, 1)]
    assert render_tree(cycle).count("(unreachable)") == 2
    with pytest.raises(AssertionError, match="0 roots"):
        assert_one_tree(cycle)


def post(
    url: str, body: bytes, ctype: str = "application/x-protobuf", timeout: float = 5
) -> int:
    req = urllib.request.Request(url, body, {"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


EMPTY_REQ = ExportTraceServiceRequest()
EMPTY = EMPTY_REQ.SerializeToString()
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def test_http_modes_and_rejections() -> None:
    with OTLPReceiver("http") as rcv:
        assert post(rcv.traces_url, EMPTY) == 200
        assert post(rcv.traces_url, b"{}", "application/json") == 415
        assert post(rcv.endpoint + "/v1/logs", EMPTY) == 404  # not served
        assert post(rcv.traces_url, b"\xff\xff") == 400
        rcv.mode = "error"
        assert post(rcv.traces_url, EMPTY) == 503

        rcv.mode = "hang"
        codes: list[int] = []
        t = threading.Thread(target=lambda: codes.append(post(rcv.traces_url, EMPTY)))
        t.start()
        time.sleep(0.2)
        assert t.is_alive() and not codes
        rcv.mode = "ok"  # releases the hung request
        t.join(2)
        assert codes == [200]
        assert rcv.requests == 4  # 404 and 415 never reach the decoder


def test_http_client_that_gave_up_during_hang_is_not_recorded() -> None:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(
        name="s", trace_id=b"\1" * 16, span_id=b"\2" * 8
    )
    with OTLPReceiver("http") as rcv:
        rcv.mode = "hang"
        with pytest.raises(TimeoutError):
            post(rcv.traces_url, req.SerializeToString(), timeout=0.2)
        rcv.mode = "ok"
        time.sleep(0.1)
        assert rcv.spans() == [] and rcv.requests == 1
        assert post(rcv.traces_url, req.SerializeToString()) == 200
        assert [(s.name, s.trace_id_hex) for s in rcv.spans()] == [("s", "01" * 16)]


def test_wait_for_times_out_with_a_summary() -> None:
    summary = r"(?s)expected 1 spans within 0.1s, got 0 .*\(none\)"
    with OTLPReceiver("http") as rcv, pytest.raises(AssertionError, match=summary):
        rcv.wait_for(count=1, timeout=0.1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_stop_is_fast_even_with_a_hung_request(protocol: str) -> None:
    rcv = OTLPReceiver(protocol).start()
    rcv.mode = "hang"
    channel = grpc.insecure_channel(f"127.0.0.1:{rcv.port}")

    def send() -> None:
        # The receiver hangs up without answering: the client sees an error.
        with pytest.raises((OSError, grpc.RpcError)):
            if protocol == "http":
                post(rcv.traces_url, EMPTY)
            else:
                channel.unary_unary(EXPORT_METHOD)(EMPTY, timeout=5)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    deadline = time.monotonic() + 30
    while rcv.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rcv.requests == 1
    t0 = time.monotonic()
    rcv.stop()
    assert time.monotonic() - t0 < 1.0
    sender.join(2)
    assert not sender.is_alive()
    assert not service_reachable("127.0.0.1", rcv.port)
    channel.close()


def test_grpc_error_and_hang_modes() -> None:
    with (
        OTLPReceiver("grpc") as rcv,
        grpc.insecure_channel(f"127.0.0.1:{rcv.port}") as channel,
    ):
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stub.Export(EMPTY_REQ, timeout=5)
        rcv.mode = "error"
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(EMPTY_REQ, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        rcv.mode = "hang"
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(EMPTY_REQ, timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        rcv.mode = "ok"
        with pytest.raises(grpc.RpcError) as err:  # raw bytes: bypass the stub
            channel.unary_unary(EXPORT_METHOD)(b"\xff\xff", timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rcv.requests == 4 and rcv.raw == [EMPTY] * 3 + [b"\xff\xff"]


# -- servers ----------------------------------------------------------------


def test_port_helpers() -> None:
    port = free_port()
    assert not service_reachable("127.0.0.1", port)
    with pytest.raises(TimeoutError):
        wait_port("127.0.0.1", port, timeout=0.1)
    with OTLPReceiver("http") as rcv:
        wait_port("127.0.0.1", rcv.port, timeout=1)
        require_service("receiver", "127.0.0.1", rcv.port)


@pytest.mark.parametrize(("ci", "outcome"), [("", "skip"), ("1", "fail")])
def test_require_service_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    monkeypatch.setenv("CI", ci)
    expected = pytest.skip.Exception if outcome == "skip" else pytest.fail.Exception
    with pytest.raises(expected, match=r"Nothing not reachable on 127\.0\.0\.1:\d+"):
        require_service("Nothing", "127.0.0.1", free_port())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_redis_set_get_and_restart_on_the_same_port(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    client.set("k", "v")
    assert client.get("k") == b"v"
    port, pid = redis_server.port, redis_server.pid
    redis_server.stop()
    assert not alive(pid) and not service_reachable("127.0.0.1", port)
    with pytest.raises(redis.ConnectionError):
        client.get("k")
    redis_server.start()
    assert redis_server.port == port and redis_server.pid != pid
    assert client.get("k") is None  # no persistence: "--save ''"
    client.close()


def test_server_teardown_removes_process_and_dir() -> None:
    server = RedisServer().start()
    pid, data = server.pid, server.dir
    assert pid and alive(pid) and data.is_dir()
    server.close()
    assert not alive(pid) and not data.exists() and server.pid is None


def test_mongo_insert_find_and_update() -> None:
    t0 = time.monotonic()
    with MongoServer() as server:
        started = time.monotonic() - t0
        with pymongo.MongoClient(server.url, serverSelectionTimeoutMS=5000) as c:
            coll = c.test.queue
            coll.insert_many([{"n": 1, "claimed": False}, {"n": 2, "claimed": False}])
            assert [d["n"] for d in coll.find({}, sort=[("n", 1)])] == [1, 2]
            doc = coll.find_one_and_update(
                {"claimed": False},
                {"$set": {"claimed": True}},
                sort=[("n", 1)],
                return_document=pymongo.ReturnDocument.AFTER,
            )
            assert doc["n"] == 1 and doc["claimed"] is True
            assert coll.count_documents({"claimed": False}) == 1
        pid = server.pid
    assert pid and not alive(pid)
    assert started < 15, f"SecantusDB took {started:.1f}s to start"


def test_breadth_ci_runs_the_corners_only_while_its_inputs_are_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--ci``: every job until a full pass is recorded for these inputs."""
    from tests.breadth import matrix

    corners = set(matrix.CORNERS)
    assert {j.name for j in matrix.jobs(corners=True)} == corners

    def listed() -> set[str]:
        assert matrix.main(["--ci", "--list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {line.split()[0] for line in lines[1:]}

    monkeypatch.setattr(matrix, "PASSED", tmp_path / "full-matrix.passed")
    assert listed() == {j.name for j in matrix.jobs()}
    (tmp_path / "full-matrix.passed").write_text(matrix.inputs_digest() + "\n")
    assert listed() == corners
    # A changed input (a pin, the Zaqar set, the matrix itself) runs every job.
    monkeypatch.setattr(matrix, "INPUTS", (*matrix.INPUTS, "tox.ini"))
    assert listed() == {j.name for j in matrix.jobs()}
