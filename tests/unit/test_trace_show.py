"""``zaqar-otel trace show`` without a Jaeger: Jaeger's JSON in, osprofiler's
views out. osprofiler's own code is the oracle: its CLI reads our report,
its DOT builder gives the graph ours gives. (tests/functional/
test_trace_show.py reads real traces from a real Jaeger.)"""

from __future__ import annotations

import json
import json.scanner
import re
import subprocess
import sys
import threading
import types
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from zaqar_otel.cmd import cli, trace, views
from zaqar_otel.cmd.jaeger_api import Trace, parse_trace
from zaqar_otel.cmd.report import osprofiler_report
from zaqar_otel.demo.processes import free_port
from zaqar_otel.propagation import idmap

TRACE = uuid.UUID("4a0b6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b").int
T0 = 1_764_000_000_000_000  # µs
HOSTILE = "evil\x1b[2J\u202egnp.exe\n\x07<script>alert(1)</script>"
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _span(span_id: int, parent: int | None, name: str, start: int, duration: int,
          process: str = "p1", tags: dict[str, Any] | None = None,
          logs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    refs = [] if parent is None else [
        {"refType": "CHILD_OF", "traceID": f"{TRACE:032x}", "spanID": f"{parent:016x}"}]
    return {
        "traceID": f"{TRACE:032x}", "spanID": f"{span_id:016x}",
        "operationName": name, "references": refs, "startTime": T0 + start,
        "duration": duration, "processID": process, "warnings": None,
        "tags": [{"key": k, "type": "string", "value": v}
                 for k, v in (tags or {}).items()],
        "logs": logs or []}


def _jaeger(spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"traceID": f"{TRACE:032x}", "spans": spans, "warnings": None,
            "processes": {
                "p1": {"serviceName": "zaqar",
                       "tags": [{"key": "host.name", "type": "string",
                                 "value": "node-1"}]},
                "p2": {"serviceName": "keystone-public", "tags": []}}}


def session() -> Trace:
    """A Zaqar request under a Keystone one, an error, an orphan."""
    return parse_trace(_jaeger([
        _span(1, None, "WSGI_GET_/v3/auth/tokens", 0, 9000, "p2",
              {"span.kind": "server"}),
        _span(2, 1, "POST /v2/queues/{queue_name}/messages", 1000, 5000, "p1",
              {"span.kind": "server", "http.response.status_code": "201"}),
        _span(3, 2, "send orders", 1500, 2000, "p1",
              {"span.kind": "producer", "otel.status_code": "ERROR",
               "otel.status_description": "boom"},
              [{"timestamp": T0 + 3000, "fields": [
                  {"key": "event", "type": "string", "value": "exception"},
                  {"key": "exception.type", "type": "string",
                   "value": "redis.exceptions.ConnectionError"},
                  {"key": "exception.message", "type": "string",
                   "value": "Connection refused"}]}]),
        _span(4, 3, HOSTILE, 1600, 100, "p1",
              {"db.system": "redis", "db.statement": "EVALSHA"}),
        _span(5, 0xDEAD, "orphan", 8000, 10, "p1"),
    ]))


def _uuid(span_id: int) -> str:
    return idmap.uuid_from_span_id(TRACE, span_id)


def _nodes(report: dict[str, Any]) -> list[dict[str, Any]]:
    out, stack = [], list(report["children"])
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node["children"])
    return out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import zaqar_otel

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"zaqar-otel {zaqar_otel.__version__}\n"


def test_the_report_is_osprofilers_with_the_ids_mapped() -> None:
    report = osprofiler_report(session())
    assert set(report) == {"info", "children", "stats"}
    assert report["info"]["name"] == "total" and report["info"]["started"] == 0
    assert report["info"]["finished"] == 9  # ms, from the first span's start
    base_id = idmap.base_id_from_trace_id(TRACE)
    # Roots: Keystone's span (parent: the base_id, as osprofiler writes a
    # root) and the orphan (its parent's uuid, not in the trace), by start.
    keystone, orphan = report["children"]
    assert keystone["trace_id"] == _uuid(1) and keystone["parent_id"] == base_id
    assert orphan["info"]["name"] == "orphan" and orphan["parent_id"] == _uuid(0xDEAD)
    zaqar = keystone["children"][0]
    assert zaqar["parent_id"] == _uuid(1) and zaqar["trace_id"] == _uuid(2)
    info = zaqar["info"]
    assert {"name", "project", "service", "host", "started", "finished",
            "exception"} <= set(info)
    assert (info["name"], info["service"], info["host"]) == (
        "POST /v2/queues/{queue_name}/messages", "zaqar", "node-1")
    assert (info["started"], info["finished"], info["exception"]) == (1, 6, "None")
    start = info["meta.raw_payload.wsgi-start"]
    assert start["name"] == "wsgi-start" and start["base_id"] == base_id
    assert start["info"]["tags"]["http.response.status_code"] == "201"
    send = zaqar["children"][0]["info"]
    assert send["exception"] == "redis.exceptions.ConnectionError"
    assert send["meta.raw_payload.producer-stop"]["info"]["message"] == (
        "Connection refused")
    assert report["stats"]["send orders"] == {"count": 1, "duration": 2}
    assert len(_nodes(report)) == 5


