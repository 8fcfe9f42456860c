"""The views of ``zaqar-otel trace show``: JSON, HTML, DOT and a terminal tree.

* :func:`as_json`: osprofiler's report (:mod:`zaqar_otel.cmd.report`) as
  ``osprofiler trace show --json`` prints it (same separators and indent).
* :func:`as_html`: the page ``osprofiler trace show --html`` gives (its
  columns: level, duration bar, name, project, service, host, details; the
  span filter; the details of a span with its metadata), self-contained.
  osprofiler's own template loads AngularJS, Bootstrap and four plugins from
  CDNs (or from ``/libs/`` with ``--local-libs``), so it shows an empty page
  without the internet; this page is the same report drawn into the HTML
  itself, with osprofiler's own style sheet (read from its template) and a
  few lines of plain JavaScript for folding, filtering and the details. It
  loads nothing, and without JavaScript it still shows every span.
  ``--json`` then ``osprofiler trace show --html FILE`` gives osprofiler's
  own page for those who have its libraries.
* :func:`as_dot`: the graph ``osprofiler trace show --dot`` writes (node
  labels ``service:name - N ms``, an edge from each parent), written here as
  DOT text: osprofiler builds it with the ``graphviz`` package, which is not
  a dependency of osprofiler or zaqar-otel, and walks the tree recursively.
* :func:`as_tree`: the demo's and ``zaqar-otel listen``'s terminal tree.

Every text in them comes cleaned by :mod:`zaqar_otel.cmd.jaeger_api`; the
HTML escapes it besides, and the JSON in the page cannot close its script.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from typing import Any

from zaqar_otel.cmd.jaeger_api import Trace
from zaqar_otel.propagation import idmap

__all__ = ["as_dot", "as_html", "as_json", "as_tree", "span_depth"]


def _serialize(obj: Any) -> Any:
    # osprofiler's datetime_json_serialize (its reports can hold datetimes).
    return obj.isoformat() if hasattr(obj, "isoformat") else obj


def as_json(report: dict[str, Any], indent: int | None = 2) -> str:
    """The report as ``osprofiler trace show --json`` prints it."""
    encoder = json.JSONEncoder(default=_serialize, indent=indent,
                               separators=(",", ": ") if indent else (",", ":"))
    # iterencode, not encode: the pure-Python encoder, whose nesting obeys
    # sys.setrecursionlimit (the caller raises it for deep traces); the C
    # encoder's is fixed on Python 3.12 (a 3,000-deep report fails there).
    return "".join(encoder.iterencode(report))


def span_depth(trace: Trace) -> int:
    """How deep the trace's tree is (1: only roots), without recursion."""
    ids = {s.span_id for s in trace.spans}
    children: dict[int | None, list[int]] = {}
    for s in trace.spans:
        parent = s.parent_span_id if s.parent_span_id in ids else None
        children.setdefault(parent, []).append(s.span_id)
    depth, level, seen = 0, children.get(None, []), set()
    while level:
        depth += 1
        seen.update(level)
        level = [c for p in level for c in children.get(p, []) if c not in seen]
    return depth


# -- HTML ---------------------------------------------------------------------

# What the page needs of Bootstrap's classes that osprofiler's template uses.
_EXTRA_STYLE = """
body { font-family: "Helvetica Neue", Helvetica, Arial, sans-serif;
       font-size: 13px; margin: 10px; color: #333; }
h4 { margin: 4px 0 10px; } .ids { color: #555; font-family: monospace; }
.warning { color: #8a6d3b; background: #fcf8e3; padding: 4px 8px; }
.bg-success { background-color: #dff0d8; } .text-right { text-align: right; }
.text-center { text-align: center; }
.trace { border-collapse: collapse; table-layout: fixed; }
.trace tr td { overflow: hidden; text-overflow: ellipsis; }
.trace tr td.level { width: 7%; } .trace tr td.bar { width: 22%; }
.trace tr td.name { width: 30%; } .trace tr td.details { width: 6%; }
.btn { font-size: 11px; padding: 1px 5px; border: 1px solid #ccc;
       border-radius: 3px; background: #fff; min-width: 34px; }
.filter { margin: 6px 0 10px; } .filter input { width: 40em; padding: 3px; }
.error td.name { color: #a94442; }
#modal { position: fixed; top: 5%; left: 10%; right: 10%; bottom: 5%;
         background: #fff; border: 1px solid #999; box-shadow: 0 5px 15px #888;
         padding: 10px 16px; overflow: auto; }
#modal pre { background: #f8f8f8; padding: 8px; white-space: pre-wrap; }
#modal dl { display: grid; grid-template-columns: 8em auto 8em auto; }
#modal dt { font-weight: bold; text-transform: capitalize; }
"""

