"""``zaqar-otel demo`` into a real Jaeger v2: the trace where its users look.

Jaeger (``make jaeger``: the Go module, in-memory storage) on loopback; the
demo exports to its OTLP receiver. What Jaeger's query API answers, the JSON
its UI renders, is compared with what the demo's own receiver decoded for
the same session: the same spans, each one warning-free, the messaging link
as a reference, the service, kinds, status and documented attributes.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.backends import Jaeger
from zaqar_otel.demo.processes import call

pytestmark = [pytest.mark.functional, pytest.mark.backends]

DEMO = [str(Path(sys.executable).parent / "zaqar-otel"), "demo"]
KINDS = "SERVER|CLIENT|INTERNAL|PRODUCER|CONSUMER"
TREE_LINE = re.compile(rf"^\s*(.+?) \[({KINDS})\] [\d.]+ms")


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    with Jaeger() as server:
        yield server


def _demo(*args: str) -> str:
    proc = subprocess.run([*DEMO, *args], cwd=Path.home(), capture_output=True,
                          text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _trace_id(out: str) -> str:
    return next(line.rsplit(" ", 1)[1] for line in out.splitlines()
                if line.startswith("OTel / Jaeger trace id"))


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


@pytest.fixture(scope="module")
def decoded() -> collections.Counter[tuple[str, str]]:
    """The demo's session as its own OTLP receiver decoded it: (name, kind)
    of each span of the tree it prints, checked against its span count."""
    out = _demo()
    tree = out[:out.index(" spans in ")].strip().splitlines()
    spans = collections.Counter(
        (m.group(1), m.group(2)) for m in map(TREE_LINE.match, tree) if m)
    counted = int(out.split(" spans in ", 1)[0].rsplit("\n", 1)[1])
    assert sum(spans.values()) == counted, out
    return spans


@pytest.fixture(scope="module")
def demo_in_jaeger(jaeger: Jaeger) -> tuple[str, str, dict[str, Any]]:
    """The demo, exporting to Jaeger: its output, the trace id it printed
    and that trace as Jaeger's ``/api/traces/{id}`` gives it."""
    out = _demo("--otlp-endpoint", jaeger.otlp_http, "--jaeger-url", jaeger.url)
    assert f"The collector at {jaeger.otlp_http} accepted every span." in out
    hex_id = _trace_id(out)
    return out, hex_id, jaeger.wait_trace(hex_id, spans=10)


def test_the_printed_trace_is_in_jaeger_with_every_span_the_demo_counted(
        jaeger: Jaeger, demo_in_jaeger: tuple[str, str, dict[str, Any]],
        decoded: collections.Counter[tuple[str, str]]) -> None:
    _, hex_id, trace = demo_in_jaeger
    # Everything has arrived once the count is the demo's (Jaeger stores
    # spans as its batches come in).
    trace = jaeger.wait_trace(hex_id, spans=sum(decoded.values()))
    assert trace["traceID"] == hex_id
    shown = collections.Counter(
        (s["operationName"], _tags(s)["span.kind"].upper()) for s in trace["spans"])
    assert shown == decoded
    assert len({s["spanID"] for s in trace["spans"]}) == len(trace["spans"])
    # The OTLP API (v3) holds the same spans.
    v3 = jaeger.trace_v3(hex_id)
    assert sorted(s["spanId"] for s in v3) == sorted(
        s["spanID"] for s in trace["spans"])
    assert {s["traceId"] for s in v3} == {hex_id}


def test_the_printed_link_opens_the_trace(
        jaeger: Jaeger, demo_in_jaeger: tuple[str, str, dict[str, Any]]) -> None:
    out, hex_id, _ = demo_in_jaeger
    link = f"{jaeger.url}/trace/{hex_id}"
    assert f"Jaeger: {link}" in out.splitlines()
    url = urllib.parse.urlsplit(link)
    status, _, page = call(jaeger.port, "GET", url.path,
                           headers={"Accept": "text/html"})
    # A module build serves a placeholder page for the UI's route (the UI's
    # assets are not in the Go module); the API behind it is the same.
    assert status == 200 and "<html" in str(page).lower(), (status, page)