def test_osprofilers_own_cli_reads_the_json(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    path.write_text(trace.render(session(), "json"))
    osprofiler = Path(sys.executable).with_name("osprofiler")
    for view in ("--json", "--html"):
        done = subprocess.run(
            [str(osprofiler), "trace", "show", str(path), view,
             "--connection-string", "unused://"],
            capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        if view == "--json":
            assert json.loads(done.stdout) == json.loads(path.read_text())
        else:
            assert "POST /v2/queues/{queue_name}/messages" in done.stdout


def test_the_dot_graph_is_the_one_osprofiler_builds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """osprofiler's _create_dot_graph, given a stand-in for the graphviz
    package it needs (not a dependency), draws the same nodes and edges."""
    from osprofiler.cmd.commands import TraceCommands

    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    digraph = types.SimpleNamespace(
        node=lambda node_id, label: nodes.__setitem__(node_id, label),
        edge=lambda a, b: edges.append((a, b)))
    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(
        Digraph=lambda format: digraph))
    quiet = parse_trace(_jaeger([  # osprofiler's labels are not DOT-quoted
        _span(1, None, "GET /v2/queues", 0, 4000),
        _span(2, 1, "redis EVALSHA", 500, 1000),
        _span(3, 1, "settle q", 2000, 1500)]))
    report = osprofiler_report(quiet)
    TraceCommands()._create_dot_graph(report)
    dot = views.as_dot(report)
    ours = dict(re.findall(r'^\t(\d+) \[label="(.*)"\]$', dot, re.MULTILINE))
    assert ours == nodes
    assert sorted(re.findall(r"^\t(\d+) -> (\d+)$", dot, re.MULTILINE)) == sorted(edges)


def test_every_text_from_jaeger_is_stripped_of_control_characters() -> None:
    spans = session()
    assert all(not CONTROL.search(s.name) for s in spans.spans)
    for view in ("tree", "json", "html", "dot"):
        out = trace.render(spans, view)
        assert not CONTROL.search(out.replace("\n", "").replace("\t", "")), view
        assert "gnp.exe" in out, view
        if view == "html":
            assert "<script>alert" not in out
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_a_trace_deeper_than_pythons_recursion_renders_in_every_view() -> None:
    depth = 3000
    chain = parse_trace(_jaeger([
        _span(i, i - 1 if i > 1 else None, f"call {i}", i, 10 * (depth - i) + 10)
        for i in range(1, depth + 1)]))
    assert views.span_depth(chain) == depth
    tree = trace.render(chain, "tree")
    assert f"call {depth} [INTERNAL]" in tree
    text = trace.render(chain, "json")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10 * depth)  # for the decoder here
    try:
        # The pure-Python scanner: the C one's nesting limit is fixed on 3.12.
        decoder = json.JSONDecoder()
        decoder.scan_once = json.scanner.py_make_scanner(decoder)
        report = decoder.decode(text)
    finally:
        sys.setrecursionlimit(limit)
    node, levels = report, 0
    while node["children"]:
        node, levels = node["children"][0], levels + 1
    assert levels == depth and node["info"]["name"] == f"call {depth}"
    assert trace.render(chain, "dot").count(" -> ") == depth
    assert trace.render(chain, "html").count('<tr class="span') == depth + 1


def test_usage_and_an_unreachable_jaeger_exit_with_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    for argv, status in (
            (["trace", "show", "not-an-id", "--jaeger", closed], trace.EXIT_USAGE),
            (["trace", "show", f"{TRACE:032x}", "--jaeger", "ftp://x"],
             trace.EXIT_USAGE),
            (["trace", "show", f"{TRACE:032x}", "--jaeger", closed],
             trace.EXIT_UNREACHABLE),
            (["trace", "list", "--jaeger", closed], trace.EXIT_UNREACHABLE)):
        assert cli.main(argv) == status, argv
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err


class _NotJaeger(BaseHTTPRequestHandler):
    """A web server that is not Jaeger: 404 pages and HTML."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status = 404 if self.path.startswith("/api/traces/") else 200
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>\x1b[31mnot here</html>")

    def log_message(self, *args: object) -> None:
        pass


def test_an_address_that_is_not_jaeger_is_said_to_be_so(
        capsys: pytest.CaptureFixture[str]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotJaeger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for argv in (["trace", "show", f"{TRACE:032x}", "--jaeger", url],
                     ["trace", "list", "--jaeger", url]):
            assert cli.main(argv) == trace.EXIT_ERROR, argv
            out, err = capsys.readouterr()
            assert out == "" and err.count("\n") == 1, err
            assert "Jaeger's UI / query address?" in err and "\x1b" not in err
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
