"""``zaqar-otel listen`` (``cmd/listen.py``, ``demo/receiver.py``) against a
hostile sender: a gzip bomb, a huge or negative Content-Length, span names
with terminal escapes, and deflate bodies over the limit. (Issue 24,
item 6.)
"""

from __future__ import annotations

import gzip
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.probe import rss_kib
from zaqar_otel.demo.processes import free_port
from zaqar_otel.demo.receiver import OTLPReceiver

pytestmark = pytest.mark.functional

ZAQAR_OTEL = str(Path(sys.executable).parent / "zaqar-otel")


class Listener:
    """``zaqar-otel listen`` on a free port; its output kept."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [ZAQAR_OTEL, "listen", "--port", str(self.port), "--quiet-after", "0.3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path.home())
        assert self.proc.stderr is not None
        self.banner = self.proc.stderr.readline()

    def post(self, body: bytes, headers: dict[str, str], send_body: bool = True,
             timeout: float = 20.0) -> int:
        """A raw POST to /v1/traces; the status code (0: no answer)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            s.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode()
                      + (body if send_body else b""))
            try:
                answer = s.recv(4096)
            except TimeoutError:
                return 0
        return int(answer.split()[1]) if answer else 0

    def stop(self) -> tuple[str, str]:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=20)
        return out.decode(errors="replace"), err.decode(errors="replace")


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


PROTOBUF = {"Content-Type": "application/x-protobuf"}


def test_listen_refuses_bombs_and_bad_lengths_with_bounded_memory(
    listener: Listener,
) -> None:
    """A 254 KiB gzip body inflating to 256 MiB, four at once; a
    Content-Length of 10^12 and of -1: 413 / 400 at once, no traceback,
    peak RSS bounded (before: 553-567 MB for one bomb, 1.37 GB for four)."""
    inflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = inflater.compress(bytes(256 << 20)) + inflater.flush()
    before = rss_kib(listener.proc.pid)
    answers: list[int] = []

    def send_bomb() -> None:
        answers.append(listener.post(bomb, {**PROTOBUF, "Content-Encoding": "gzip",
                                            "Content-Length": str(len(bomb))}))

    threads = [threading.Thread(target=send_bomb) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    huge = listener.post(b"", {**PROTOBUF, "Content-Length": str(10**12)},
                         send_body=False)
    negative = listener.post(b"", {**PROTOBUF, "Content-Length": "-1"},
                             send_body=False, timeout=5)
    after = rss_kib(listener.proc.pid)
    out, err = listener.stop()
    print(f"\nbomb {len(bomb)} bytes -> {answers}; 10^12 -> {huge!r}; -1 -> "
          f"{negative!r}; RSS KiB before {before}, after {after}")
    assert answers == [413] * 4
    assert (huge, negative) == (413, 400)
    assert "Traceback" not in err and "Error" not in err
    assert after["VmHWM"] - before["VmRSS"] < 100 * 1024  # KiB: under 100 MiB


def test_listen_prints_span_names_inert(listener: Listener) -> None:
    """Span names with terminal escapes and line breaks (a websocket
    client's action) print as escapes, on their own line."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    service = "svc\x1b]0;owned\x07"
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{listener.port}/v1/traces")))
    tracer = provider.get_tracer("t")
    hostile = "websocket \x1b[2J\x1b[31mred\nforged line\r\u202eevil"
    with tracer.start_as_current_span(hostile):
        pass
    provider.shutdown()
    time.sleep(1.0)
    out, _ = listener.stop()
    print(out)
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "\u202e" not in out
    assert not any(line.startswith("forged line") for line in out.splitlines())
    assert "\\x1b[2J" in out


def test_the_demo_receiver_inflates_deflate_within_the_limit() -> None:
    """The same receiver (the tests' and the demo's) takes a deflate body
    under its limit and refuses one over it, after inflating no more."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    with OTLPReceiver(max_request_bytes=1 << 20) as receiver:
        listener = Listener.__new__(Listener)
        listener.port = receiver.port
        empty = ExportTraceServiceRequest().SerializeToString()
        small = zlib.compress(empty)
        big = zlib.compress(b"\0" * (2 << 20))
        ok = listener.post(small, {**PROTOBUF, "Content-Encoding": "deflate",
                                   "Content-Length": str(len(small))})
        refused = listener.post(big, {**PROTOBUF, "Content-Encoding": "deflate",
                                      "Content-Length": str(len(big))})
        many = gzip.compress(empty) * 3
        members = listener.post(many, {**PROTOBUF, "Content-Encoding": "gzip",
                                       "Content-Length": str(len(many))})
    assert (ok, refused, members) == (200, 413, 200)
    assert receiver.refused == 1