_SCRIPT = """
(function () {
  'use strict';
  var table = document.getElementById('spans');
  var rows = table.querySelectorAll('tr.span');
  var parents = [], open = [], folded = {};
  for (var i = 0; i < rows.length; i++) {   // rows are in pre-order
    var level = +rows[i].dataset.l;
    open.length = level;
    parents.push(level ? open[level - 1] : -1);
    open.push(i);
  }
  var COLUMNS = ['name', 'project', 'service', 'host'];
  function text(row, column) {
    return row.querySelector('td.' + column).textContent;
  }
  function refresh(pattern) {
    var re = null, shown = [], i, j;
    try { re = pattern ? new RegExp(pattern) : null; } catch (e) { re = null; }
    for (i = 0; i < rows.length; i++) shown.push(!re);
    if (re) {
      for (i = 0; i < rows.length; i++) {
        if (COLUMNS.some(function (c) { return re.test(text(rows[i], c)); }))
          for (j = i; j >= 0 && !shown[j]; j = parents[j]) shown[j] = true;
      }
    }
    for (i = 0; i < rows.length; i++) {
      var hidden = !shown[i];
      for (var p = parents[i]; p >= 0 && !hidden; p = parents[p])
        hidden = !!folded[p];
      rows[i].style.display = hidden ? 'none' : '';
    }
  }
  var filter = document.getElementById('filterPattern');
  filter.addEventListener('input', function () { refresh(filter.value); });
  if (location.hash.indexOf('#filter=') === 0) {   // a link to a filtered view
    filter.value = decodeURIComponent(location.hash.slice(8));
    refresh(filter.value);
  }
  var nodes = null;                  // the report, parsed on the first details
  function node(i) {
    if (nodes === null) {
      nodes = [];
      var stack = [JSON.parse(
        document.getElementById('osprofiler-data').textContent)];
      while (stack.length) {
        var top = stack.pop();
        nodes.push(top);
        for (var c = top.children.length - 1; c >= 0; c--)
          stack.push(top.children[c]);
      }
    }
    return nodes[i];
  }
  var modal = document.getElementById('modal');
  function show(i) {
    var info = node(i).info, meta = {};
    Object.keys(info).forEach(function (key) {
      var parts = key.split('.');
      if (parts[0] !== 'meta') return;
      if (parts.length === 2) { meta[parts[1]] = info[key]; return; }
      meta[parts[1]] = meta[parts[1]] || {};
      meta[parts[1]][key.slice(parts[1].length + 6)] = info[key];
    });
    var dl = modal.querySelector('dl'); dl.textContent = '';
    ['name', 'started', 'project', 'finished', 'service', 'duration', 'host',
     'exception'].forEach(function (key) {
      var dt = document.createElement('dt'), dd = document.createElement('dd');
      dt.textContent = key;
      var v = key === 'duration' ? info.finished - info.started : info[key];
      dd.textContent = (v === undefined || v === null) ? 'n/a' : String(v);
      dl.appendChild(dt); dl.appendChild(dd);
    });
    modal.querySelector('pre').textContent = JSON.stringify(meta, null, 4);
    modal.hidden = false;
  }
  table.addEventListener('click', function (ev) {
    var row = ev.target.closest('tr.span');
    if (!row) return;
    var i = +row.dataset.i, button = ev.target.closest('button');
    if (button) {
      folded[i] = !folded[i];
      button.firstChild.textContent = folded[i] ? '+ ' : '\u2212 ';
      refresh(filter.value);
    } else {
      show(i);
    }
    ev.preventDefault();
  });
  document.getElementById('close').addEventListener('click', function () {
    modal.hidden = true;
  });
})();
"""

_STYLE_BLOCK = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def osprofiler_style() -> str:
    """The style sheet of osprofiler's ``trace show --html`` template."""
    try:
        template = resources.files("osprofiler.cmd").joinpath("template.html")
        match = _STYLE_BLOCK.search(template.read_text(encoding="utf-8"))
    except (OSError, ModuleNotFoundError):
        match = None
    return match.group(1) if match else ""


