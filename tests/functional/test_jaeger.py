"""``zaqar-otel demo`` into a real Jaeger v2: the trace where its users look.

Jaeger (``make jaeger``: the Go module, in-memory storage) on loopback; the
demo (``--otlp-endpoint``) exports to our own OTLP receiver teed to Jaeger's
(:class:`harness.receivers.TeeReceiver`: each export goes on to Jaeger as it
came, and our receiver keeps what Jaeger took), so one session is seen by
both. What Jaeger's query API answers, the JSON its UI renders
(``/api/traces``) and its OTLP API (``/api/v3``), is compared span by span
with what our receiver decoded: the same spans, name, kind, status,
attributes, events, links / references, parent, times and resource; each
one warning-free; the messaging link as a reference; the service, kinds,
status and the attributes the README documents.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.backends import Jaeger
from harness.receivers import TeeReceiver
from zaqar_otel.demo.processes import call
from zaqar_otel.demo.receiver import ReceivedSpan

pytestmark = [pytest.mark.functional, pytest.mark.backends]

DEMO = [str(Path(sys.executable).parent / "zaqar-otel"), "demo"]
# What Jaeger adds to a span's tags in /api/traces (from the span's kind,
# status and scope), beside the span's own attributes.
JAEGER_TAGS = {"span.kind", "otel.status_code", "otel.status_description",
               "error", "otel.scope.name", "otel.scope.version"}
KINDS = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
STATUS = ["UNSET", "OK", "ERROR"]


@dataclass
class Session:
    """The demo's output, the trace id it printed, and every span our
    receiver decoded of it (what Jaeger accepted), by trace id."""

    out: str
    hex_id: str
    decoded: dict[str, list[ReceivedSpan]]


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    with Jaeger() as server:
        yield server


@pytest.fixture(scope="module")
def session(jaeger: Jaeger) -> Session:
    with TeeReceiver(jaeger.otlp_http) as tee:
        proc = subprocess.run(
            [*DEMO, "--otlp-endpoint", tee.endpoint, "--jaeger-url", jaeger.url],
            cwd=Path.home(), capture_output=True, text=True, timeout=180,
            check=False)
        out = proc.stdout
        assert proc.returncode == 0, out + proc.stderr
        assert f"The collector at {tee.endpoint} accepted every span." in out
        # Jaeger took every export, rejected no span of any.
        assert (tee.failures, tee.rejected_spans) == ([], 0)
        assert tee.forwarded == tee.requests
        spans = tee.spans()
    hex_id = next(line.rsplit(" ", 1)[1] for line in out.splitlines()
                  if line.startswith("OTel / Jaeger trace id"))
    decoded = collections.defaultdict(list)
    for s in spans:
        decoded[s.trace_id_hex].append(s)
    return Session(out, hex_id, dict(decoded))


@pytest.fixture(scope="module")
def in_jaeger(jaeger: Jaeger, session: Session) -> dict[str, dict[str, Any]]:
    """Every trace of the session as Jaeger's ``/api/traces/{id}`` gives
    it, once it holds as many spans as our receiver decoded (Jaeger stores
    spans as its batches come in)."""
    return {trace_id: jaeger.wait_trace(trace_id, spans=len(spans))
            for trace_id, spans in session.decoded.items()}


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


# -- one span, three views, in one form ------------------------------------


def _typed(value: Any) -> tuple[str, Any]:
    """A value with its OTLP type: bool, int, double, string, or an array."""
    if isinstance(value, tuple | list):
        return ("array", [_typed(v) for v in value])
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("double", value)
    return ("string", value)


def _decoded(span: ReceivedSpan) -> dict[str, Any]:
    """A span as our receiver decoded it."""
    return {
        "name": span.name, "kind": span.kind,
        "status": (span.status_code, span.status_message),
        "attributes": {k: _typed(v) for k, v in span.attributes.items()},
        "parent": (f"{span.parent_span_id:016x}"
                   if span.parent_span_id is not None else None),
        "links": [(f"{t:032x}", f"{s:016x}", {k: _typed(v) for k, v in a.items()})
                  for t, s, a in span.links],
        "events": [(name, {k: _typed(v) for k, v in a.items()})
                   for name, a in span.events],
        "start_ns": span.start_ns, "end_ns": span.end_ns,
        "resource": {k: _typed(v) for k, v in span.resource.items()},
        "scope": (span.scope, span.scope_version),
    }


_OTLP_TYPES = {"boolValue": "bool", "intValue": "int", "doubleValue": "double",
               "stringValue": "string"}


def _otlp_json(value: dict[str, Any]) -> tuple[str, Any]:
    [(key, raw)] = value.items()
    if key == "arrayValue":
        return ("array", [_otlp_json(v) for v in raw.get("values", [])])
    return (_OTLP_TYPES[key], int(raw) if key == "intValue" else raw)


def _otlp_attrs(kvs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {kv["key"]: _otlp_json(kv["value"]) for kv in kvs or []}


def _from_v3(span: dict[str, Any]) -> dict[str, Any]:
    """A span of ``/api/v3/traces/{id}`` (OTLP JSON)."""
    status = span.get("status", {})
    return {
        "name": span["name"], "kind": KINDS[span.get("kind", 0)],
        "status": (STATUS[status.get("code", 0)], status.get("message", "")),
        "attributes": _otlp_attrs(span.get("attributes")),
        "parent": span.get("parentSpanId") or None,
        "links": [(lk["traceId"], lk["spanId"], _otlp_attrs(lk.get("attributes")))
                  for lk in span.get("links", [])],
        "events": [(e["name"], _otlp_attrs(e.get("attributes")))
                   for e in span.get("events", [])],
        "start_ns": int(span["startTimeUnixNano"]),
        "end_ns": int(span["endTimeUnixNano"]),
        "resource": {k: _otlp_json(v) for k, v in span["resource"].items()},
        "scope": (span["scope"].get("name", ""), span["scope"].get("version", "")),
    }


_JAEGER_TYPES = {"bool": "bool", "int64": "int", "float64": "double",
                 "string": "string"}


def _jaeger_tags(tags: list[dict[str, Any]]) -> dict[str, Any]:
    return {t["key"]: (_JAEGER_TYPES[t["type"]], t["value"]) for t in tags}


def _from_ui(span: dict[str, Any], processes: dict[str, Any]) -> dict[str, Any]:
    """A span of ``/api/traces/{id}`` (the Jaeger UI's JSON)."""
    tags = _jaeger_tags(span["tags"])
    process = processes[span["processID"]]
    refs = span["references"]
    return {
        "name": span["operationName"],
        "kind": tags.get("span.kind", ("string", "internal"))[1].upper(),
        "status": (tags.get("otel.status_code", ("string", "UNSET"))[1],
                   tags.get("otel.status_description", ("string", ""))[1]),
        "error": tags.get("error", ("bool", False))[1],
        "attributes": {k: v for k, v in tags.items() if k not in JAEGER_TAGS},
        "parent": next((r["spanID"] for r in refs if r["refType"] == "CHILD_OF"),
                       None),
        "links": [(r["traceID"], r["spanID"]) for r in refs
                  if r["refType"] == "FOLLOWS_FROM"],
        "events": [(_jaeger_tags(log["fields"]).pop("event")[1],
                    {k: v for k, v in _jaeger_tags(log["fields"]).items()
                     if k != "event"}) for log in span["logs"]],
        "start_us": span["startTime"], "duration_us": span["duration"],
        "resource": {"service.name": ("string", process["serviceName"]),
                     **_jaeger_tags(process["tags"])},
        "scope": (tags.get("otel.scope.name", ("string", ""))[1],
                  tags.get("otel.scope.version", ("string", ""))[1]),
    }


def _as_the_ui_shows(want: dict[str, Any]) -> dict[str, Any]:
    """What ``/api/traces`` shows of a span as decoded, by Jaeger's model:
    an array attribute as JSON text, a link as a FOLLOWS_FROM reference
    without its attributes, times in whole microseconds."""
    def shown(typed: tuple[str, Any]) -> tuple[str, Any]:
        kind, value = typed
        if kind != "array":
            return typed
        return ("string", json.dumps([v for _, v in value], separators=(",", ":")))

    return {
        **{k: want[k] for k in ("name", "kind", "status", "parent", "scope")},
        "error": want["status"][0] == "ERROR",
        "attributes": {k: shown(v) for k, v in want["attributes"].items()},
        "links": [(t, s) for t, s, _ in want["links"]],
        "events": [(n, {k: shown(v) for k, v in a.items()})
                   for n, a in want["events"]],
        "start_us": want["start_ns"] // 1000,
        "duration_us": (want["end_ns"] - want["start_ns"]) // 1000,
        "resource": {k: shown(v) for k, v in want["resource"].items()},
    }


# -- the tests --------------------------------------------------------------


def test_every_span_our_receiver_decoded_is_in_jaeger(
        jaeger: Jaeger, session: Session,
        in_jaeger: dict[str, dict[str, Any]]) -> None:
    # The printed trace and the message's life (its post, its claim, the
    # webhook delivery): each trace with the same span ids, in both APIs.
    assert session.hex_id in session.decoded and len(session.decoded) == 4
    for trace_id, spans in session.decoded.items():
        trace = in_jaeger[trace_id]
        assert trace["traceID"] == trace_id
        ids = sorted(s.span_id_hex for s in spans)
        assert sorted(s["spanID"] for s in trace["spans"]) == ids
        v3 = jaeger.trace_v3(trace_id)
        assert sorted(s["spanId"] for s in v3) == ids
        assert {s["traceId"] for s in v3} == {trace_id}
    print(f"\n{sum(map(len, session.decoded.values()))} spans in "
          f"{len(session.decoded)} traces, "
          f"{len(session.decoded[session.hex_id])} in the printed one")


def test_jaeger_shows_what_our_receiver_decoded_span_by_span(
        jaeger: Jaeger, session: Session,
        in_jaeger: dict[str, dict[str, Any]]) -> None:
    """Every field of every span. ``/api/v3`` (OTLP) holds exactly what was
    decoded; ``/api/traces`` (what the UI renders) differs only as Jaeger's
    model says (collector/README.md: "What Jaeger shows")."""
    arrays = links_with_attributes = 0
    for trace_id, spans in session.decoded.items():
        v3 = {s["spanId"]: _from_v3(s) for s in jaeger.trace_v3(trace_id)}
        trace = in_jaeger[trace_id]
        ui = {s["spanID"]: _from_ui(s, trace["processes"]) for s in trace["spans"]}
        for span in spans:
            want = _decoded(span)
            assert v3[span.span_id_hex] == want
            assert ui[span.span_id_hex] == _as_the_ui_shows(want)
            arrays += any(k == "array" for k, _ in want["attributes"].values())
            links_with_attributes += sum(bool(a) for _, _, a in want["links"])
    # The session has both of what the UI shows otherwise: zaqar.message.ids
    # (an array) and the links' zaqar.link / zaqar.same_trace.
    assert arrays and links_with_attributes
    print(f"\n{sum(map(len, session.decoded.values()))} spans compared: "
          f"{arrays} with an array attribute, {links_with_attributes} links "
          "with attributes")


def test_the_printed_link_opens_the_trace(jaeger: Jaeger, session: Session) -> None:
    link = f"{jaeger.url}/trace/{session.hex_id}"
    assert f"Jaeger: {link}" in session.out.splitlines()
    url = urllib.parse.urlsplit(link)
    status, _, page = call(jaeger.port, "GET", url.path,
                           headers={"Accept": "text/html"})
    # A module build serves a placeholder page for the UI's route (the UI's
    # assets are not in the Go module); the API behind it is the same.
    assert status == 200 and "<html" in str(page).lower(), (status, page)


def test_jaeger_shows_warning_free_trees(
        session: Session, in_jaeger: dict[str, dict[str, Any]]) -> None:
    for trace_id, trace in in_jaeger.items():
        spans = trace["spans"]
        # Jaeger's adjusters flag parents not in the trace, duplicate span
        # ids and clock skew per span, in `warnings`.
        assert [(s["operationName"], s["warnings"]) for s in spans
                if s.get("warnings")] == []
        assert not trace.get("warnings")
        ids = {s["spanID"] for s in spans}
        assert len(ids) == len(spans)
        parents = {s["spanID"]: [r["spanID"] for r in s["references"]
                                 if r["refType"] == "CHILD_OF"] for s in spans}
        assert all(p[0] in ids and len(p) == 1 for p in parents.values() if p)
        assert all(r["traceID"] == trace_id for s in spans for r in s["references"]
                   if r["refType"] == "CHILD_OF")
    # The session's trace: each request is a root (the CLI's root exports
    # no span), every other span's parent is in the trace.
    spans = in_jaeger[session.hex_id]["spans"]
    roots = [s["spanID"] for s in spans
             if not any(r["refType"] == "CHILD_OF" for r in s["references"])]
    servers = [s for s in spans if _tags(s)["span.kind"] == "server"]
    assert sorted(roots) == sorted(s["spanID"] for s in servers)


def test_the_claim_references_the_post_that_produced_its_messages(
        session: Session, in_jaeger: dict[str, dict[str, Any]]) -> None:
    spans = in_jaeger[session.hex_id]["spans"]

    def operation(name: str, operation: str) -> dict[str, Any]:
        return next(s for s in spans if s["operationName"] == name
                    and _tags(s).get("messaging.operation.name") == operation)

    send = operation("send demo-orders", "post")
    claim = operation("receive demo-orders", "claim")
    follows = [r for r in claim["references"] if r["refType"] == "FOLLOWS_FROM"]
    assert {(r["traceID"], r["spanID"]) for r in follows} == {
        (session.hex_id, send["spanID"])}
    # Across traces: the message's life, its claim in one trace, its post in
    # another, and the webhook delivery (a trace of its own) to the post.
    everything = [s for t in in_jaeger.values() for s in t["spans"]]
    life_send = next(s for s in everything if s["operationName"] == "send demo-life")
    for name in ("receive demo-life", "deliver demo-life"):
        span = next(s for s in everything if s["operationName"] == name)
        assert span["traceID"] != life_send["traceID"]
        assert [(r["refType"], r["traceID"], r["spanID"]) for r in span["references"]
                if r["refType"] == "FOLLOWS_FROM"] == [
            ("FOLLOWS_FROM", life_send["traceID"], life_send["spanID"])]


def test_service_kinds_status_and_documented_attributes(
        session: Session, in_jaeger: dict[str, dict[str, Any]]) -> None:
    trace = in_jaeger[session.hex_id]
    processes = trace["processes"]
    assert {p["serviceName"] for p in processes.values()} == {"zaqar"}
    # service.instance.id (README: each process exports under its own): one
    # Zaqar process ran the whole demo, so one id, in every trace.
    instances = {_tags({"tags": p["tags"]})["service.instance.id"]
                 for t in in_jaeger.values() for p in t["processes"].values()}
    assert len(instances) == 1
    assert uuid.UUID(next(iter(instances)))
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
    servers = [_tags(s) for s in trace["spans"] if _tags(s)["span.kind"] == "server"]
    assert {t["http.status_code"] for t in servers} <= {200, 201, 204}
    # openstack.request_id: Zaqar's request id, one per request.
    request_ids = [t["openstack.request_id"] for t in servers]
    assert all(re.fullmatch(r"req-[0-9a-f-]{36}", r) for r in request_ids)
    assert len(set(request_ids)) == len(servers) == 7
    post = _tags(by_name["POST /v2/queues/{queue_name}/messages"][0])
    assert post["http.method"] == "POST"
    assert post["http.route"] == "/v2/queues/{queue_name}/messages"
    assert post["http.status_code"] == 201
    assert post["zaqar_otel.trace_origin"] == "osprofiler"
    # docs/messaging.md: the operation spans' attributes.
    common = {"messaging.system": "zaqar",
              "messaging.destination.name": "demo-orders",
              "zaqar.project.id": "test-project"}

    def operation(name: str, operation: str) -> list[dict[str, Any]]:
        return [_tags(s) for s in by_name[name]
                if _tags(s)["messaging.operation.name"] == operation]

    [send] = operation("send demo-orders", "post")
    ids = json.loads(send["zaqar.message.ids"])  # an array, as JSON text
    assert send | common == send
    assert (send["messaging.operation.type"], send["messaging.batch.message_count"],
            len(ids)) == ("send", 2, 2)
    for op in ("list", "claim"):
        [receive] = operation("receive demo-orders", op)
        assert receive | common == receive
        assert receive["messaging.operation.type"] == "receive"
        assert receive["messaging.batch.message_count"] == 2
        assert sorted(json.loads(receive["zaqar.message.ids"])) == sorted(ids)
    settles = operation("settle demo-orders", "delete")
    assert all(t | common == t and t["messaging.operation.type"] == "settle"
               for t in settles)
    assert sorted(t["messaging.message.id"] for t in settles) == sorted(ids)
    everything = [s for t in in_jaeger.values() for s in t["spans"]]
    [deliver] = [_tags(s) for s in everything
                 if s["operationName"] == "deliver demo-life"]
    assert deliver["zaqar.subscriber"].startswith("http://127.0.0.1:")
    assert (deliver["messaging.operation.type"],
            deliver["messaging.operation.name"]) == ("send", "deliver")
