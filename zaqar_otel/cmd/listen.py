"""``zaqar-otel listen``: a local OTLP receiver that prints traces as trees.

For an operator without Jaeger: point Zaqar (``[opentelemetry] endpoint =
http://127.0.0.1:4318``) or any OTLP exporter at it, and each trace is
printed once, as the demo prints it (span, kind, duration, HTTP status or
database statement), when it is complete.

Complete means quiet: no span of the trace arrived for ``--quiet-after``
seconds (default 2). Exporters send a trace's spans in batches as they end
(every ``[opentelemetry] schedule_delay``, 5 s by default), so
a trace whose spans come further apart than that is printed in parts: the
later part says it is one. On Ctrl-C (or SIGTERM) the traces still waiting
are printed, then it exits 0.

It binds 127.0.0.1 unless ``--host`` says otherwise; OTLP/HTTP on ``--port``
(default 4318), OTLP/gRPC only with ``--grpc-port`` (4317 is the usual one).
What it received is not kept once printed. A request larger than 16 MiB, as
received or once inflated, is refused with 413 (gRPC: RESOURCE_EXHAUSTED)
without being read or inflated further; every printed string has its
control characters shown as escapes (span names come from clients).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

from zaqar_otel.cmd import arguments

if TYPE_CHECKING:
    from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318
DEFAULT_QUIET = 2.0
# Spans waiting for their trace to be quiet; beyond, new ones are dropped
# (and counted) rather than let a flood grow the process without bound.
MAX_PENDING = 100_000
# The same, in bytes of what is kept of them (an estimate): a span keeps
# only what is printed (``_kept``), each text cut to ``_KEPT_TEXT``.
MAX_PENDING_BYTES = 64 << 20
_KEPT_TEXT = 512
# What the printed tree reads of a span's attributes (demo.tree.span_detail).
_SHOWN = ("http.response.status_code", "http.status_code", "db.statement",
          "db.query.text", "code.function.name")
# What it reads of a database command's event (demo.tree._command_lines),
# and how many of a span's such events are kept.
_EVENT_SHOWN = ("db.client.operation.duration", "db.statement", "db.query.text",
                "error.type")
_KEPT_EVENTS = 100
# Trace ids already printed, so late spans are said to be late.
_PRINTED_MEMORY = 10_000


@dataclass
class _Trace:
    spans: list[ReceivedSpan] = field(default_factory=list)
    last: float = 0.0
    size: int = 0  # bytes, as estimated by _kept


class TraceBuffer:
    """Spans by trace until the trace is quiet; thread-safe.

    ``add`` is the receivers' ``on_spans``; ``quiet`` takes out the traces
    that had no new span for ``quiet_after`` seconds (all of them with
    ``everything``).
    """

    def __init__(self, quiet_after: float, max_pending: int = MAX_PENDING,
                 clock: Callable[[], float] = time.monotonic,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.quiet_after = quiet_after
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        self.dropped = 0
        self.received = 0
        self._clock = clock
        self._traces: dict[int, _Trace] = {}
        self._pending = 0
        self._lock = threading.Lock()

    def add(self, spans: list[ReceivedSpan]) -> None:
        now = self._clock()
        with self._lock:
            for span in spans:
                self.received += 1
                kept, size = _kept(span)
                if (self._pending >= self.max_pending
                        or self._pending_bytes + size > self.max_pending_bytes):
                    self.dropped += 1
                    continue
                trace = self._traces.setdefault(span.trace_id, _Trace())
                trace.spans.append(kept)
                trace.size += size
                trace.last = now
                self._pending += 1
                self._pending_bytes += size

    def quiet(self, everything: bool = False) -> list[tuple[int, list[ReceivedSpan]]]:
        """The traces done waiting, oldest first, taken out of the buffer."""
        now = self._clock()
        with self._lock:
            done = [(tid, t) for tid, t in self._traces.items()
                    if everything or now - t.last >= self.quiet_after]
            for tid, trace in done:
                del self._traces[tid]
                self._pending -= len(trace.spans)
                self._pending_bytes -= trace.size
        done.sort(key=lambda item: min(s.start_ns for s in item[1].spans))
        return [(tid, trace.spans) for tid, trace in done]


def _cut(value: object) -> object:
    if isinstance(value, str) and len(value) > _KEPT_TEXT:
        return value[:_KEPT_TEXT]
    return value


def _kept(span: ReceivedSpan) -> tuple[ReceivedSpan, int]:
    """What is printed of ``span`` (texts cut; other attributes, events but
    the first database commands', links and resource left out), and an
    estimate of its bytes."""
    attributes = {k: _cut(span.attributes[k]) for k in _SHOWN if k in span.attributes}
    events = tuple(
        (str(_cut(name)), {k: _cut(shown[k]) for k in _EVENT_SHOWN if k in shown})
        for name, shown in span.events if _EVENT_SHOWN[0] in shown)[:_KEPT_EVENTS]
    service = span.resource.get("service.name", "?")
    kept = dataclasses.replace(
        span, name=str(_cut(span.name)), attributes=attributes, events=events,
        links=(), status_message=str(_cut(span.status_message)),
        resource={"service.name": _cut(service)})
    size = 400 + len(kept.name) + len(kept.status_message) + sum(
        len(str(v)) for v in attributes.values()) + len(str(kept.resource)) + sum(
        100 + len(name) + len(str(shown)) for name, shown in events)
    return kept, size


class TracePrinter:
    """Prints a trace as a header line and its tree, each trace id once."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.traces = 0
        self._printed: dict[int, None] = {}  # insertion-ordered set

    def print(self, trace_id: int, spans: list[ReceivedSpan]) -> None:
        from zaqar_otel.demo.tree import printable, render_tree, span_detail
        from zaqar_otel.propagation import idmap

        # Every printed string made inert (render_tree does the names and
        # details): a client chooses span names, an exporter its service.
        services = sorted({printable(s.resource.get("service.name", "?"), 60)
                           for s in spans})

        def detail(span: ReceivedSpan) -> str:
            text = span_detail(span)
            if len(services) > 1:
                text += f"  ({span.resource.get('service.name', '?')})"
            return text

        late = trace_id in self._printed
        what = (f"{_count(len(spans), 'more span')}, arrived after the trace "
                "was printed" if late else _count(len(spans), "span"))
        header = (f"trace {trace_id:032x}  (OSProfiler "
                  f"{idmap.base_id_from_trace_id(trace_id)})  {what}  "
                  f"[{', '.join(services)}]")
        self.out.write(f"{header}\n{render_tree(spans, detail)}\n\n")
        self.out.flush()
        if not late:
            self.traces += 1
            self._printed[trace_id] = None
            if len(self._printed) > _PRINTED_MEMORY:
                del self._printed[next(iter(self._printed))]


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``zaqar-otel listen``."""
    parser.add_argument(
        "--host", default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}; anything else lets "
        "whoever reaches the port send spans)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, metavar="PORT",
        help=f"OTLP/HTTP port, spans at /v1/traces (default {DEFAULT_PORT}; "
        "0: a free one)")
    parser.add_argument(
        "--grpc-port", type=_port, default=None, metavar="PORT",
        help="also OTLP/gRPC on this port (4317 is the usual one; 0: a free "
        "one); default: no gRPC")
    parser.add_argument(
        "--quiet-after", type=_quiet, default=DEFAULT_QUIET, metavar="SECONDS",
        help="print a trace once no span of it arrived for this long "
        f"(default {DEFAULT_QUIET:g})")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return value


_quiet = arguments.seconds_up_to(3600)


def _say(message: str) -> None:
    print(f"-- {message}", file=sys.stderr, flush=True)


class _Stop(Exception):
    pass


def _stop(signum: int, frame: Any) -> None:
    raise _Stop


def main(args: argparse.Namespace) -> int:
    """Listen until Ctrl-C or SIGTERM; 0 then, 1 when a port cannot be bound."""
    from zaqar_otel.demo.receiver import OTLPReceiver

    buffer = TraceBuffer(args.quiet_after)
    printer = TracePrinter(sys.stdout)
    receivers: list[OTLPReceiver] = []
    wanted: list[tuple[Literal["http", "grpc"], int]] = [("http", args.port)]
    if args.grpc_port is not None:
        wanted.append(("grpc", args.grpc_port))
    # SIGINT too, explicitly: a shell starts background jobs with it ignored.
    previous = {sig: signal.signal(sig, _stop)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for protocol, port in wanted:
            receiver = OTLPReceiver(protocol, host=args.host, port=port,
                                    on_spans=buffer.add, keep=False)
            try:
                receivers.append(receiver.start())
            except (OSError, RuntimeError) as exc:
                print(f"zaqar-otel listen: error: cannot listen for OTLP/"
                      f"{protocol} on {args.host}:{port}: {exc}", file=sys.stderr)
                return 1
        where = ", ".join(
            f"OTLP/HTTP on {r.traces_url}" if r.protocol == "http"
            else f"OTLP/gRPC on {r.endpoint.removeprefix('http://')}"
            for r in receivers)
        _say(f"listening for {where}; a trace is printed once no span of it "
             f"arrived for {args.quiet_after:g}s; Ctrl-C to stop")
        try:
            while True:
                time.sleep(min(0.2, args.quiet_after / 4))
                for trace_id, spans in buffer.quiet():
                    printer.print(trace_id, spans)
        except _Stop:
            pass
        for receiver in receivers:
            receiver.stop()
        receivers.clear()
        for trace_id, spans in buffer.quiet(everything=True):
            printer.print(trace_id, spans)
        dropped = (f"; {buffer.dropped} dropped (more than {buffer.max_pending} "
                   "waiting)") if buffer.dropped else ""
        _say(f"stopped: {_count(printer.traces, 'trace')}, "
             f"{_count(buffer.received, 'span')} received{dropped}")
        return 0
    finally:
        for receiver in receivers:
            receiver.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
