"""``zaqar-otel listen`` as an operator runs it: a process on a port, the SDK's
real OTLP exporters sending to it, the trees it prints."""

from __future__ import annotations

import dataclasses
import io
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from zaqar_otel.cmd import listen
from zaqar_otel.demo.processes import free_port
from zaqar_otel.demo.receiver import ReceivedSpan
from zaqar_otel.propagation import idmap

pytestmark = pytest.mark.functional

ZAQAR_OTEL = str(Path(sys.executable).parent / "zaqar-otel")
QUIET = 0.5


class Listener:
    """``zaqar-otel listen`` in a process, its output read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [ZAQAR_OTEL, "listen", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=Path.home())
        self.out: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        assert self.proc.stderr is not None
        self.banner = self.proc.stderr.readline()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.put(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err.extend(self.proc.stderr)

    def trace(self, timeout: float = 15.0) -> list[str]:
        """The next printed trace: its header line and tree lines."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.out.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no complete trace printed in {timeout}s: {lines}, "
                    f"stderr: {self.banner}{''.join(self.err)}") from None
            if not line:
                if lines:
                    return lines
                continue
            lines.append(line)

    def no_trace(self, wait: float) -> None:
        try:
            line = self.out.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"printed early: {line!r}")

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        time.sleep(0.1)  # the reader threads drain the pipes
        return code, self.banner + "".join(self.err)


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def listener(ports: tuple[int, int]) -> Iterator[Listener]:
    http, grpc = ports
    lst = Listener("--port", str(http), "--grpc-port", str(grpc),
                   "--quiet-after", str(QUIET))
    yield lst
    if lst.proc.poll() is None:
        lst.proc.kill()
        lst.proc.wait()


