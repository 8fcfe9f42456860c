"""The scale-out collector tier as real processes, and traffic through it.

Services → gateways (``config/otel-collector-gateway.yaml``: OTLP in →
memory_limiter → load_balancing by trace id) → samplers (the shipped
``config/otel-collector.yaml``: tail sampling) → Jaeger v2. Every process is
the project's otelcol-zaqar or Jaeger binary (``make backends``) on
127.0.0.1, free ports, temp dirs, stopped by pid (:mod:`harness.backends`).

The traffic: 2 ``zaqar-otel-server`` processes, each exporting to its own
gateway, and a client service (a Python OTel SDK service, as any
instrumented OpenStack caller) whose span of each request goes through the
*other* gateway; the request carries the client's context (a ``traceparent``,
or OSProfiler's signed headers as ``openstack --os-profile`` / an
osprofiler-enabled service sends them). So every trace holds spans sent
through both gateways, and only a tier that routes by trace id can keep it
whole. Kinds of request:

- ``requested``: signed with the shared HMAC key (the "requested" policy);
- ``unsigned``: a plain traceparent (the probabilistic "baseline" policy,
  whose choice per trace id this module reproduces: FNV-1a of the salt and
  the id, as the tail_sampling processor computes it);
- ``error``: the client's GET of a message that does not exist (404); the
  client marks its own span ERROR: the "errors" policy;
- ``slow``: the client works 1.2 s inside its span before calling Zaqar:
  the "slow" policy, again on the trace's extent across both gateways.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

from harness.backends import (
    COLLECTOR_CONFIG,
    Collector,
    Gateway,
    Jaeger,
    counter,
    distinct_ports,
    metric_values,
)
from harness.tracing import to_collector
from zaqar_otel.demo.processes import HOST, RedisServer
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

__all__ = [
    "CLIENT_SERVICE",
    "FAULTS",
    "KINDS",
    "SLOW_MS",
    "ClientService",
    "Counts",
    "FaultRun",
    "Sent",
    "Tier",
    "analyse",
    "baseline_keeps",
    "expected_kept",
    "is_whole",
    "latency",
    "plan",
    "run_fault",
    "run_traffic",
    "tier",
    "warm_up",
    "zaqar_pair",
]

KEY = "scale-out-key"
CLIENT_SERVICE = "scale-out-client"
KINDS = ("requested", "unsigned", "error", "slow")
# The shipped policies (config/otel-collector.yaml).
SLOW_MS = 1000
BASELINE_PERCENT = 10
SLOW_WORK = 1.2  # seconds the client works inside a "slow" span


# -- the tier -----------------------------------------------------------------

def sampler_address(sampler: Collector) -> str:
    return f"{HOST}:{sampler.grpc_port}"


@dataclasses.dataclass
class Counts:
    """The tier's own counters, summed over the instances of each tier."""

    gateway: dict[str, float]
    sampler: dict[str, float]
    per_sampler: list[dict[str, float]]
    per_gateway: list[dict[str, float]]
    policies: dict[tuple[str, str], float]  # (policy, sampled) -> traces

    def minus(self, before: Counts) -> Counts:
        def sub(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
            return {k: a[k] - b.get(k, 0) for k in a}
        return Counts(
            sub(self.gateway, before.gateway), sub(self.sampler, before.sampler),
            [sub(a, b) for a, b in zip(self.per_sampler, before.per_sampler,
                                       strict=True)],
            [sub(a, b) for a, b in zip(self.per_gateway, before.per_gateway,
                                       strict=True)],
            {k: v - before.policies.get(k, 0) for k, v in self.policies.items()})


_COUNTERS = {
    "accepted": "otelcol_receiver_accepted_spans",
    "refused": "otelcol_receiver_refused_spans",
    "sent": "otelcol_exporter_sent_spans",
    "send_failed": "otelcol_exporter_send_failed_spans",
    "enqueue_failed": "otelcol_exporter_enqueue_failed_spans",
    "new_traces": "otelcol_processor_tail_sampling_new_trace_id_received",
    "decided": "otelcol_processor_tail_sampling_global_count_traces_sampled",
    "late_spans": "otelcol_processor_tail_sampling_sampling_late_span_age_count",
    "memory_refused": "otelcol_processor_refused_spans",
    "limiter_refused": "otelcol_processor_memory_limiter_refused_spans",
    "dropped_too_early":
        "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early",
    # Gauges: their current value (summed over the instances).
    "traces_on_memory": "otelcol_processor_tail_sampling_sampling_traces_on_memory",
    "heap_bytes": "otelcol_process_runtime_heap_alloc_bytes",
    "rss_bytes": "otelcol_process_memory_rss",
    "cpu_seconds": "otelcol_process_cpu_seconds",
}


def read_counts(text: str) -> dict[str, float]:
    found = {key: counter(text, name) for key, name in _COUNTERS.items()}
    # The sampler's spans kept / dropped by its decisions.
    found["spans_kept"] = counter(
        text, "otelcol_processor_tail_sampling_count_spans_sampled", sampled="true")
    found["spans_dropped"] = counter(
        text, "otelcol_processor_tail_sampling_count_spans_sampled", sampled="false")
    return found


@dataclasses.dataclass
class Tier:
    jaeger: Jaeger
    samplers: list[Collector]
    gateways: list[Gateway]

    def counts(self) -> Counts:
        per_sampler = [read_counts(s.telemetry()) if s.running else {}
                       for s in self.samplers]
        per_gateway = [read_counts(g.telemetry()) if g.running else {}
                       for g in self.gateways]
        policies: dict[tuple[str, str], float] = {}
        for sampler in self.samplers:
            if not sampler.running:
                continue
            for labels, value in metric_values(
                    sampler.telemetry(),
                    "otelcol_processor_tail_sampling_count_traces_sampled"):
                key = (labels.get("policy", ""), labels.get("sampled", ""))
                policies[key] = policies.get(key, 0) + value

        def total(rows: list[dict[str, float]]) -> dict[str, float]:
            keys = {k for row in rows for k in row}
            return {k: sum(row.get(k, 0) for row in rows) for k in keys}
        return Counts(total(per_gateway), total(per_sampler), per_sampler,
                      per_gateway, policies)

    def wait_quiet(self, timeout: float = 60.0) -> Counts:
        """Once every trace a sampler received is decided, the queues are
        empty, and what the gateways accepted, the samplers accepted."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            g, s = counts.gateway, counts.sampler
            g_sent, g_accepted = g.get("sent", 0), g.get("accepted", 0)
            if (s["decided"] >= s["new_traces"] and g_sent >= g_accepted
                    and (not self.gateways or s["accepted"] >= g_sent)):
                # The batch processor's 2 s, and Jaeger's own batch.
                time.sleep(3)
                return self.counts()
            if time.monotonic() > deadline:
                raise AssertionError(f"the tier is still busy after {timeout}s: "
                                     f"gateways {g}, samplers {s}")
            time.sleep(0.5)


@contextlib.contextmanager
def tier(samplers: int = 2, gateways: int = 2,
         decision_wait: str | None = "3s",
         sampler_env: Mapping[str, str] | None = None) -> Iterator[Tier]:
    """Jaeger, ``samplers`` samplers exporting to it (``sampler_env``: more
    ``OTELCOL_*`` variables), ``gateways`` gateways routing to every
    sampler."""
    with contextlib.ExitStack() as stack:
        jaeger = Jaeger()
        sampler_list = [Collector(jaeger.otlp_grpc, decision_wait=decision_wait,
                                  config=COLLECTOR_CONFIG, env=sampler_env)
                        for _ in range(samplers)]
        gateway_list = [Gateway([]) for _ in range(gateways)]
        distinct_ports(jaeger, *sampler_list, *gateway_list)
        addresses = "[" + ", ".join(sampler_address(s) for s in sampler_list) + "]"
        for sampler in sampler_list:
            sampler.jaeger = jaeger.otlp_grpc
        for gateway in gateway_list:
            gateway.extra_env["OTELCOL_SAMPLERS"] = addresses
        for server in (jaeger, *sampler_list, *gateway_list):
            stack.enter_context(server)
        yield Tier(jaeger, sampler_list, gateway_list)


@contextlib.contextmanager
def zaqar_pair(redis: RedisServer, gateways: Sequence[Collector],
               processes: int = 2) -> Iterator[list[ZaqarServer]]:
    """``processes`` zaqar-otel-server processes, process i exporting (OTLP
    HTTP, every request traced: the tier samples) to gateway i % n."""
    with contextlib.ExitStack() as stack:
        servers = []
        for i in range(processes):
            gateway = gateways[i % len(gateways)]
            extra = to_collector(gateway.otlp_http, KEY, metrics="true",
                                 metrics_export_interval="500")
            servers.append(stack.enter_context(ZaqarServer(
                redis_sql(redis.url), extra=extra,
                command=("{bin}/zaqar-otel-server", "--config-file", "{config}"))))
        yield servers


_GUNICORN_CONF = """\
import os

# Each worker exports to one gateway, in turn (a TCP balancer in front of
# the gateways would pin each worker's connection to one of them): set
# before the worker imports the app, which sets up its exporter.
_GATEWAYS = os.environ["SCALE_OUT_WORKER_GATEWAYS"].split()


def post_fork(server, worker):
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = _GATEWAYS[
        (worker.age - 1) % len(_GATEWAYS)]
"""


def gunicorn_workers(workdir: Path, gateways: Sequence[Collector],
                     workers: int = 2) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a gunicorn running
    ``zaqar_otel.wsgi:application`` with ``workers`` workers, worker i
    exporting (OTLP/HTTP; zaqar.conf must name no endpoint) to gateway
    i % n."""
    conf = workdir / "gunicorn-scale-out.conf.py"
    conf.write_text(_GUNICORN_CONF)
    command = ["{bin}/gunicorn", "--bind", "127.0.0.1:{port}",
               "--workers", str(workers), "--threads", "4", "--timeout", "120",
               "--config", str(conf), "zaqar_otel.wsgi:application"]
    return command, {"SCALE_OUT_WORKER_GATEWAYS": " ".join(
        g.otlp_http for g in gateways)}


# -- the client service ----------------------------------------------------------

class _Ids:
    """An IdGenerator whose next ids a thread may choose (the ids of the
    OSProfiler span the signed headers name); random otherwise."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        self._random = RandomIdGenerator()
        self._local = threading.local()

    def choose(self, trace_id: int, span_id: int) -> None:
        self._local.ids = (trace_id, span_id)

    def generate_trace_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        return ids[0] if ids else self._random.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return getattr(self._local, "ids", None) is None

    def generate_span_id(self) -> int:
        ids = getattr(self._local, "ids", None)
        if ids:
            self._local.ids = None
            return int(ids[1])
        return self._random.generate_span_id()


class _Counting:
    """A SpanExporter counting what the collector took and what it did not."""

    def __init__(self, exporter: Any) -> None:
        self.exporter, self.ok, self.failed = exporter, 0, 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult
        result = self.exporter.export(spans)
        with self._lock:
            if result == SpanExportResult.SUCCESS:
                self.ok += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class ClientService:
    """The caller of Zaqar: one OTel SDK tracer provider per gateway
    (service.name ``scale-out-client``), each exporting OTLP/HTTP there."""

    def __init__(self, gateways: Sequence[Collector], key: str = KEY) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.ids = _Ids()
        self.key = key  # the HMAC key of the signed headers Zaqar trusts
        self.exporters: list[_Counting] = []
        self.providers = []
        for gateway in gateways:
            provider = TracerProvider(
                resource=Resource({"service.name": CLIENT_SERVICE}),
                id_generator=self.ids)  # type: ignore[arg-type]
            exporter = _Counting(OTLPSpanExporter(f"{gateway.otlp_http}/v1/traces"))
            provider.add_span_processor(BatchSpanProcessor(
                exporter, schedule_delay_millis=200, max_queue_size=100000))  # type: ignore[arg-type]
            self.exporters.append(exporter)
            self.providers.append(provider)

    def tracer(self, gateway: int) -> Any:
        return self.providers[gateway].get_tracer("scale-out-client")

    @property
    def exported(self) -> int:
        return sum(e.ok for e in self.exporters)

    @property
    def failed(self) -> int:
        return sum(e.failed for e in self.exporters)

    def shutdown(self) -> None:
        for provider in self.providers:
            provider.shutdown()


@dataclasses.dataclass
class Sent:
    """One request: its kind, trace id (hex), status, the client span's
    duration, and the Zaqar process / gateways it went through."""

    kind: str
    trace_id: str
    status: int
    seconds: float
    zaqar: int
    client_gateway: int
    at: float = 0.0  # time.monotonic() when the request started


def _signed_headers(ids: _Ids, key: str) -> tuple[dict[str, str], Callable[[], None]]:
    """OSProfiler's signed headers naming a client span whose ids the next
    OTel span takes: trace id = UUID(base_id).int, span id = low 64 bits of
    the OSProfiler span uuid (what osprofiler's OTLP driver exports)."""
    from osprofiler import _utils, profiler, web

    prof = profiler.init(key)
    prof.start("scale-out-client", info={})
    ids.choose(_utils.uuid_to_int128(prof.get_base_id()),
               _utils.shorten_id(prof.get_id()))
    headers = dict(web.get_trace_id_headers())

    def done() -> None:
        prof.stop()
        profiler.clean()
    return headers, done


def _one(client: ClientService, zaqars: Sequence[ZaqarServer], i: int,
         kind: str, queue: str, auth: Mapping[str, str] | None = None,
         calls: int = 1) -> Sent:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    z = i % len(zaqars)
    # The other gateway than Zaqar process z's; with one Zaqar server (its
    # workers split across the gateways), each gateway in turn.
    n = len(client.providers)
    g = (z + 1) % n if len(zaqars) > 1 else i % n
    done: Callable[[], None] = lambda: None  # noqa: E731
    headers: dict[str, str] = dict(auth or {})
    if kind == "requested":
        signed, done = _signed_headers(client.ids, client.key)
        headers.update(signed)
    started = time.monotonic()
    try:
        with client.tracer(g).start_as_current_span(
                f"client {kind}", kind=SpanKind.CLIENT,
                record_exception=False, set_status_on_exception=False) as span:
            ctx = span.get_span_context()
            if kind != "requested":
                headers["traceparent"] = (f"00-{ctx.trace_id:032x}-"
                                          f"{ctx.span_id:016x}-01")
            if kind == "slow":
                time.sleep(SLOW_WORK)
            statuses = []
            for _ in range(calls):
                if kind == "error":
                    status, _, _ = zaqars[z].request(
                        "GET", f"/v2/queues/{queue}/messages/{uuid.uuid4().hex[:24]}",
                        headers=headers)
                else:
                    status, _, _ = zaqars[z].request(
                        "POST", f"/v2/queues/{queue}/messages",
                        {"messages": [{"body": {"n": i}, "ttl": 300}]},
                        headers=headers)
                statuses.append(status)
            # The request's status; any other status of a later call wins.
            status = next((x for x in statuses if x != statuses[0]), statuses[0])
            if status >= 400:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            trace_id = trace.format_trace_id(ctx.trace_id)
    finally:
        done()
    return Sent(kind, trace_id, status, time.monotonic() - started, z, g, started)


def plan(traces: int, requested: float = 0.1, errors: float = 0.05,
         slow: int = 6, seed: int = 29) -> list[str]:
    """The kinds of ``traces`` requests, shuffled (a fixed seed)."""
    n_req, n_err = round(traces * requested), round(traces * errors)
    kinds = ["requested"] * n_req + ["error"] * n_err + ["slow"] * slow
    kinds += ["unsigned"] * (traces - len(kinds))
    random.Random(seed).shuffle(kinds)
    return kinds


QUEUE = "scale-out"


def warm_up(zaqars: Sequence[ZaqarServer], auth: Mapping[str, str] | None = None,
            rounds: int = 1) -> None:
    """The queue created, Redis' scripts loaded in every process: later
    requests of a kind all have the same spans. (Served by several workers,
    ``rounds`` more times.)"""
    for zaqar in zaqars:
        for _ in range(rounds):
            for n in range(2):
                status, _, _ = zaqar.request(
                    "POST", f"/v2/queues/{QUEUE}/messages",
                    {"messages": [{"body": {"warm": n}, "ttl": 300}]}, headers=auth)
                assert status == 201, status
            status, _, _ = zaqar.request(
                "GET", f"/v2/queues/{QUEUE}/messages/{uuid.uuid4().hex[:24]}",
                headers=auth)
            assert status == 404, status


def run_traffic(client: ClientService, zaqars: Sequence[ZaqarServer],
                kinds: Sequence[str], threads: int = 6,
                timeout: float = 600.0,
                during: Callable[[int], None] | None = None,
                auth: Mapping[str, str] | None = None,
                calls: int = 1) -> list[Sent]:
    """Every request of ``kinds`` (at most ``threads`` at a time); ``during(i)``
    is called by the submitting thread before request i. ``auth``: headers
    every call carries (a Keystone token); ``calls``: Zaqar calls in each
    client span (one trace)."""
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(threads) as pool:
        futures = []
        for i, kind in enumerate(kinds):
            if during is not None:
                during(i)
            futures.append(pool.submit(_one, client, zaqars, i, kind, QUEUE,
                                       auth, calls))
        results = [f.result(timeout=max(1.0, deadline - time.monotonic()))
                   for f in futures]
    return results


# -- what the policies decide ---------------------------------------------------

_FNV_OFFSET, _FNV_PRIME = 0xcbf29ce484222325, 0x100000001b3
_SALT = b"default-hash-seed"
_THRESHOLD = int((2 ** 64 - 1) * Fraction(BASELINE_PERCENT / 100))


def _fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def baseline_keeps(trace_id: str) -> bool:
    """The probabilistic policy's choice for ``trace_id`` (hex): FNV-1a 64 of
    its default salt and the id's 16 bytes, at most the threshold of
    ``sampling_percentage`` (tailsamplingprocessor v0.161.0,
    internal/sampling/probabilistic.go)."""
    return _fnv1a64(_SALT + bytes.fromhex(trace_id)) <= _THRESHOLD


# -- what Jaeger holds ------------------------------------------------------------

def jaeger_service(trace: Mapping[str, Any], span: Mapping[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"])


def is_whole(trace: Mapping[str, Any]) -> bool:
    """The client's span and Zaqar's under it, one tree, no warning."""
    spans = trace["spans"]
    services = [jaeger_service(trace, s) for s in spans]
    ids = {s["spanID"] for s in spans}
    roots = [s for s in spans if not any(
        r["refType"] == "CHILD_OF" and r["spanID"] in ids for r in s["references"])]
    return (services.count(CLIENT_SERVICE) == 1 and services.count("zaqar") >= 2
            and len(ids) == len(spans) and len(roots) == 1
            and jaeger_service(trace, roots[0]) == CLIENT_SERVICE
            and not any(s.get("warnings") for s in spans))


def expected_kept(s: Sent, band: tuple[float, float] = (0.8, 1.2)) -> bool | None:
    """What the shipped policies decide for this trace; None: either (a
    client span within ``band`` seconds of the latency threshold)."""
    if s.kind in ("requested", "error", "slow"):
        return True
    if baseline_keeps(s.trace_id):
        return True
    if band[0] * SLOW_MS / 1000 <= s.seconds <= band[1] * SLOW_MS / 1000:
        return None
    return s.seconds > SLOW_MS / 1000


def analyse(jaeger: Jaeger, sent: Sequence[Sent],
            key: Callable[[Sent], str] = lambda s: s.kind) -> dict[str, Any]:
    """Per kind (or ``key``): sent, kept whole, kept partial, absent;
    decisions that differ from the shipped policies'."""
    rows: dict[str, dict[str, int]] = {}
    wrong = []
    for s in sent:
        trace = jaeger.trace(s.trace_id)
        row = rows.setdefault(key(s), dict.fromkeys(
            ("sent", "whole", "partial", "absent"), 0))
        row["sent"] += 1
        if trace is None:
            row["absent"] += 1
        elif is_whole(trace):
            row["whole"] += 1
        else:
            row["partial"] += 1
        expected = expected_kept(s)
        if expected is not None and expected != (trace is not None):
            wrong.append(s.trace_id)
    return {"rows": rows, "wrong_decisions": len(wrong),
            "partial": sum(r["partial"] for r in rows.values())}


def latency(sent: Sequence[Sent], kinds: Sequence[str] = ("unsigned", "requested"),
            ) -> dict[str, float]:
    """The client's view of the requests (seconds): p50, p99, max."""
    values = sorted(s.seconds for s in sent if s.kind in kinds)
    if not values:
        return {}
    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 4)
    return {"n": len(values), "p50": pick(0.5), "p99": pick(0.99),
            "max": round(values[-1], 4)}


# -- faults -----------------------------------------------------------------------

# What run_fault breaks, and how it mends it:
# - sampler: sampler 1 SIGKILLed, restarted (same ports) ``down`` s later;
# - gateway: gateway 1 SIGKILLed, restarted ``down`` s later;
# - jaeger: Jaeger stopped (SIGTERM, its in-memory traces gone with it),
#   started again ``down`` s later;
# - jaeger-pause: Jaeger SIGSTOPped, SIGCONTed ``down`` s later (a hung
#   Jaeger: connections open, nothing answered).
FAULTS = ("sampler", "gateway", "jaeger", "jaeger-pause")


def _break(t: Tier, name: str) -> None:
    if name == "sampler":
        t.samplers[0].stop(grace=0)
    elif name == "gateway":
        t.gateways[0].stop(grace=0)
    elif name == "jaeger":
        t.jaeger.stop()
    else:
        assert t.jaeger.pid is not None
        os.kill(t.jaeger.pid, signal.SIGSTOP)


def _mend(t: Tier, name: str) -> None:
    if name == "sampler":
        t.samplers[0].start()
    elif name == "gateway":
        t.gateways[0].start()
    elif name == "jaeger":
        t.jaeger.start()
    else:
        assert t.jaeger.pid is not None
        os.kill(t.jaeger.pid, signal.SIGCONT)


@dataclasses.dataclass
class FaultRun:
    """Requests paced through a fault: what was sent, when the fault began
    (``fault_at``) and ended (``back_at``, the server up again), on
    time.monotonic()'s clock as ``Sent.at``."""

    fault: str
    down: float
    sent: list[Sent]
    fault_at: float
    back_at: float
    client_exported: int
    client_failed: int

    def phase(self, s: Sent) -> str:
        if s.at < self.fault_at:
            return "1 before"
        return "2 during" if s.at < self.back_at else "3 after"


def run_fault(t: Tier, zaqars: Sequence[ZaqarServer], name: str, down: float,
              rate: float, lead: float, tail: float, threads: int = 6,
              ) -> FaultRun:
    """``rate`` requests/s (the mix of :func:`plan`) for ``lead`` s, then
    the fault ``name`` (:data:`FAULTS`) for ``down`` s, then ``tail`` s
    more; the Zaqar processes keep running."""
    assert name in FAULTS, name
    client = ClientService(t.gateways)
    total = int(rate * (lead + down + tail))
    t0 = time.monotonic()
    marks = {"fault": t0 + lead, "back": t0 + lead + down}
    done: list[str] = []

    def during(i: int) -> None:
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic()
        if now >= marks["fault"] and "fault" not in done:
            done.append("fault")
            marks["fault"] = now
            _break(t, name)
            marks["back"] = now + down
        elif now >= marks["back"] and "back" not in done:
            done.append("back")
            _mend(t, name)
            marks["back"] = time.monotonic()

    try:
        sent = run_traffic(client, zaqars, plan(total, slow=max(6, total // 100)),
                           threads=threads, timeout=lead + down + tail + 300,
                           during=during)
    finally:
        client.shutdown()
    assert done == ["fault", "back"], done
    return FaultRun(name, down, sent, marks["fault"], marks["back"],
                    client.exported, client.failed)


def pipeline_empty(t: Tier) -> bool:
    """Every running sampler decided every trace it received and holds no
    span on the way to Jaeger: its batch processor passed on all it took,
    its exporter's queue is empty and no request is in flight (or being
    retried)."""
    for sampler in t.samplers:
        if not sampler.running:
            return False
        text = sampler.telemetry()
        own = read_counts(text)
        batch_in = counter(text, "otelcol_processor_incoming_items",
                           processor="batch", otel_signal="traces")
        batch_out = counter(text, "otelcol_processor_outgoing_items",
                            processor="batch", otel_signal="traces")
        if (own["decided"] < own["new_traces"] or batch_in != batch_out
                or own["sent"] + own["send_failed"] < batch_out
                or counter(text, "otelcol_exporter_queue_size") > 0
                or counter(text, "otelcol_exporter_in_flight_requests") > 0):
            return False
    return True


_DROPPED = re.compile(r"(\d+) spans were dropped meanwhile")


def zaqar_dropped(log: str) -> dict[str, int]:
    """zaqar-otel's own account of spans it could not export: its warnings,
    and the spans they report dropped."""
    return {"warnings": log.count("zaqar-otel: dropping spans"),
            "reported": sum(int(n) for n in _DROPPED.findall(log))}


def fault_rows(jaeger: Jaeger, run: FaultRun) -> dict[str, dict[str, Any]]:
    """Per phase: requests, traces the policies keep (*due*), of those whole,
    partial and lost (absent) in Jaeger, and kept ones not due; the
    statuses and the client's latency."""
    rows: dict[str, dict[str, Any]] = {}
    for s in run.sent:
        row = rows.setdefault(run.phase(s), dict.fromkeys(
            ("requests", "due", "whole", "partial", "lost", "extra"), 0))
        row["requests"] += 1
        trace = jaeger.trace(s.trace_id)
        due = expected_kept(s)
        if due:
            row["due"] += 1
            if trace is None:
                row["lost"] += 1
            elif is_whole(trace):
                row["whole"] += 1
            else:
                row["partial"] += 1
        elif trace is not None and due is False:
            row["extra"] += 1
    for phase, row in rows.items():
        mine = [s for s in run.sent if run.phase(s) == phase]
        row["latency"] = latency(mine)
        row["statuses"] = dict(collections.Counter(str(s.status) for s in mine))
    return rows
