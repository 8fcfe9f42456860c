"""``zaqar-otel trace show`` and ``trace list``: osprofiler's views, from Jaeger.

::

    zaqar-otel trace show ID [--jaeger URL] [--json | --html | --dot | --tree]
                          [--out FILE] [--wait S] [--settle S] [--timeout S]
    zaqar-otel trace list [--jaeger URL] [--service S] [--limit N]
                          [--lookback HOURS] [--errors] [--json] [--timeout S]

What ``osprofiler trace show`` gave an operator after ``openstack
--os-profile KEY ...``, for the traces zaqar-otel puts in Jaeger: ``ID`` as
the client prints it (an OSProfiler uuid) or as Jaeger shows it (32 hex);
``--json`` is osprofiler's report (:mod:`zaqar_otel.cmd.report`), ``--html``
and ``--dot`` its views, ``--tree`` (the default) the demo's terminal tree
(:mod:`zaqar_otel.cmd.views`). ``trace list`` prints the newest traces.

A trace some of whose spans name a parent Jaeger does not have is
*still arriving* while its newest span ended less than ``--settle`` seconds
ago (exporters send in batches, a tail-sampling collector holds a trace for
its decision wait), and *truncated* after that: its orphans are shown at the
top level, as osprofiler shows them. ``--wait`` keeps asking, while a trace
is not found or still arriving, for up to that many seconds.

Exit status (one line on stderr for each but 0):

=====  ===================================================================
0      shown
1      Jaeger's answer could not be read, or ``--out`` not written
2      wrong usage (not a trace id)
3      Jaeger does not answer (down, wrong address, timed out)
4      trace not found
5      trace still arriving (nothing shown; run again, or ``--wait``)
6      trace truncated (shown, its orphans at the top level)
=====  ===================================================================
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import datetime, timezone

from zaqar_otel.cmd import arguments, views
from zaqar_otel.cmd.jaeger_api import (
    JaegerClient,
    JaegerError,
    JaegerUnreachable,
    Summary,
    Trace,
    TraceNotFound,
    printable,
)
from zaqar_otel.propagation import idmap

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_UNREACHABLE, EXIT_NOT_FOUND, EXIT_ARRIVING, EXIT_TRUNCATED = 3, 4, 5, 6
DEFAULT_JAEGER = "http://localhost:16686"
DEFAULT_TIMEOUT = 10.0
DEFAULT_SETTLE = 30.0
# Traces nested deeper than this are rendered on a thread of their own.
SHALLOW = 100
# --json is indented as osprofiler's up to this depth, one line beyond.
INDENT_DEPTH = 64

_seconds = arguments.seconds_up_to(600)


def _wait_seconds(text: str) -> float:
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass
    return _seconds(text)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"not between 1 and 1000: {text!r}")
    return value


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 24 * 366:
        raise argparse.ArgumentTypeError(f"not between 0 and a year: {text!r}")
    return value


def _jaeger(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jaeger", "--jaeger-url", dest="jaeger", default=DEFAULT_JAEGER,
        metavar="URL",
        help=f"Jaeger's UI / query address (default {DEFAULT_JAEGER})")
    parser.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help=f"how long to wait for each answer of Jaeger (default "
        f"{DEFAULT_TIMEOUT:g})")


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``zaqar-otel trace show``."""
    parser.add_argument(
        "id", metavar="ID",
        help="the trace: OSProfiler base_id (the uuid `openstack --os-profile` "
        "prints) or 32-hex OTel trace id (Jaeger's)")
    _jaeger(parser)
    views = parser.add_mutually_exclusive_group()
    views.add_argument("--tree", dest="view", action="store_const", const="tree",
                       help="an indented tree for the terminal (the default)")
    views.add_argument("--json", dest="view", action="store_const", const="json",
                       help="osprofiler's report, as `osprofiler trace show "
                       "--json` prints it")
    views.add_argument("--html", dest="view", action="store_const", const="html",
                       help="osprofiler's HTML view, one self-contained page")
    views.add_argument("--dot", dest="view", action="store_const", const="dot",
                       help="osprofiler's graph, in the DOT language")
    parser.set_defaults(view="tree")
    parser.add_argument("--out", metavar="FILE",
                        help="write the view to FILE instead of printing it")
    parser.add_argument(
        "--wait", type=_wait_seconds, default=0.0, metavar="SECONDS",
        help="keep asking while the trace is not found or still arriving, up "
        "to SECONDS (default 0: ask once)")
    parser.add_argument(
        "--settle", type=_seconds, default=DEFAULT_SETTLE, metavar="SECONDS",
        help="a trace with spans whose parent is missing is still arriving "
        "while its newest span ended less than SECONDS ago, truncated after "
        f"(default {DEFAULT_SETTLE:g})")


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``zaqar-otel trace list``."""
    _jaeger(parser)
    parser.add_argument("--service", metavar="NAME",
                        help="only traces with a span of this service "
                        "(default: every service Jaeger knows)")
    parser.add_argument("--limit", type=_limit, default=20, metavar="N",
                        help="how many traces, newest first (default 20)")
    parser.add_argument("--lookback", type=_hours, default=24.0, metavar="HOURS",
                        help="how far back to look (default 24)")
    parser.add_argument("--errors", action="store_true",
                        help="only traces with a span in error, among the "
                        "newest 10 x N (osprofiler's --error-trace)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list (base_id and timestamp, as "
                        "osprofiler's list, and the rest)")


def _error(command: str, message: str) -> None:
    print(f"zaqar-otel trace {command}: {printable(message)}", file=sys.stderr)


def _client(command: str, args: argparse.Namespace) -> JaegerClient | None:
    try:
        return JaegerClient(args.jaeger, timeout=args.timeout)
    except ValueError as exc:
        _error(command, f"--jaeger: {exc}")
        return None


def _arriving(trace: Trace, settle: float) -> bool:
    return time.time() * 1e6 - trace.end_us < settle * 1e6


def _fetch(client: JaegerClient, trace_id: int,
           args: argparse.Namespace) -> Trace | int:
    """The trace, or the exit status after saying why not."""
    deadline = time.monotonic() + args.wait
    hex_id = f"{trace_id:032x}"
    while True:
        left = deadline - time.monotonic()
        try:
            trace = client.trace(trace_id)
        except TraceNotFound as exc:
            if left > 0:
                time.sleep(min(1.0, left))
                continue
            _error("show", f"{exc} (not arrived yet, not sampled, or expired "
                   "from Jaeger's storage; --wait SECONDS keeps asking)")
            return EXIT_NOT_FOUND
        except JaegerUnreachable as exc:
            _error("show", str(exc))
            return EXIT_UNREACHABLE
        except JaegerError as exc:
            _error("show", str(exc))
            return EXIT_ERROR
        missing = trace.missing_parents()
        if not missing or not _arriving(trace, args.settle):
            return trace
        if left > 0:
            time.sleep(min(1.0, left))
            continue
        ago = max(0.0, time.time() - trace.end_us / 1e6)
        _error("show", f"trace {hex_id} is still arriving: {len(trace.spans)} "
               f"spans so far, {len(missing)} parent(s) missing, the newest "
               f"ended {ago:.1f} s ago; run again in a few seconds "
               "(or with --wait SECONDS)")
        return EXIT_ARRIVING


def show(args: argparse.Namespace) -> int:
    """``zaqar-otel trace show``; its exit status."""
    from zaqar_otel.cmd.cli import parse_trace_id

    try:
        trace_id, _ = parse_trace_id(args.id)
    except ValueError as exc:
        _error("show", str(exc))
        return EXIT_USAGE
    client = _client("show", args)
    if client is None:
        return EXIT_USAGE
    fetched = _fetch(client, trace_id, args)
    if isinstance(fetched, int):
        return fetched
    trace = fetched
    missing = trace.missing_parents()
    note = ""
    if missing:
        orphans = sum(s.parent_span_id in missing for s in trace.spans)
        note = (f"trace {trace_id:032x} is truncated: {orphans} span(s) name a "
                f"parent Jaeger does not have (dropped, sampled out, expired, or "
                "a caller that exports no spans); shown at the top level")
    output = render(trace, args.view, note)
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as out:
                out.write(output)
        except OSError as exc:
            _error("show", f"cannot write {args.out}: {exc.strerror}")
            return EXIT_ERROR
    else:
        sys.stdout.write(output)
        sys.stdout.flush()
    if note:
        _error("show", note)
        return EXIT_TRUNCATED
    return EXIT_OK


def render(trace: Trace, view: str, note: str = "") -> str:
    """The text of one view of a trace (ending with a newline).

    A trace nested deeper than Python's recursion allows (osprofiler's
    report is a nested dict, the demo's tree a recursive walk) is rendered
    on a thread with a stack and a recursion limit to fit it.
    """
    depth = views.span_depth(trace)
    if depth <= SHALLOW:
        return _render(trace, view, note, depth)
    result: list[str] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(_render(trace, view, note, depth))
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    limit = sys.getrecursionlimit()
    size = threading.stack_size()
    try:
        sys.setrecursionlimit(max(limit, 20 * depth + 1000))
        threading.stack_size(min(64 * 1024 * 1024 + depth * 32 * 1024, 1 << 30))
        worker = threading.Thread(target=run, name="zaqar-otel-render")
        worker.start()
    finally:
        threading.stack_size(size)
    worker.join()
    sys.setrecursionlimit(limit)
    if failure:
        raise failure[0]
    return result[0]


def _render(trace: Trace, view: str, note: str, depth: int) -> str:
    if view == "tree":
        base_id = idmap.base_id_from_trace_id(trace.trace_id)
        services = sorted({s.service for s in trace.spans})
        return (f"{views.as_tree(trace)}\n\n{len(trace.spans)} spans from "
                f"{', '.join(services)}; OSProfiler trace id {base_id}, "
                f"OTel / Jaeger trace id {trace.trace_id:032x}\n")
    from zaqar_otel.cmd.report import osprofiler_report

    report = osprofiler_report(trace)
    if view == "json":
        # osprofiler's indent, unless the indentation would grow the output
        # with the square of the depth: then one line.
        return views.as_json(report, indent=2 if depth <= INDENT_DEPTH
                             else None) + "\n"
    if view == "html":
        return views.as_html(report, trace, note)
    return views.as_dot(report)


# -- list ----------------------------------------------------------------------


def _row(summary: Summary) -> dict[str, object]:
    started = datetime.fromtimestamp(summary.start_us / 1e6, tz=timezone.utc)
    return {"base_id": idmap.base_id_from_trace_id(summary.trace_id),
            "timestamp": started.strftime("%Y-%m-%dT%H:%M:%S.%f"),
            "trace_id": f"{summary.trace_id:032x}",
            "duration_ms": round(summary.duration_us / 1000, 3),
            "spans": summary.spans, "errors": summary.errors,
            "services": list(summary.services), "root": summary.root}


def list_traces(args: argparse.Namespace) -> int:
    """``zaqar-otel trace list``; its exit status."""
    client = _client("list", args)
    if client is None:
        return EXIT_USAGE
    try:
        summaries = client.recent(args.service, args.limit, args.lookback * 3600,
                                  errors=args.errors)
    except JaegerUnreachable as exc:
        _error("list", str(exc))
        return EXIT_UNREACHABLE
    except JaegerError as exc:
        _error("list", str(exc))
        return EXIT_ERROR
    rows = [_row(s) for s in summaries]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        which = f"of service {printable(args.service, 100)!r} " if args.service else ""
        print(f"no traces {which}in the last {args.lookback:g} h", file=sys.stderr)
        return EXIT_OK
    print(f"{'started (UTC)':26} {'OSProfiler base_id':36} {'OTel trace id':32} "
          f"{'spans':>5} {'errors':>6} {'ms':>9}  root")
    for row in rows:
        print(f"{row['timestamp']:26} {row['base_id']} {row['trace_id']} "
              f"{row['spans']:5} {row['errors']:6} {row['duration_ms']:9.1f}  "
              f"{row['root']}")
    return EXIT_OK
