"""Where a request's span hangs, with osprofiler's own OTLP driver as oracle.

The same signed requests go to plain ``zaqar-server`` exporting through
osprofiler's ``otlp://`` driver and to ``zaqar-otel-server``, each to its own
OTLP receiver. A caller at the root of its OSProfiler trace
(``parent_id == base_id``, what ``openstack --os-profile`` sends) exports no
span: osprofiler makes the receiving service's span a root, and so must we.
Any other caller stays the parent. Outgoing calls of the request (a webhook
delivery's headers are checked in test_messaging) continue the same trace.
"""

from __future__ import annotations

import uuid

import pytest

from tests.tracing_support import (
    KEY,
    OTEL_SERVER,
    assert_one_tree,
    canary,
    osprofiler_driver,
    tracing,
)
from tests.websocket_client import exchange
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.zaqar_server import ZAQAR_SERVER_COMMAND, ZaqarServer, redis_sql
from zaqar_otel.propagation import codec, idmap

pytestmark = pytest.mark.functional

OSPROFILER_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


def _callers() -> dict[str, tuple[str, str]]:
    root = str(uuid.uuid4())
    return {"root caller": (root, root), "inner caller": (str(uuid.uuid4()),
                                                          str(uuid.uuid4()))}


def _top(spans: list[ReceivedSpan], trace_id: int) -> ReceivedSpan:
    """The outermost span of the trace's request: the one whose parent is not
    one of the trace's own spans."""
    mine = [s for s in spans if s.trace_id == trace_id]
    assert mine, f"no span of trace {trace_id:032x}"
    ids = {s.span_id for s in mine}
    tops = [s for s in mine if s.parent_span_id not in ids]
    assert len(tops) == 1, [s.name for s in tops]
    return tops[0]


def _send_all(server: ZaqarServer, callers: dict[str, tuple[str, str]]) -> None:
    for base_id, parent_id in callers.values():
        headers = codec.encode(base_id, parent_id, KEY)
        assert server.request("GET", "/v2/queues", headers=headers)[0] == 200


def test_root_and_parent_are_where_osprofilers_driver_puts_them(
        redis: RedisServer) -> None:
    callers = _callers()
    with OTLPReceiver() as theirs, OTLPReceiver() as ours:
        with ZaqarServer(redis_sql(redis.url), command=ZAQAR_SERVER_COMMAND,
                         extra=osprofiler_driver(theirs.port),
                         env=OSPROFILER_ENV) as plain:
            _send_all(plain, callers)
            for base_id, _ in callers.values():
                trace_id = idmap.trace_id_from_base_id(base_id)
                theirs.wait_for(lambda s, t=trace_id: s.trace_id == t, timeout=30)
        with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                         extra=tracing(ours)) as traced:
            _send_all(traced, callers)
            canary(traced, ours, clear=False)
        for case, (base_id, parent_id) in callers.items():
            trace_id = idmap.trace_id_from_base_id(base_id)
            expected = (None if case == "root caller"
                        else idmap.span_id_from_uuid(parent_id))
            oracle, top = _top(theirs.spans(), trace_id), _top(ours.spans(), trace_id)
            assert oracle.parent_span_id == expected, (case, oracle)
            assert top.parent_span_id == expected, (case, top)
            assert top.kind == "SERVER" and top.name == "GET /v2/queues"
            # Every other span of ours resolves inside the trace.
            assert_one_tree([s for s in ours.spans() if s.trace_id == trace_id],
                            remote_parent=expected)


def test_a_websocket_root_caller_gives_a_root(redis: RedisServer,
                                              receiver: OTLPReceiver) -> None:
    base_id = str(uuid.uuid4())
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "p",
               **codec.encode(base_id, base_id, KEY)}
    extra = tracing(receiver, profiler={"trace_websocket_transport": "true"})
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                     websocket=True) as server:
        responses = exchange(server.port, [
            {"action": "queue_create", "headers": headers,
             "body": {"queue_name": "rooted"}}])
        assert responses[0]["headers"]["status"] == 201, responses
        trace_id = idmap.trace_id_from_base_id(base_id)
        receiver.wait_for(lambda s: s.trace_id == trace_id and s.kind == "SERVER")
    top = _top(receiver.spans(), trace_id)
    assert top.parent_span_id is None and top.name == "websocket queue_create"
    assert_one_tree([s for s in receiver.spans() if s.trace_id == trace_id])