def _flatten(report: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """(node, level) in pre-order, without recursion (deep traces)."""
    out: list[tuple[dict[str, Any], int]] = []
    stack = [(report, 0)]
    while stack:
        node, level = stack.pop()
        out.append((node, level))
        stack.extend((child, level + 1) for child in reversed(node["children"]))
    return out


def as_html(report: dict[str, Any], trace: Trace, note: str = "") -> str:
    """The report as a self-contained page (osprofiler's columns and style)."""
    esc = html.escape
    full = report["info"].get("finished") or 0
    last = report["info"].get("last_trace_started")
    rows = []
    for i, (node, level) in enumerate(_flatten(report)):
        info = node["info"]
        started, finished = info.get("started") or 0, info.get("finished") or 0
        width = max((finished - started) * 100.0 / full, 0.5) if full else 100.0
        offset = started * 100.0 / full if full else 0.0
        name = str(info.get("name", ""))
        classes = ["span"]
        if level and started >= 0 and started == last:
            classes.append("bg-success")
        if info.get("exception") not in (None, "None"):
            classes.append("error")
        leaf = not node["children"]
        bold = " bold" if name in ("total", "wsgi", "rpc") or level == 0 else ""
        rows.append(
            f'<tr class="{" ".join(classes)}" data-i="{i}" data-l="{level}">'
            f'<td class="level" style="padding-left: {level * 5}px;">'
            f'<button type="button" class="btn"{" disabled" if leaf else ""}>'
            f'<span>{"&middot; " if leaf else "&minus; "}</span>{level}</button></td>'
            f'<td class="bar text-center"><div class="duration" style="width: '
            f'{width:.2f}%; margin-left: {offset:.2f}%;"><div>{finished - started} ms'
            f'</div></div></td><td class="name{bold} text-right" title="{esc(name)}">'
            f'{esc(name)}</td>'
            f'<td class="project">{esc(str(info.get("project") or "n/a"))}</td>'
            f'<td class="service">{esc(str(info.get("service") or "n/a"))}</td>'
            f'<td class="host">{esc(str(info.get("host") or "n/a"))}</td>'
            f'<td class="details"><a href="#">Details</a></td>'
            "</tr>")
    base_id = idmap.base_id_from_trace_id(trace.trace_id)
    data = as_json(report, indent=None).replace("<", "\\u003c")
    services = ", ".join(sorted({s.service for s in trace.spans}))
    warning = f'<p class="warning">{esc(note)}</p>' if note else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Trace {esc(base_id)}</title>
<style>{osprofiler_style()}{_EXTRA_STYLE}</style>
</head>
<body>
<h4>Trace <span class="ids">{esc(base_id)}</span> (OTel / Jaeger
<span class="ids">{trace.trace_id:032x}</span>): {len(trace.spans)} spans,
{full} ms; {esc(services)}</h4>
{warning}
<form class="filter" onsubmit="return false">
<label for="filterPattern">Span filtering:</label>
<input type="text" id="filterPattern"
 placeholder="Input your regular expression pattern here">
</form>
<table class="trace" id="spans">
<tr class="bold text-left" style="border-bottom: solid 1px gray;">
<td class="level">Levels</td><td class="bar">Duration</td>
<td class="name text-right">Type</td>
<td>Project</td><td>Service</td><td>Host</td><td class="details">Details</td></tr>
{chr(10).join(rows)}
</table>
<div id="modal" hidden>
<h3>Trace Point Details <button type="button" class="btn" id="close">Close</button></h3>
<dl></dl>
<strong>metadata</strong>
<pre></pre>
</div>
<script type="application/json" id="osprofiler-data">{data}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""


# -- DOT ----------------------------------------------------------------------


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def as_dot(report: dict[str, Any]) -> str:
    """osprofiler's ``--dot`` graph of the report, as DOT text."""
    lines = ["digraph {"]
    edges: list[tuple[int, dict[str, Any]]] = []
    ids: dict[int, int] = {}
    for number, (node, _) in enumerate(_flatten(report)):
        ids[id(node)] = number
        info = node["info"]
        service = f"{info['service']}:" if info.get("service") else ""
        took = (info.get("finished") or 0) - (info.get("started") or 0)
        label = _dot_quote(f"{service}{info['name']} - {took} ms")
        lines.append(f"\t{number} [label={label}]")
        edges.extend((number, child) for child in node["children"])
    lines.extend(f"\t{parent} -> {ids[id(child)]}" for parent, child in edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- the terminal tree --------------------------------------------------------


def as_tree(trace: Trace) -> str:
    """The demo's tree of the trace (``name [KIND] 1.23ms`` and a detail)."""
    from zaqar_otel.demo.receiver import ReceivedSpan
    from zaqar_otel.demo.tree import render_tree, span_detail

    spans = [ReceivedSpan(
        trace_id=s.trace_id, span_id=s.span_id, parent_span_id=s.parent_span_id,
        name=s.name, kind=s.kind, start_ns=s.start_us * 1000,
        end_ns=s.end_us * 1000, attributes=s.tags, status_code=s.status_code,
        status_message=s.status_message,
        # Jaeger keeps an event as a log, its name in the field "event".
        events=tuple((str(fields.get("event", "")), fields) for _, fields in s.logs),
        links=(),
        resource={"service.name": s.service, **s.process_tags}, scope="")
        for s in trace.spans]
    if len({s.service for s in trace.spans}) < 2:
        return render_tree(spans, span_detail)
    return render_tree(spans, lambda s: f"  @{s.resource['service.name']}"
                       + span_detail(s))
