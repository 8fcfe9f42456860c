"""OTLP receivers beyond the demo's :class:`~zaqar_otel.demo.receiver.OTLPReceiver`.

- :class:`ReceiverProcess`: a receiver in a child process that keeps
  counts per service, not spans (what the benchmarks read: decoding in the
  measuring process would be charged to the servers measured);
- :class:`BackendReceiver`: a collector's or Jaeger's OTLP/HTTP receiver
  where code expects a receiver of ours (its ``port`` and ``endpoint``);
- :class:`TeeReceiver`: our receiver in front of a backend's OTLP/HTTP
  receiver: each trace export goes on to the backend as received, and is
  kept (decoded) only when the backend accepted it, so what the backend
  shows can be compared span by span with what our receiver decoded.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from harness.servers import REPO
from zaqar_otel.demo.receiver import OTLPReceiver

__all__ = ["BackendReceiver", "ReceiverProcess", "TeeReceiver", "counting_main"]


def counting_main() -> None:
    """Child process: an OTLP receiver that keeps counts, not spans.

    Prints its port, then answers each line on stdin with the JSON totals
    per service name; ends when stdin closes. Each export is answered as
    soon as its body is read, and decoded only when totals are asked for
    (after the rounds): decoding a batch in Python takes a core for tens of
    milliseconds, and on a machine of two cores that would be charged to
    the servers' latency (a collector elsewhere costs them nothing).
    """
    from zaqar_otel.demo import receiver as receiver_module
    from zaqar_otel.demo.receiver import OTLPReceiver
    from zaqar_otel.metrics import spans as span_metrics

    decode = receiver_module.decode_request
    receiver_module.decode_request = lambda body: []  # type: ignore[assignment]
    totals: dict[str, dict[str, Any]] = {}

    def drain(rx: OTLPReceiver) -> None:
        # Swap the list under the receiver's own lock: nothing is lost
        # between reading and clearing.
        with rx._cond:
            bodies, rx.raw = rx.raw, []
        for body in bodies:
            for s in decode(body):
                t = totals.setdefault(
                    str(s.resource.get("service.name")),
                    {"spans": 0, "server": 0, "error": 0, "errors_by_name": {}})
                t["spans"] += 1
                t["server"] += s.kind == "SERVER"
                if s.status_code == "ERROR" or s.attributes.get("error"):
                    t["error"] += 1
                    what = s.name + " " + s.status_message[:80]
                    t["errors_by_name"][what] = t["errors_by_name"].get(what, 0) + 1

    with OTLPReceiver() as rx:
        print(rx.port, flush=True)
        for _ in sys.stdin:
            drain(rx)
            # zaqar-otel's own count of the spans it dropped, when its
            # metrics are on (bench/saturation.py): the newest value per type.
            for p in rx.latest(span_metrics.DROPPED):
                t = totals.setdefault(
                    str(p.resource.get("service.name")),
                    {"spans": 0, "server": 0, "error": 0, "errors_by_name": {}})
                t.setdefault("dropped", {})[str(p.attributes.get("error.type"))] = (
                    int(p.value))
            print(json.dumps(totals), flush=True)


class ReceiverProcess:
    """``counting_main`` in a child process; ``stats()`` -> totals."""

    def __enter__(self) -> ReceiverProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "from harness.receivers import counting_main; counting_main()"],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        return self

    def stats(self) -> dict[str, dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class BackendReceiver:
    """A collector's or Jaeger's OTLP/HTTP receiver (``server.otlp_http``)
    where a receiver of ours is expected: the ``port`` and ``endpoint`` it
    reads, nothing to start or stop (whoever started the server owns it)."""

    def __init__(self, server: Any) -> None:
        self.endpoint: str = server.otlp_http
        port = urlsplit(self.endpoint).port
        assert port is not None, self.endpoint
        self.port: int = port

    def __enter__(self) -> BackendReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class TeeReceiver(OTLPReceiver):
    """An OTLP/HTTP receiver of ours that passes every trace export on to
    ``backend`` (an OTLP/HTTP base URL: Jaeger's or a collector's), as its
    body arrived (inflated), and answers what the backend answered: its
    spans are kept only when the backend took the request. ``forwarded``
    counts the requests the backend accepted, ``rejected_spans`` the spans
    it said it rejected (OTLP partial success). Metric exports are answered
    here and not passed on (Jaeger has no metrics pipeline)."""

    def __init__(self, backend: str) -> None:
        super().__init__("http")
        parts = urlsplit(backend)
        assert parts.hostname and parts.port, backend
        self.backend = (parts.hostname, parts.port)
        self.forwarded = 0
        self.rejected_spans = 0
        self.failures: list[str] = []

    def _handle_one(self, body: bytes, alive: Callable[[], bool],
                    expired: Callable[[], bool],
                    signal: Literal["traces", "metrics"]) -> bool | None:
        if signal == "traces" and not self._forward(body):
            return False
        return super()._handle_one(body, alive, expired, signal)

    def _forward(self, body: bytes) -> bool:
        # http.client: never through a proxy from the environment.
        conn = http.client.HTTPConnection(*self.backend, timeout=10)
        try:
            conn.request("POST", "/v1/traces", body=body,
                         headers={"Content-Type": "application/x-protobuf"})
            answer = conn.getresponse()
            raw = answer.read()
        except OSError as exc:
            with self._cond:
                self.failures.append(str(exc))
            return False
        finally:
            conn.close()
        if answer.status != 200:
            with self._cond:
                self.failures.append(f"{answer.status}: {raw[:200]!r}")
            return False
        reply = ExportTraceServiceResponse.FromString(raw)
        with self._cond:
            self.forwarded += 1
            self.rejected_spans += reply.partial_success.rejected_spans
        return True
