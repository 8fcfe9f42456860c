"""Checks of what reached the OTLP receiver during run (b).

* every request that carried a signed header gives exactly one SERVER span
  in trace ``UUID(base_id).int`` (websocket requests Zaqar refuses before
  its API handler included, as a WSGI 4xx);
* that span's parent is the caller span (low 64 bits of ``parent_id``), or,
  for an OSProfiler root caller (``parent_id == base_id``), none: it is a
  root, as osprofiler's own driver makes it;
* every parent id resolves to a span of the same trace or to the caller;
  no span id is used twice;
* no message body or metadata value the tests sent is in the exported bytes.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

_LOW64 = (1 << 64) - 1


def _low64(value: str) -> int:
    return uuid.UUID(value).int & _LOW64


@dataclass
class SpanReport:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


def _example(records: list[dict[str, Any]], limit: int = 5) -> str:
    return "; ".join(f"{r['test']} ({r['via']} {r.get('action', '')}".rstrip() + ")"
                     for r in records[:limit])


def check(spans: list[Any], injected: list[dict[str, Any]], raw: list[bytes],
          secrets: list[str]) -> SpanReport:
    report = SpanReport()
    stats = report.stats
    traces: dict[int, list[Any]] = defaultdict(list)
    for s in spans:
        traces[s.trace_id].append(s)
    stats["spans"] = len(spans)
    stats["traces"] = len(traces)
    stats["requests signed"] = len(injected)

    ids = Counter((s.trace_id, s.span_id) for s in spans)
    dupes = [k for k, n in ids.items() if n > 1]
    if dupes:
        report.failures.append(f"{len(dupes)} span ids exported more than once, "
                               f"e.g. trace {dupes[0][0]:032x} span {dupes[0][1]:016x}")

    callers: dict[int, set[int]] = defaultdict(set)
    wrong_count: list[tuple[dict[str, Any], int]] = []
    wrong_parent: list[tuple[dict[str, Any], Any]] = []
    not_reached: list[dict[str, Any]] = []
    for record in injected:
        trace_id = uuid.UUID(record["base_id"]).int
        root = record["parent_id"] == record["base_id"]
        caller = _low64(record["parent_id"])
        callers[trace_id].add(caller)
        servers = [s for s in traces.get(trace_id, ()) if s.kind == "SERVER"]
        # Every signed request, websocket ones Zaqar refuses before its API
        # handler included (validation, authentication), as a WSGI 4xx.
        if record["via"] == "websocket" and not record.get("reached_handler"):
            not_reached.append(record)
        if len(servers) != 1:
            wrong_count.append((record, len(servers)))
            continue
        if not servers:
            continue
        parent = servers[0].parent_span_id
        if root and parent is None:
            stats["root callers: server span is a root"] += 1
        elif not root and parent == caller:
            stats["child callers: server span under the caller"] += 1
        else:
            wrong_parent.append((record, servers[0]))
    stats["websocket requests refused before the handler, with their span"] = (
        len(not_reached))
    if wrong_count:
        by_count = Counter(n for _, n in wrong_count)
        report.failures.append(
            f"{len(wrong_count)} signed requests without exactly one SERVER span "
            f"(found: {dict(by_count)}), e.g. {_example([r for r, _ in wrong_count])}")
    if wrong_parent:
        record, span = wrong_parent[0]
        report.failures.append(
            f"{len(wrong_parent)} SERVER spans with the wrong parent, e.g. "
            f"{record['test']}: parent {span.parent_span_id!r}, caller "
            f"{_low64(record['parent_id']):016x}")

    unresolved = []
    for trace_id, members in traces.items():
        known = {s.span_id for s in members} | callers.get(trace_id, set())
        for s in members:
            if s.parent_span_id is not None and s.parent_span_id not in known:
                unresolved.append(s)
    if unresolved:
        s = unresolved[0]
        report.failures.append(
            f"{len(unresolved)} spans whose parent is neither in their trace nor "
            f"the caller, e.g. {s.name!r} [{s.kind}] trace {s.trace_id_hex} "
            f"parent {s.parent_span_id:016x}")
    foreign = [t for t in traces if t not in callers]
    stats["traces not started by a signed request"] = len(foreign)
    if foreign:
        names = Counter(s.name for t in foreign for s in traces[t]
                        if s.parent_span_id is None)
        report.notes.append(f"traces not started by a signed request, by root span: "
                            f"{dict(names.most_common(8))}")

    blob = b"\x00".join(raw)
    stats["exported bytes"] = len(blob)
    stats["body strings searched"] = len(secrets)
    leaked = [s for s in secrets if s.encode("utf-8") in blob]
    if leaked:
        where = _where(spans, leaked)
        report.failures.append(
            f"{len(leaked)} strings from message bodies / metadata are in the "
            f"exported bytes, e.g. " + "; ".join(where[:8]))
    return report


def _where(spans: list[Any], leaked: list[str]) -> list[str]:
    found = []
    for secret in leaked:
        place = "(not in a decoded attribute)"
        for s in spans:
            for key, value in s.attributes.items():
                if secret in str(value) or secret in key:
                    place = f"span {s.name!r} attribute {key}"
                    break
            else:
                for name, attrs in s.events:
                    if secret in name or any(secret in str(v) for v in attrs.values()):
                        place = f"span {s.name!r} event {name!r}"
                        break
                else:
                    if secret in s.name or secret in s.status_message:
                        place = f"span {s.name!r} name/status"
                    else:
                        continue
            break
        found.append(f"{secret[:40]!r} in {place}")
    return found