def test_jaeger_shows_one_warning_free_tree(
        demo_in_jaeger: tuple[str, str, dict[str, Any]]) -> None:
    _, hex_id, trace = demo_in_jaeger
    spans = trace["spans"]
    # Jaeger's adjusters flag parents not in the trace, duplicate span ids
    # and clock skew per span, in `warnings`.
    assert [(s["operationName"], s["warnings"]) for s in spans
            if s.get("warnings")] == []
    assert not trace.get("warnings")
    ids = {s["spanID"] for s in spans}
    parents = {s["spanID"]: [r["spanID"] for r in s["references"]
                             if r["refType"] == "CHILD_OF"] for s in spans}
    roots = [sid for sid, p in parents.items() if not p]
    # Each request of the session is a root of the one trace (the CLI's
    # root exports no span), every other span's parent is in the trace.
    assert all(p[0] in ids for p in parents.values() if p)
    assert all(r["traceID"] == hex_id for s in spans for r in s["references"]
               if r["refType"] == "CHILD_OF")
    servers = [s for s in spans if _tags(s)["span.kind"] == "server"]
    assert sorted(roots) == sorted(s["spanID"] for s in servers)


def test_the_claim_references_the_post_that_produced_its_messages(
        demo_in_jaeger: tuple[str, str, dict[str, Any]]) -> None:
    _, hex_id, trace = demo_in_jaeger
    spans = trace["spans"]

    def operation(name: str, operation: str) -> dict[str, Any]:
        return next(s for s in spans if s["operationName"] == name
                    and _tags(s).get("messaging.operation.name") == operation)

    send = operation("send demo-orders", "post")
    claim = operation("receive demo-orders", "claim")
    follows = [r for r in claim["references"] if r["refType"] == "FOLLOWS_FROM"]
    assert {(r["traceID"], r["spanID"]) for r in follows} == {(hex_id, send["spanID"])}


def test_service_kinds_status_and_documented_attributes(
        demo_in_jaeger: tuple[str, str, dict[str, Any]]) -> None:
    _, _, trace = demo_in_jaeger
    processes = trace["processes"]
    assert {p["serviceName"] for p in processes.values()} == {"zaqar"}
    by_name = collections.defaultdict(list)
    for s in trace["spans"]:
        by_name[s["operationName"]].append(s)
    kinds = {name: {_tags(s)["span.kind"] for s in group}
             for name, group in by_name.items()}
    assert kinds["PUT /v2/queues/{queue_name}"] == {"server"}
    assert kinds["send demo-orders"] == {"producer"}
    assert kinds["receive demo-orders"] == {"consumer"}
    assert kinds["settle demo-orders"] == {"client"}
    assert kinds["EVALSHA"] == {"client"}
    # Every request of the session succeeded. The only error spans are
    # redis-py's first EVALSHA of each Lua script on a fresh Redis
    # (NOSCRIPT, then it loads the script), as the instrumentation records
    # them: Jaeger shows the status and the description.
    errors = [_tags(s) for s in trace["spans"]
              if _tags(s).get("otel.status_code") == "ERROR"]
    assert errors and all(t["error"] is True for t in errors)
    assert {(t["db.statement"].split()[0], t["otel.status_description"])
            for t in errors} == {
        ("EVALSHA", "NoScriptError: No matching script. Please use EVAL.")}
    # The old HTTP names: no OTEL_SEMCONV_STABILITY_OPT_IN (test_semconv.py).
    assert {_tags(s)["http.status_code"] for s in trace["spans"]
            if _tags(s)["span.kind"] == "server"} <= {200, 201, 204}
    post = _tags(by_name["POST /v2/queues/{queue_name}/messages"][0])
    assert post["http.method"] == "POST"
    assert post["http.route"] == "/v2/queues/{queue_name}/messages"
    assert post["http.status_code"] == 201
    assert post["zaqar_otel.trace_origin"] == "osprofiler"
    send = _tags(by_name["send demo-orders"][0])
    assert send["messaging.system"] == "zaqar"
    assert send["messaging.destination.name"] == "demo-orders"
    assert send["messaging.operation.type"] == "send"
    assert send["messaging.operation.name"] == "post"
    assert send["messaging.batch.message_count"] == 2
    assert len(send["zaqar.message.ids"]) >= 2
