"""The real ``openstack --os-profile KEY messaging ...`` through Keystone and Zaqar.

Issue 12, point 2. Each CLI command makes one trace, the one whose id it
prints: the CLI's own Keystone calls (version discovery, token issue) and its
Zaqar request are roots, as osprofiler makes them (the CLI sends
``parent_id == base_id``); keystonemiddleware's calls to Keystone, inside
Zaqar's server span, are ``requests`` CLIENT spans, and Keystone's spans for
them (osprofiler's own OTLP driver, another process, another venv) hang
under those. Every parent resolves inside the trace.

Needs Keystone's venv and python-openstackclient: ``make peer-keystone`` or
``tox -e peer-keystone`` install both. Without them the test skips, and
fails instead when ``CI`` is set.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness.keystone_stack import (
    COMMANDS,
    KEYSTONE_SERVICE,
    QUEUE,
    REQUESTS_SCOPE,
    Stack,
    detail,
    require_stack,
)
from harness.tracing import assert_one_tree
from zaqar_otel.demo.receiver import ReceivedSpan
from zaqar_otel.demo.tree import render_tree

# The CLI's own calls to Keystone: version discovery, then the token.
CLI_KEYSTONE_CALLS = {"WSGI_GET_/v3", "WSGI_POST_/v3/auth/tokens"}
MARKER = "marker-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    require_stack()
    with Stack() as running:
        yield running


def _service(span: ReceivedSpan) -> str:
    return str(span.resource.get("service.name"))


def _subtree(root: ReceivedSpan, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    children: dict[int | None, list[ReceivedSpan]] = {}
    for s in spans:
        children.setdefault(s.parent_span_id, []).append(s)
    tree, todo = [], [root]
    while todo:
        span = todo.pop()
        tree.append(span)
        todo.extend(children.get(span.span_id, []))
    return tree


def _args(args: list[str]) -> list[str]:
    # The posted body carries a marker, to scan what was exported for it.
    return [a.replace('"n": 1', f'"n": 1, "m": "{MARKER}"') for a in args]


@pytest.mark.parametrize(
    ("args", "route"), COMMANDS, ids=[" ".join(a[1:3]) for a, _ in COMMANDS])
def test_one_trace_per_command(stack: Stack, args: list[str], route: str) -> None:
    result = stack.cli(_args(args))
    assert result.returncode == 0, result.stderr
    # "Trace ID: <uuid>" on stderr is the OSProfiler base_id; the "Short
    # trace ID for OpenTracing-based drivers" line is a span id, not used.
    base_id = result.trace_id
    assert base_id, f"no 'Trace ID:' line on stderr:\n{result.stderr}"
    trace_id = uuid.UUID(base_id).int
    spans = stack.trace(trace_id, route)
    tree = render_tree(spans, detail)
    assert spans, f"no span of trace {trace_id:032x} at the receiver"
    assert f"{trace_id:032x}" == base_id.replace("-", "")

    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans), "duplicate span ids\n" + tree
    # Every parent resolves inside the trace: in particular nothing points at
    # low64(base_id), the span id of a caller that exported no span.
    dangling = [s for s in spans if s.parent_span_id is not None
                and s.parent_span_id not in by_id]
    assert not dangling, (
        "parents not in the trace: "
        + ", ".join(f"{s.name} ({_service(s)}) -> {s.parent_span_id:016x}"
                    for s in dangling)
        + f"\nlow64(base_id) = {trace_id & (2**64 - 1):016x}\n" + tree)

    # The roots are exactly what osprofiler makes of the CLI's requests: one
    # SERVER span per request the CLI sent itself (parent_id == base_id),
    # Keystone's by osprofiler's own driver, Zaqar's by zaqar-otel.
    roots = [s for s in spans if s.parent_span_id is None]
    zaqar_roots = [s for s in roots if _service(s) != KEYSTONE_SERVICE]
    keystone_roots = [s for s in roots if _service(s) == KEYSTONE_SERVICE]
    assert [s.name for s in zaqar_roots] == [route], tree
    assert {s.name for s in keystone_roots} == CLI_KEYSTONE_CALLS, tree
    assert all(s.kind == "SERVER" for s in roots), tree
    for root in roots:
        assert_one_tree(_subtree(root, spans))  # times nest too
    assert sum(len(_subtree(r, spans)) for r in roots) == len(spans), tree

    # Zaqar's server span: the request as the CLI sent it, trusted headers.
    server = zaqar_roots[0]
    status = server.attributes.get("http.response.status_code",
                                   server.attributes.get("http.status_code"))
    assert isinstance(status, int) and 200 <= status < 300, tree
    assert server.attributes["zaqar_otel.trace_origin"] == "osprofiler", tree

    # keystonemiddleware's calls: CLIENT spans (the requests instrumentor)
    # under Zaqar's server span, each with Keystone's span for it below,
    # Keystone's by the headers zaqar-otel injected. The token the CLI got
    # is validated on every command (a new token per CLI run).
    calls = [s for s in spans if s.scope == REQUESTS_SCOPE]
    assert calls, "no keystonemiddleware call traced\n" + tree
    for call in calls:
        assert call.kind == "CLIENT"
        assert call.parent_span_id == server.span_id, tree
        below = [s for s in spans if s.parent_span_id == call.span_id]
        assert [_service(s) for s in below] == [KEYSTONE_SERVICE], tree
        assert below[0].kind == "SERVER"
        method = (call.attributes.get("http.request.method")
                  or call.attributes.get("http.method") or call.name)
        assert below[0].name.split("_", 2)[1] == method, tree
    validated = [s for s in spans if s.name == "WSGI_GET_/v3/auth/tokens"]
    assert validated and all(by_id[s.parent_span_id] in calls for s in validated), tree
    # Every Keystone span that is not the CLI's own hangs under such a call.
    for s in spans:
        if _service(s) == KEYSTONE_SERVICE and s.parent_span_id is not None:
            assert by_id[s.parent_span_id] in calls, tree

    if "post" in args:
        assert any(s.kind == "PRODUCER" for s in spans), tree
    if "claim" in args:
        assert MARKER in result.stdout  # the posted message was claimed


def test_nothing_secret_exported(stack: Stack) -> None:
    """No token, password or message body in anything sent to the receiver
    (Keystone's export included), after the commands above."""
    raw = b"".join(stack.receiver.raw)
    assert raw, "nothing exported"
    assert b"gAAAAA" not in raw  # fernet tokens
    for creds in (stack.service_user, stack.user, stack.keystone.admin):
        assert creds.password.encode() not in raw
    assert MARKER.encode() not in raw


def test_unprofiled_command_traces_nothing(stack: Stack) -> None:
    """Without --os-profile nothing is traced, by Zaqar or by Keystone."""
    before = {s.span_id for s in stack.receiver.spans()}
    plain = stack.cli(["messaging", "queue", "create", QUEUE + "-plain"],
                      profile=False)
    assert plain.returncode == 0, plain.stderr
    assert "Trace ID" not in plain.stderr
    # A profiled command after it: once its spans are in, the unprofiled
    # command's would be too (each process exports spans in the order they end).
    profiled = stack.cli(["messaging", "queue", "delete", QUEUE + "-plain"])
    assert profiled.returncode == 0, profiled.stderr
    assert profiled.trace_id
    trace_id = uuid.UUID(profiled.trace_id).int
    stack.trace(trace_id, "DELETE /v2/queues/{queue_name}")
    new = [s for s in stack.receiver.spans() if s.span_id not in before]
    stray = [s for s in new if s.trace_id != trace_id]
    assert not stray, render_tree(stray, detail)
