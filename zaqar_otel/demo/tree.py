"""Received spans as indented trees, the way the demo and ``listen`` print them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zaqar_otel.demo.receiver import ReceivedSpan

__all__ = ["Detail", "by_trace", "printable", "render_tree", "span_detail"]

#: Characters of a name or detail printed at most.
PRINTED_MAX = 200
# C0 and C1 controls, DEL, line and paragraph separators, and the marks that
# reorder text on a terminal (bidirectional overrides and isolates).
_INERT = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
          for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029,
                    *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


def printable(text: object, limit: int = PRINTED_MAX) -> str:
    """``text`` safe for an operator's terminal: every control character
    (a terminal escape, a line break) shown as an escape, at most ``limit``
    characters. Span names and attributes come from clients."""
    shown = str(text)
    if len(shown) > limit:
        shown = shown[:limit] + f"...(+{len(shown) - limit} characters)"
    return shown.translate(_INERT)


def by_trace(spans: Iterable[ReceivedSpan]) -> dict[int, list[ReceivedSpan]]:
    """Group spans by trace id, keeping their order."""
    out: dict[int, list[ReceivedSpan]] = {}
    for s in spans:
        out.setdefault(s.trace_id, []).append(s)
    return out


Detail = Callable[["ReceivedSpan"], str]


def render_tree(spans: Iterable[ReceivedSpan], detail: Detail | None = None) -> str:
    """Indented ``name [kind] 1.23ms`` lines, children ordered by start time.

    ``detail`` adds text at the end of each span's line.
    """
    groups = by_trace(spans)
    lines: list[str] = []
    for trace_id, group in groups.items():
        if len(groups) > 1:
            lines.append(f"trace {trace_id:032x}")
        _render_trace(group, "  " if len(groups) > 1 else "", lines, detail)
    return "\n".join(lines)


def _render_trace(
    group: list[ReceivedSpan], indent: str, lines: list[str], detail: Detail | None
) -> None:
    ids = {s.span_id for s in group}
    children: dict[int | None, list[ReceivedSpan]] = {}
    for s in sorted(group, key=lambda s: s.start_ns):
        parent = s.parent_span_id if s.parent_span_id in ids else None
        children.setdefault(parent, []).append(s)
    seen: set[int] = set()

    def walk(s: ReceivedSpan, depth: int) -> None:
        seen.add(id(s))
        line = (f"{indent}{'  ' * depth}{printable(s.name)} [{s.kind}] "
                f"{s.duration_ms:.2f}ms")
        if detail is not None:
            line += printable(detail(s), 2 * PRINTED_MAX)
        if depth == 0 and s.parent_span_id is not None:
            line += f" (parent {s.parent_span_id:016x} not in list)"
        lines.append(line)
        lines.extend(_command_lines(s, f"{indent}{'  ' * (depth + 1)}", detail))
        for c in children.get(s.span_id, []):
            if id(c) not in seen:
                walk(c, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    # Spans in a parent cycle never hang off a root: show them, not hide them.
    for s in group:
        if id(s) not in seen:
            lines.append(f"{indent}(unreachable) {printable(s.name)} [{s.kind}]")
            seen.add(id(s))


#: An event's attribute that makes it a database command's
#: (``[profiler] redis_command_spans = false``): its duration in seconds.
COMMAND_DURATION = "db.client.operation.duration"


def _command_lines(span: ReceivedSpan, indent: str, detail: Detail | None) -> list[str]:
    """A line per command event of ``span``, as a child span's would read:
    ``HMSET EXPIRE [event] 0.34ms`` and, with a detail, its statement."""
    lines = []
    for name, attributes in span.events:
        try:
            duration = float(attributes[COMMAND_DURATION]) * 1e3
        except (KeyError, TypeError, ValueError):
            continue
        line = f"{indent}{printable(name)} [event] {duration:.2f}ms"
        if detail is not None:
            text = _statement(attributes)
            if "error.type" in attributes:
                text += f"  ERROR: {attributes['error.type']}"
            line += printable(text, 2 * PRINTED_MAX)
        lines.append(line)
    return lines


def _statement(attrs: dict[str, object]) -> str:
    statement = attrs.get("db.statement") or attrs.get("db.query.text")
    if not statement:
        return ""
    statement = " ".join(str(statement).split())
    return "  " + (statement if len(statement) <= 70 else statement[:67] + "...")


def span_detail(span: ReceivedSpan) -> str:
    """What ``osprofiler trace show`` adds to a line: the HTTP status, the
    database statement or the traced method, and an error status."""
    attrs = span.attributes
    status = attrs.get("http.response.status_code", attrs.get("http.status_code"))
    statement = _statement(attrs)
    text = ""
    if status is not None:
        text = f"  -> {status}"
    elif statement:
        text = statement
    elif attrs.get("code.function.name"):
        # Class.method of osprofiler's fully qualified name.
        text = "  " + ".".join(str(attrs["code.function.name"]).split(".")[-2:]) + "()"
    if span.status_code == "ERROR":
        text += "  ERROR" + (f": {span.status_message}" if span.status_message else "")
    return text