def _send(exporter: SpanExporter, service: str, pause: float = 0.0) -> int:
    """A small request's trace: SERVER > INTERNAL > CLIENT, and a sibling.

    Each span is exported as it ends (children first, as a real run does);
    ``pause`` seconds pass between the child and the root.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test_listen")
    with tracer.start_as_current_span("PUT /v2/queues/{queue_name}",
                                      kind=SpanKind.SERVER) as root:
        root.set_attribute("http.response.status_code", 201)
        with tracer.start_as_current_span("sqlalchemy_queue_controller"):
            with tracer.start_as_current_span(
                    "INSERT Queues", kind=SpanKind.CLIENT) as sql:
                sql.set_attribute("db.statement", "INSERT INTO Queues VALUES (?)")
        with tracer.start_as_current_span("ZADD", kind=SpanKind.CLIENT) as err:
            err.set_status(Status(StatusCode.ERROR, "connection reset"))
        time.sleep(pause)
        trace_id = root.get_span_context().trace_id
    provider.shutdown()
    return trace_id


def _tree(lines: list[str]) -> list[str]:
    """Tree lines without durations: ``name [KIND]`` with their indent."""
    return [line.split("]")[0] + "]" for line in lines]


def test_prints_each_trace_once_as_a_tree_over_http_and_grpc(
        listener: Listener, ports: tuple[int, int]) -> None:
    http, grpc = ports
    assert f"OTLP/HTTP on http://127.0.0.1:{http}/v1/traces" in listener.banner
    assert f"OTLP/gRPC on 127.0.0.1:{grpc}" in listener.banner

    trace_id = _send(HttpExporter(endpoint=f"http://127.0.0.1:{http}/v1/traces"),
                     "zaqar", pause=QUIET / 3)
    header, *tree = listener.trace()
    assert header.startswith(f"trace {trace_id:032x}  (OSProfiler "
                             f"{idmap.base_id_from_trace_id(trace_id)})  4 spans")
    assert header.endswith("[zaqar]")
    assert _tree(tree) == [
        "PUT /v2/queues/{queue_name} [SERVER]",
        "  sqlalchemy_queue_controller [INTERNAL]",
        "    INSERT Queues [CLIENT]",
        "  ZADD [CLIENT]",
    ]
    assert tree[0].endswith("-> 201")
    assert tree[2].endswith("INSERT INTO Queues VALUES (?)")
    assert tree[3].endswith("ERROR: connection reset")

    grpc_trace = _send(GrpcExporter(endpoint=f"127.0.0.1:{grpc}", insecure=True),
                       "zaqar-grpc")
    header, *tree = listener.trace()
    assert header.startswith(f"trace {grpc_trace:032x}") and "[zaqar-grpc]" in header
    assert len(tree) == 4 and tree[0].startswith("PUT /v2/queues/{queue_name} [SERVER]")

    listener.no_trace(3 * QUIET)  # each trace once
    code, err = listener.stop()
    assert code == 0, err
    assert "stopped: 2 traces, 8 spans received" in err and "Traceback" not in err


def test_ctrl_c_prints_the_traces_still_waiting(ports: tuple[int, int]) -> None:
    http, _ = ports
    lst = Listener("--port", str(http), "--quiet-after", "60")
    try:
        assert "OTLP/gRPC" not in lst.banner  # gRPC only when asked for
        trace_id = _send(HttpExporter(endpoint=f"http://127.0.0.1:{http}/v1/traces"),
                         "zaqar")
        lst.no_trace(1.0)  # not quiet for 60 s yet
        lst.proc.send_signal(signal.SIGINT)
        header, *tree = lst.trace()
        assert header.startswith(f"trace {trace_id:032x}") and len(tree) == 4
        assert lst.proc.wait(timeout=20) == 0
        time.sleep(0.1)  # the reader thread drains stderr
        assert "stopped: 1 trace, 4 spans received" in "".join(lst.err)
        assert "Traceback" not in "".join(lst.err)
    finally:
        if lst.proc.poll() is None:
            lst.proc.kill()
            lst.proc.wait()


def test_a_port_in_use_is_one_line_and_exit_1(ports: tuple[int, int]) -> None:
    http, _ = ports
    first = Listener("--port", str(http))
    try:
        done = subprocess.run([ZAQAR_OTEL, "listen", "--port", str(http)],
                              capture_output=True, text=True, timeout=30,
                              check=False)
    finally:
        first.stop(signal.SIGTERM)
    assert done.returncode == 1, done.stderr
    assert f"cannot listen for OTLP/http on 127.0.0.1:{http}" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# -- the parts, in-process ----------------------------------------------------


def _span(trace_id: int, span_id: int, parent: int | None = None) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent,
        name=f"span-{span_id}", kind="INTERNAL", start_ns=span_id, end_ns=span_id + 1,
        attributes={}, status_code="UNSET", status_message="", events=(), links=(),
        resource={"service.name": "svc"}, scope="test")


def test_a_trace_waits_until_quiet_and_the_buffer_is_bounded() -> None:
    now = [0.0]
    buffer = listen.TraceBuffer(2.0, max_pending=3, clock=lambda: now[0])
    buffer.add([_span(1, 1), _span(2, 2)])
    now[0] = 1.5
    buffer.add([_span(1, 3, parent=1)])  # trace 1 is not quiet yet
    now[0] = 2.0
    assert [tid for tid, _ in buffer.quiet()] == [2]
    assert buffer.quiet() == []
    buffer.add([_span(3, 4), _span(3, 5)])  # 2 + 1 pending: the last is dropped
    assert buffer.dropped == 1 and buffer.received == 5
    assert [(tid, len(spans)) for tid, spans in buffer.quiet(everything=True)] == [
        (1, 2), (3, 1)]


def test_late_spans_of_a_printed_trace_say_so() -> None:
    out = io.StringIO()
    printer = listen.TracePrinter(out)
    printer.print(7, [_span(7, 1), _span(7, 2, parent=1)])
    printer.print(7, [_span(7, 3, parent=1)])
    first, second = out.getvalue().strip().split("\n\n")
    assert first.splitlines()[0].endswith("2 spans  [svc]")
    assert first.splitlines()[1:] == ["span-1 [INTERNAL] 0.00ms",
                                      "  span-2 [INTERNAL] 0.00ms"]
    assert "1 more span, arrived after the trace was printed" in second
    # Its parent is in the part printed before: said, not hidden.
    assert second.splitlines()[1].endswith("(parent 0000000000000001 not in list)")
    assert printer.traces == 1


def test_the_buffer_keeps_what_is_printed_and_is_bounded_in_bytes() -> None:
    """Spans with 60 KB attributes (a client's User-Agent): the buffer keeps
    only what the tree prints, cut, and holds at most max_pending_bytes."""
    big = "x" * 60_000
    spans = [dataclasses.replace(
        _span(1, i), name=big, attributes={"user_agent.original": big,
                                           "db.statement": big})
        for i in range(1, 101)]
    buffer = listen.TraceBuffer(2.0, max_pending_bytes=20_000)
    buffer.add(spans)
    assert buffer.received == 100 and 0 < buffer.dropped < 100
    [(_, kept)] = buffer.quiet(everything=True)
    assert len(kept) == 100 - buffer.dropped
    assert kept[0].attributes == {"db.statement": "x" * 512}
    assert len(kept[0].name) == 512
    out = io.StringIO()
    listen.TracePrinter(out).print(1, kept)
    assert max(map(len, out.getvalue().splitlines())) < 1000
